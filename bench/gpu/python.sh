#!/usr/bin/env bash
# Runs on the lent GPU machine with .whl carried: installs the CUDA wheel that bench/gpu/prepare_python.sh
# built here (for that machine's Python 3.12) into /tmp/site, then the Python package's tests there
# (GPU cases and the CPU parity suite, against upstream on that machine's torch) and
# bench/python_overhead.py for vit_b and vit_h, then the server's tests and bench/server_bench.py
# (vit_h bf16; SERVER_ONLY=1 runs only these). Everything is logged under $OUT. The whole script takes
# longer than one device call may: SERVER_ONLY=1 and SERVER_RUNS split it.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
[ -d .devbin/lib ] || tar -xJf .whl/devbin.tar.xz  # oneDNN, libjpeg, libpng, libzip, libexif, libwebp, libtiff (not there)
export LD_LIBRARY_PATH="$PWD/.devbin/lib:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/wheels/*.whl .whl/pywheels/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/.whl/pysrc" SAMFAST_TESTDATA="$PWD/.whl/testdata"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import samfast, torch, numpy; print('samfast', samfast.__file__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
if [ -z "${SERVER_ONLY:-}" ]; then
  python3 -m pytest -q -rs -p no:cacheprovider tests/python/test_gpu.py tests/python/test_predictor.py \
    tests/python/test_utils_and_model.py 2>&1 | tee "$OUT/python_tests.log" | tail -15
  for m in vit_b vit_h; do
    python3 bench/python_overhead.py --model "$m" --device cuda --image "$SAMFAST_TESTDATA/images/dog.jpg" 2>&1 \
      | tee -a "$OUT/python_overhead.jsonl"
  done
fi
python3 -m pytest -q -rs -p no:cacheprovider tests/python/test_gpu.py tests/python/test_server.py \
  tests/python/test_server_batching.py 2>&1 | tee "$OUT/server_tests.log" | tail -8
# Each run a server of its own: one HTTP process, then eight before one model process (--workers);
# SERVER_RUNS='--workers 8 --blocky-masks --clicks-only|...' for others (see bench/server_bench.py).
IFS="|" read -ra runs <<< "${SERVER_RUNS:---workers 1|--workers 8 --memory-sizes 30}"
for run in "${runs[@]}"; do
  # shellcheck disable=SC2086
  python3 bench/server_bench.py --model vit_h --device cuda --precision bf16 --image "$SAMFAST_TESTDATA/images/dog.jpg" \
    --log "$OUT/server.log" $run 2>&1 | tee -a "$OUT/server_bench.jsonl" | grep '^{'
done
