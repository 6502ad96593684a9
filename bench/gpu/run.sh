#!/usr/bin/env bash
# Runs on the lent GPU machine, from the repository root, with .whl carried (bench/gpu/prepare.sh
# makes it; the binaries travel in .whl/devbin.tar.xz and are unpacked to .devbin here): the CUDA op tests, GPU parity against upstream on the same GPU,
# then samfast's benchmarks beside the anchors (../shared/bench/anchor_bench.py, copied to
# .whl/anchor_bench.py by prepare.sh) in one call. Everything is logged under $OUT.
#   bench/gpu/run.sh [tests] [generic] [smem] [sanitize] [parity] [bench] [decoder] [anchors] [compiled] [amg] [trace] [lin1] [gemm_bf16] [profile] [source]
#   (default: tests parity bench anchors; with bench and anchors (or compiled), ratios.py prints the multiples)
#   AMG_ANCHORS=0 leaves the segment-everything anchors out of the amg step. MODELS (default "vit_b vit_l
#   vit_h") chooses the models of the bench and anchors steps, PRECISIONS (default "bf16 fp8 fp16 fp32")
#   the bench's precisions.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD/.whl/pysrc:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 SEGMENT_ANYTHING_FAST_USE_FLASH_4=0
export SAMFAST_TESTDATA="$PWD/.whl/testdata"
steps="${*:-tests parity bench anchors}"
[ -x .devbin/samfast ] || tar -xJf .whl/devbin.tar.xz
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
date -u +%Y-%m-%dT%H:%MZ >> "$OUT/device.txt"

if [[ " $steps " == *" tests "* ]]; then
  # (to a file, then the summary: a pipe closed early by head would kill the tests with SIGPIPE)
  .devbin/tests/samfast_gpu_tests > "$OUT/gpu_tests.log" 2>&1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[  FAILED  \]|Failure" "$OUT/gpu_tests.log" | head -40
fi
if [[ " $steps " == *" generic "* ]]; then
  # The kernels of other GPUs (Ampere / Ada: mma.sync attention instead of wgmma) on this Hopper GPU:
  # the CUDA op tests and the bf16 / fp16 parity cases with SAMFAST_GENERIC_KERNELS=1.
  SAMFAST_GENERIC_KERNELS=1 .devbin/tests/samfast_gpu_tests > "$OUT/gpu_tests_generic.log" 2>&1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[  FAILED  \]|Failure" "$OUT/gpu_tests_generic.log" | sed 's/^/generic: /' | head -20
  SAMFAST_GENERIC_KERNELS=1 SAMFAST_BIN="$PWD/.devbin" SAMFAST_SOURCE_DIR="$PWD" python3 -m pytest -q -s \
    tests/parity/test_gpu_parity.py -k "bf16 or fp16" 2>&1 | tee "$OUT/gpu_parity_generic.log" \
    | grep -E "\]|passed|failed|Error" | sed 's/^/generic: /' | tail -12
fi
if [[ " $steps " == *" smem "* ]]; then
  # The kernel choices of GPUs with less shared memory a block than Hopper's 227 KB, on this GPU
  # (SAMFAST_MAX_SMEM_PER_BLOCK, with the generic kernels): an A100's 166912 bytes, Ampere and Ada
  # workstation GPUs' 101376. The CUDA op tests and the bf16 / fp16 parity cases at each.
  for limit in 166912 101376; do
    SAMFAST_GENERIC_KERNELS=1 SAMFAST_MAX_SMEM_PER_BLOCK=$limit .devbin/tests/samfast_gpu_tests \
      > "$OUT/gpu_tests_smem_$limit.log" 2>&1
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[  FAILED  \]|Failure" "$OUT/gpu_tests_smem_$limit.log" | sed "s/^/smem $limit: /" | head -20
    SAMFAST_GENERIC_KERNELS=1 SAMFAST_MAX_SMEM_PER_BLOCK=$limit SAMFAST_BIN="$PWD/.devbin" SAMFAST_SOURCE_DIR="$PWD" \
      python3 -m pytest -q -s tests/parity/test_gpu_parity.py -k "bf16 or fp16" 2>&1 | tee "$OUT/gpu_parity_smem_$limit.log" \
      | grep -E "\]|passed|failed|Error" | sed "s/^/smem $limit: /" | tail -12
  done
