#!/usr/bin/env bash
# Runs on the lent GPU machine with .whl (bench/gpu/prepare.sh and prepare_python.sh) and .rayenv
# (bench/gpu/prepare_ray.sh) carried: segment everything over a folder of generated images through
# the CLI and through samfast-dataset with one GPU actor (bench/ray_vs_cli.py), vit_h bf16, default
# options, then with every mask kept (thresholds 0: many masks to encode and write). Logged under $OUT.
#   IMAGES=1000 KEEP_ALL_IMAGES=300 bench/gpu/ray.sh
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
[ -x .devbin/samfast ] || tar -xJf .whl/devbin.tar.xz
export LD_LIBRARY_PATH="$PWD/.devbin/lib:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1 SAMFAST_TESTDATA="$PWD/.whl/testdata"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/wheels/*.whl || exit 1
mkdir -p /tmp/raysite && tar -xJf .rayenv/ray312.tar.xz -C /tmp/raysite
export PYTHONPATH="/tmp/site:/tmp/raysite"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
nproc >> "$OUT/device.txt"; date -u +%Y-%m-%dT%H:%MZ >> "$OUT/device.txt"
python3 -c "import ray, samfast; print('ray', ray.__version__, 'samfast', samfast.__file__)"
timeout 400 python3 bench/ray_vs_cli.py --cli .devbin/samfast --folder /tmp/images --make "${IMAGES:-1000}" \
  --model vit_h --precision bf16 2>&1 | tee -a "$OUT/ray_vs_cli.jsonl" | grep -E '^\{|^made|Error|error' 
mkdir -p /tmp/images_few && ls /tmp/images | head -n "${KEEP_ALL_IMAGES:-300}" | xargs -I{} ln -sf /tmp/images/{} /tmp/images_few/{}
timeout 300 python3 bench/ray_vs_cli.py --cli .devbin/samfast --folder /tmp/images_few --model vit_h --precision bf16 \
  -- --pred-iou-thresh 0 --stability-score-thresh 0 2>&1 | tee -a "$OUT/ray_vs_cli.jsonl" | grep -E '^\{|Error|error'
