#!/usr/bin/env bash
# Builds side by side on the lent GPU machine, in one call: each name in $VARIANTS is a build packed
# as .whl/devbin_<name>.tar.xz (here: bench/gpu/prepare.sh, then cp .whl/devbin.tar.xz
# .whl/devbin_<name>.tar.xz; checking out another commit between them). For each build, the CUDA op
# tests ($GTEST_FILTER, default all), then `samfast bench` in interleaved rounds (the builds one
# after the other, $ROUNDS times, $AB_MODELS at $AB_PRECISION, batch 8, 16 prompts), and with
# AB_TRACE=1 a kernel trace of each build on each of $AB_TRACE_MODELS (default vit_b), summarised
# (trace_summary.txt, with trace_gaps.py's account of a decode's idle time; AB_KEEP_TRACES=1 keeps
# the raw traces, which a call may not return). Machines
# differ between calls by a few percent: compare builds only within one call. Each test run and bench
# is stopped after $AB_TIMEOUT seconds (default 180), so that a build that hangs costs only that; a
# build whose tests fail or time out is left out of the benches. With AB_PARITY set to a pytest -k
# expression (e.g. bf16), each build that passed its tests then runs those GPU parity cases
# (tests/parity/test_gpu_parity.py, each stopped after $AB_PARITY_TIMEOUT s, default 300), before
# the benches. Logs under $OUT.
#   VARIANTS="base new" bash bench/gpu/ab.sh
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
variants="${VARIANTS:?name the builds: VARIANTS=\"base new\"}"
limit="${AB_TIMEOUT:-180}"  # seconds a test run or bench may take
for v in $variants; do
  [ -f ".whl/devbin_$v.tar.xz" ] || { echo "no .whl/devbin_$v.tar.xz"; exit 1; }
  mkdir -p "/tmp/ab/$v" && tar -xJf ".whl/devbin_$v.tar.xz" -C "/tmp/ab/$v"
done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
date -u +%Y-%m-%dT%H:%MZ | tee -a "$OUT/device.txt"
for v in $variants; do
  timeout "$limit" "/tmp/ab/$v/.devbin/tests/samfast_gpu_tests" ${GTEST_FILTER:+--gtest_filter="$GTEST_FILTER"} \
    > "$OUT/gpu_tests_$v.log" 2>&1
  rc=$?
  echo "$v: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/gpu_tests_$v.log" | tr '\n' ' ')$([ $rc = 124 ] && echo "timed out")"
  [ $rc = 0 ] && passed="${passed:-} $v"
done
variants="${passed:-}"
if [ -n "${AB_PARITY:-}" ]; then
  for v in $variants; do
    # (segment-anything-fast's own Triton attention off, as in run.sh: the PyTorch bf16 reference is
    # its eager encoder; that kernel also tunes itself on first use, minutes of a call)
    SAMFAST_BIN="/tmp/ab/$v/.devbin" SAMFAST_SOURCE_DIR="$PWD" PYTHONPATH="$PWD/.whl/pysrc" \
      SEGMENT_ANYTHING_FAST_USE_FLASH_4=0 SAMFAST_TESTDATA="$PWD/.whl/testdata" timeout "${AB_PARITY_TIMEOUT:-300}" python3 -m pytest -q -s tests/parity/test_gpu_parity.py \
      -k "$AB_PARITY" > "$OUT/parity_$v.log" 2>&1
    grep -E "IoU|passed|failed|Error" "$OUT/parity_$v.log" | sed "s/^/$v parity: /" | tail -12
  done
fi
summary() {  # the bench's JSON line, shortened
  python3 -c "
import json, sys
lines = sys.stdin.read().strip().splitlines()
if not lines:
    sys.exit('$1 $2 round $3: no result')
j = json.loads(lines[-1])
print('$1 $2 round $3: img/s %.1f, encoder %.1f, decode of 16 %.3f ms, ragged %.1f, predict %.2f ms, peak %.3f GiB' % (
    j['img_per_s'], j['encoder_img_per_s'], j['decode_prompts_ms'], j['img_per_s_ragged'],
    j['predict_prompts_to_host_ms'], j['peak_gib']))"
}
for r in $(seq "${ROUNDS:-2}"); do
  for m in ${AB_MODELS:-vit_b vit_h}; do
    for v in $variants; do
      timeout "$limit" "/tmp/ab/$v/.devbin/samfast" bench --model "$m" --device cuda \
        --precision "${AB_PRECISION:-bf16}" --batch 8 --prompts 16 --runs 5 2>/dev/null | summary "$v" "$m" "$r" | tee -a "$OUT/ab.txt"
    done
  done
done
if [ "${AB_TRACE:-0}" = 1 ]; then
  export LD_LIBRARY_PATH="/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/extras/CUPTI/lib64:${LD_LIBRARY_PATH:-}"
  for m in ${AB_TRACE_MODELS:-vit_b}; do
    for v in $variants; do
      t="$OUT/trace_$v.json"; [ "$m" = vit_b ] || t="$OUT/trace_${v}_$m.json"
      timeout "$limit" "/tmp/ab/$v/.devbin/samfast" bench --model "$m" --device cuda \
        --precision "${AB_PRECISION:-bf16}" --batch 8 --prompts 16 --runs 2 --trace "$t" >/dev/null 2>&1
      echo "== $v $m" >> "$OUT/trace_summary.txt"
      python3 bench/gpu/trace_summary.py "$t" --runs 2 --top 40 --split >> "$OUT/trace_summary.txt"
      python3 bench/gpu/trace_gaps.py "$t" >> "$OUT/trace_summary.txt" 2>&1  # a decode's idle time
      [ "${AB_KEEP_TRACES:-0}" = 1 ] || rm -f "$t"  # the device returns only a few files a call
    done
  done
fi