fi
if [[ " $steps " == *" sanitize "* ]]; then
  # One full forward (encoder, prompt encoder, decoder, post-processing) under memcheck, and the
  # attention kernels under racecheck, on the tiny model; memcheck also on vit_b bf16 and fp8 (on
  # Hopper its lin1 and qkv run CUTLASS's kernels), and on one mask a prompt (the decoder upscales
  # only the masks it returns).
  for args in "--model tiny --precision bf16 --multimask" "--model tiny --precision fp32 --multimask" \
    "--model tiny --precision fp8 --multimask" "--model vit_b --precision bf16 --multimask" \
    "--model vit_b --precision fp8 --multimask" "--model tiny --precision bf16"; do
    # shellcheck disable=SC2086
    compute-sanitizer --tool memcheck --error-exitcode 9 .devbin/samfast segment $args --device cuda \
      --image "$SAMFAST_TESTDATA/images/dog.jpg" --point 400,260 --out /tmp/sanitize --overwrite 2>&1 \
      | tail -1 | sed "s/^/memcheck $args: /" | tee -a "$OUT/sanitize.log"
  done
  # CUDA graphs with their buffers in the arena: the bench's warm-up records them, its runs replay them.
  compute-sanitizer --tool memcheck --error-exitcode 9 .devbin/samfast bench --model tiny --precision bf16 --device cuda \
    --batch 2 --prompts 4 --runs 2 2>&1 | tail -1 | sed "s/^/memcheck tiny bf16 bench (graph replays): /" \
    | tee -a "$OUT/sanitize.log"
  # (the whole report kept, and the hazards counted by the kernel they are in)
  compute-sanitizer --tool racecheck --error-exitcode 9 .devbin/samfast segment --model tiny --precision bf16 --device cuda \
    --image "$SAMFAST_TESTDATA/images/dog.jpg" --point 400,260 --out /tmp/sanitize --overwrite > "$OUT/racecheck.log" 2>&1
  tail -1 "$OUT/racecheck.log" | sed "s/^/racecheck tiny bf16: /" | tee -a "$OUT/sanitize.log"
  grep "Race reported between" "$OUT/racecheck.log" | sed -E 's/.* at ([^+ ]+)\+.*/\1/' | sort | uniq -c | sort -rn | head -12 \
    | sed "s/^/racecheck hazards: /" | tee -a "$OUT/sanitize.log"
  # The encoder attention kernels at every head dim the tiny model lacks (64: vit_b and vit_l; 80: vit_h)
  # under racecheck: the CUDA op test's cases (about 4 minutes on an H100).
  compute-sanitizer --tool racecheck --error-exitcode 9 .devbin/tests/samfast_gpu_tests \
    --gtest_filter='*RelPosAttention*' > "$OUT/racecheck_attention.log" 2>&1
  tail -1 "$OUT/racecheck_attention.log" | sed "s/^/racecheck RelPosAttention op tests: /" | tee -a "$OUT/sanitize.log"
fi
if [[ " $steps " == *" parity "* ]]; then
  SAMFAST_BIN="$PWD/.devbin" SAMFAST_SOURCE_DIR="$PWD" python3 -m pytest -q -s tests/parity/test_gpu_parity.py 2>&1 \
    | tee "$OUT/gpu_parity.log" | grep -E "\]|passed|failed|Error" | tail -30
fi
if [[ " $steps " == *" bench "* ]]; then
  # Batch 8 in every precision; batch 1 with a 2250x1500 photo (predict post-processes to that size).
  python3 -c "from PIL import Image; Image.open('$SAMFAST_TESTDATA/images/dog.jpg').convert('RGB').resize((2250, 1500)).save('/tmp/photo.png')"
  for m in ${MODELS:-vit_b vit_l vit_h}; do
    for p in ${PRECISIONS:-bf16 fp8 fp16 fp32}; do
      .devbin/samfast bench --model "$m" --device cuda --precision "$p" --batch 8 --prompts 16 --runs 5 2>/dev/null \
        | tail -1 | tee -a "$OUT/samfast_bench.jsonl"
    done
    .devbin/samfast bench --model "$m" --device cuda --precision bf16 --batch 1 --prompts 16 --runs 10 \
      --image /tmp/photo.png 2>/dev/null | tail -1 | tee -a "$OUT/samfast_bench.jsonl"
  done
fi
if [[ " $steps " == *" decoder "* ]]; then
  # The decoder's precision beside a bf16 (and fp8) image encoder: the default (fp16) against bf16,
  # two interleaved rounds.
  for round in 1 2; do for m in vit_b vit_h; do for p in bf16 fp8; do for d in auto bf16; do
    .devbin/samfast bench --model "$m" --device cuda --precision "$p" --decoder-precision "$d" --batch 8 --prompts 16 \
      --runs 5 2>/dev/null | tail -1 | tee -a "$OUT/decoder_bench.jsonl"
  done; done; done; done
