#!/usr/bin/env bash
# Builds here, for bench/gpu/ray.sh on the GPU machine (no internet there, and no Ray): .rayenv/ray312.tar.xz,
# Ray (ray[data]'s core; that machine has numpy, pandas, pyarrow and fsspec) for its Python 3.12 and the
# jsonschema it lacks, without the Ray libraries samfast does not use (RLlib, Tune, Train, Serve, LLM,
# the Java jars) so that it fits in one carry.
set -euo pipefail
cd "$(dirname "$0")/../.."
RAY=2.60.0
[ -f .rayenv/ray312.tar.xz ] && { echo ".rayenv/ray312.tar.xz exists"; exit 0; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$work/wheels" "ray==$RAY" jsonschema \
  jsonschema-specifications referencing rpds-py
mkdir -p .rayenv
# (pip keeps the wheel's file modes: raylet and gcs_server must stay executable)
python3 -m pip install -q --no-deps --no-compile --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --target "$work/site" "$work"/wheels/*.whl
rm -rf "$work"/site/ray/{rllib,tune,train,serve,llm,jars} "$work"/site/ray/dashboard/client/build/static/js/*.map
tar -cJf .rayenv/ray312.tar.xz -C "$work/site" .
du -sh .rayenv/ray312.tar.xz
echo "carry [\".whl\", \".rayenv\"] and run bench/gpu/ray.sh"
