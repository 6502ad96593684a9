#!/usr/bin/env bash
# Runs on the lent GPU machine with .whl (bench/gpu/prepare.sh and prepare_python.sh) and .rayenv
# (bench/gpu/prepare_ray.sh) carried: segment everything over a folder of generated images through
# the CLI (one process per GPU) and through samfast-dataset (one GPU actor per GPU), for 1, 2, 4, ...
# GPUs up to the machine's (bench/ray_vs_cli.py), vit_h bf16, default options; then, on one GPU, with
# every mask kept (thresholds 0: more masks to encode and write). Logged under $OUT.
#   IMAGES=1000 GPUS=1,2 KEEP_ALL_IMAGES=300 bench/gpu/ray.sh   (KEEP_ALL_IMAGES=0 leaves that run out;
#   PREDICTOR=1 adds bench/gpu/run.sh's predictor benchmark beside the anchors on the first GPU)
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
[ -x .devbin/samfast ] || tar -xJf .whl/devbin.tar.xz
export LD_LIBRARY_PATH="$PWD/.devbin/lib:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1 SAMFAST_TESTDATA="$PWD/.whl/testdata"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/wheels/*.whl || exit 1
[ -x /tmp/raysite/ray/core/src/ray/raylet/raylet ] || { mkdir -p /tmp/raysite && tar -xJf .rayenv/ray312.tar.xz -C /tmp/raysite; }
export PYTHONPATH="/tmp/site:/tmp/raysite"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
nproc >> "$OUT/device.txt"; date -u +%Y-%m-%dT%H:%MZ >> "$OUT/device.txt"
python3 -c "import ray, samfast; print('ray', ray.__version__, 'samfast', samfast.__file__)"
count="$(nvidia-smi --list-gpus | wc -l)"
gpus="${GPUS:-$(n=1; s=1; while [ $((n * 2)) -le "$count" ]; do n=$((n * 2)); s="$s,$n"; done; echo "$s")}"
timeout 560 python3 bench/ray_vs_cli.py --cli .devbin/samfast --folder /tmp/images --make "${IMAGES:-1000}" \
  --gpus "$gpus" --model vit_h --precision bf16 2>&1 | tee -a "$OUT/ray_vs_cli.jsonl" | grep -E '^\{|^made|Error|error'
if [ "${KEEP_ALL_IMAGES:-300}" -gt 0 ]; then
  rm -rf /tmp/images_few && mkdir -p /tmp/images_few
  ls /tmp/images | head -n "${KEEP_ALL_IMAGES:-300}" | xargs -I{} ln -sf /tmp/images/{} /tmp/images_few/{}
  timeout 300 python3 bench/ray_vs_cli.py --cli .devbin/samfast --folder /tmp/images_few --model vit_h --precision bf16 \
    -- --pred-iou-thresh 0 --stability-score-thresh 0 2>&1 | tee -a "$OUT/ray_vs_cli.jsonl" | grep -E '^\{|Error|error'
fi
if [ -n "${PREDICTOR:-}" ]; then
  CUDA_VISIBLE_DEVICES=0 bash bench/gpu/run.sh bench anchors
fi
