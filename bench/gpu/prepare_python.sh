#!/usr/bin/env bash
# Builds here, for bench/gpu/python.sh on the GPU machine: the samfast wheel with the CUDA backend for
# that machine's Python 3.12 (through pip wheel, as pip install . builds it; build-wheel312/ keeps
# the build between runs), a pycocotools wheel (the generator tests' oracle), the server's dependencies
# and, if missing, the non-CUDA libraries of bench/gpu/prepare.sh (.whl/devbin.tar.xz).
set -euo pipefail
cd "$(dirname "$0")/../.."
# A Python 3.12 here (PY312=... to name one): the module is built for the interpreter that builds it.
for PY312 in ${PY312:-} python3.12 /root/.pyenv/versions/3.12*/bin/python3 /usr/bin/python3.12; do
  "$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && break
done
"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' || { echo "no Python 3.12 found (set PY312)"; exit 1; }
rm -rf .whl/wheels && mkdir -p .whl/wheels .whl/pywheels
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$PY312" -m pip wheel . --no-deps -w .whl/wheels \
  --config-settings=cmake.define.SAMFAST_CUDA=ON --config-settings=build-dir="$PWD/build-wheel312"
ls .whl/pywheels/pycocotools-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl/pywheels pycocotools
# The server's dependencies (that machine has no fastapi, uvicorn, ... and no internet), for bench/server_bench.py.
ls .whl/pywheels/httptools-*.whl >/dev/null 2>&1 || python3 -m pip download -q --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl/pywheels \
  fastapi uvicorn python-multipart prometheus-client httpx httptools uvloop
[ -f .whl/devbin.tar.xz ] || SAMFAST_BUILD_DIR="${SAMFAST_BUILD_DIR:-build}" bash bench/gpu/prepare.sh
du -sh .whl/wheels/*.whl
echo "carry [\".whl\"] and run bench/gpu/python.sh"