fi
if [[ " $steps " == *" anchors "* ]]; then
  for m in ${MODELS:-vit_b vit_l vit_h}; do
    python3 .whl/anchor_bench.py orig "$m" fp32 8 none 16 2>&1 | tail -1 | tee -a "$OUT/anchors.jsonl"
    python3 .whl/anchor_bench.py fast "$m" bf16 8 none 16 2>&1 | tail -1 | tee -a "$OUT/anchors.jsonl"
  done
fi
if [[ " $steps " == *" compiled "* ]]; then
  # segment-anything-fast bf16 with torch.compile max-autotune (the anchor). Compiling and
  # autotuning take ~3.5 minutes for vit_b and more than 5 for vit_h on an H200: give each model a
  # call of its own (COMPILED_MODELS=vit_b, then COMPILED_MODELS=vit_h).
  for m in ${COMPILED_MODELS:-vit_b vit_h}; do
    timeout "${COMPILED_TIMEOUT:-560}" python3 .whl/anchor_bench.py fast "$m" bf16 8 max-autotune 16 \
      > "$OUT/compiled_$m.log" 2>&1 || echo "compiled $m: did not finish (exit $?), see compiled_$m.log"
    grep '"impl"' "$OUT/compiled_$m.log" | tail -1 | tee -a "$OUT/anchors.jsonl"
  done
fi
if [[ -s "$OUT/samfast_bench.jsonl" && -s "$OUT/anchors.jsonl" ]]; then
  # samfast as multiples of the anchors measured in this call
  python3 bench/gpu/ratios.py "$OUT/samfast_bench.jsonl" "$OUT/anchors.jsonl" | tee "$OUT/ratios.md"
  # the chart's results file (bench/results/*.json), and the chart where matplotlib is installed
  python3 bench/gpu/results.py "$OUT" -o "$OUT/results.json" &&
    { python3 -c "import matplotlib" 2>/dev/null && python3 bench/chart.py "$OUT/results.json" -o "$OUT/chart.png"; }
fi
if [[ " $steps " == *" amg "* ]]; then
  # Segment everything: parity (vit_b fp32/bf16 vs upstream fp32), samfast beside the anchors on
  # 1800x1200 versions of the test images, default options and every-mask-survives thresholds.
  A=/tmp/amg; python3 bench/gpu/amg_bench.py prepare "$A"
  compute-sanitizer --tool memcheck --error-exitcode 9 .devbin/samfast everything --model tiny --device cuda \
    --input "$SAMFAST_TESTDATA/images/truck.jpg" --output /tmp/sanitize_amg --overwrite --points-per-side 6 \
    --pred-iou-thresh 0 --stability-score-thresh 0 --crop-n-layers 1 --min-mask-region-area 100 2>&1 | tail -1 \
    | sed "s/^/memcheck everything tiny bf16: /" | tee -a "$OUT/sanitize.log"
  for spec in "vit_b $A base" "vit_h $A base" "vit_b $A crops"; do
    # shellcheck disable=SC2086
    timeout 300 python3 bench/gpu/amg_bench.py parity $spec 2>&1 | grep '^{' | tee -a "$OUT/amg_parity.jsonl"
  done
  for m in vit_b vit_h; do
    for v in default low; do
      extra=(); [ "$v" = low ] && extra=(--pred-iou-thresh 0 --stability-score-thresh 0)
      .devbin/samfast bench --amg --checkpoint "$A/$m.pth" --device cuda --precision bf16 --runs 3 \
        --image "$A/photo/dog.png" --images "$A/photo/groceries.png" "$A/photo/truck.png" "${extra[@]}" 2>&1 \
        | tail -1 | tee -a "$OUT/amg_bench.jsonl"
    done
  done
  [ "${AMG_ANCHORS:-1}" = 1 ] && for spec in "orig vit_b default" "orig vit_h default" "fast vit_b default" "fast vit_h default" "fast vit_b low"; do
    # shellcheck disable=SC2086
    timeout 150 python3 bench/gpu/amg_bench.py anchor $spec "$A" 2>&1 | grep '^{' | tee -a "$OUT/amg_anchors.jsonl"
  done
fi
if [[ " $steps " == *" trace "* ]]; then
  # Where the time goes without a profiler's overhead: `samfast bench --trace` (CUPTI) of vit_b and
  # vit_h bf16 at batch 8 (each timed run: a batch-1 set_image and predicts, the batch-8 encoder, 8
  # decodes of 16 prompts), kernels by name and launch grid.
  export LD_LIBRARY_PATH="/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/extras/CUPTI/lib64:${LD_LIBRARY_PATH:-}"  # (libcupti)
  # TRACE_PRECISIONS="bf16 fp8" traces each precision (default bf16).
  for p in ${TRACE_PRECISIONS:-bf16}; do for m in vit_b vit_h; do
    rm -f "$OUT/trace_${m}_$p.json"
    .devbin/samfast bench --model "$m" --device cuda --precision "$p" --batch 8 --prompts 16 --runs 2 \
      --trace "$OUT/trace_${m}_$p.json" >/dev/null 2>&1
    echo "== $m $p, batch 8, per timed run" | tee -a "$OUT/trace_summary.txt"
    python3 bench/gpu/trace_summary.py "$OUT/trace_${m}_$p.json" --runs 2 --top 25 --split | tee -a "$OUT/trace_summary.txt"
  done; done
fi
if [[ " $steps " == *" gemm_bf16 "* ]]; then
  # The bf16 encoder's GEMMs: cuBLASLt as samfast runs it against CUTLASS's (bench/gpu/bf16_gemm_options.cu).
  .devbin/tests/bf16_gemm_options 2>&1 | tee "$OUT/bf16_gemm_options.txt"
fi
if [[ " $steps " == *" lin1 "* ]]; then
  # The fp8 lin1's epilogue options, cuBLASLt's and CUTLASS's (bench/gpu/lin1_gemm_options.cu).
  .devbin/tests/lin1_gemm_options 2>&1 | tee "$OUT/lin1_gemm_options.txt"
fi
if [[ " $steps " == *" profile "* ]]; then
  # Per-kernel GPU time of a vit_b bf16 run (batch 1: encoder forwards and 16-prompt decodes), and of
  # vit_b and vit_h at batch 8; then ncu's full report of the encoder's attention kernel (windowed
  # and global launches of vit_b at batch 8), or of the kernels NCU_KERNELS names (an ncu -k filter,
  # e.g. NCU_KERNELS='regex:i2t_mma|upscale_masks' for the decoder's).
  for spec in "vit_b 1" "vit_b 8" "vit_h 8"; do
    set -- $spec
    ncu --clock-control none --metrics gpu__time_duration.sum --csv .devbin/samfast bench --model "$1" --device cuda \
      --precision bf16 --batch "$2" --prompts 16 --runs 1 2>/dev/null > "$OUT/ncu_$1_b$2.csv"
    echo "== $1 batch $2" | tee -a "$OUT/kernels.txt"
    python3 bench/gpu/kernel_summary.py 25 < "$OUT/ncu_$1_b$2.csv" | tee -a "$OUT/kernels.txt"
  done
  kernels="${NCU_KERNELS:-regex:rel_pos_attention}"
  ncu --clock-control none --set full -k "$kernels" --launch-count 3 .devbin/samfast bench \
    --model vit_b --device cuda --precision bf16 --batch 8 --prompts 16 --runs 1 > "$OUT/ncu_attention.txt" 2>&1
  grep -E "${kernels#regex:}|Duration|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Shared Memory Configuration|Block Limit|Warp Cycles Per Issued|Issue Slots Busy|L1/TEX Hit|Bank Conflicts" \
    "$OUT/ncu_attention.txt" | head -60
fi
if [[ " $steps " == *" source "* ]]; then
  # Instruction by instruction: ncu's source page (full set) of the first launch of each kernel
  # NCU_SOURCE names (ncu -k filters; default the encoder's global and windowed attention) in a vit_b
  # bf16 bench (its first launches are the batch-1 forward's; NCU_SKIP launches skipped first),
  # summarised by ncu_source_summary.py.
  for k in ${NCU_SOURCE:-regex:rel_pos_attention_wgmma regex:rel_pos_window}; do
    name="${k#regex:}"; name="${name//[^A-Za-z0-9_]/_}"
    ncu --clock-control none --set full --import-source no -k "$k" --launch-skip "${NCU_SKIP:-0}" --launch-count 1 \
      -o "/tmp/src_$name" -f \
      .devbin/samfast bench --model vit_b --device cuda --precision bf16 --batch 8 --prompts 16 --runs 1 \
      > "$OUT/ncu_source_$name.log" 2>&1
    ncu -i "/tmp/src_$name.ncu-rep" --page source --csv --print-source sass > "/tmp/src_$name.csv" 2>&1
    ncu -i "/tmp/src_$name.ncu-rep" --page details | grep -E "^  [a-z_]|Duration|Grid Size|Issue Slots Busy|Warp Cycles Per Issued" \
      | tee "$OUT/source_$name.txt"
    python3 bench/gpu/ncu_source_summary.py "/tmp/src_$name.csv" --top 25 | tee -a "$OUT/source_$name.txt"
    [ "${NCU_KEEP_CSV:-0}" = 1 ] && xz -c "/tmp/src_$name.csv" > "$OUT/src_$name.csv.xz"
  done
fi
