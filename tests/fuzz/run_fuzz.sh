#!/usr/bin/env bash
# Builds the checkpoint-loader fuzz target with clang (libFuzzer + ASan + UBSan), seeds a corpus
# with small valid .pth/.safetensors files, and fuzzes for a bounded time.
#   tests/fuzz/run_fuzz.sh [seconds=60] [build dir=/tmp/samfast-fuzz]
# Exits non-zero if the fuzzer finds a crash (the reproducer is left in the build dir).
set -euo pipefail

seconds="${1:-60}"
build="${2:-/tmp/samfast-fuzz}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cxx="${CXX_FUZZ:-clang++}"
python="${SAMFAST_PYTHON:-/usr/bin/python3}"

mkdir -p "$build/obj" "$build/corpus"
# The loader itself gets coverage instrumentation and sanitizers; only the target links libFuzzer.
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fno-sanitize-recover=undefined -I "$root/include" -I "$root/src")
lib_sources=(src/core/tensor.cpp src/io/checkpoint.cpp src/io/pickle.cpp src/io/safetensors.cpp src/io/zip.cpp)
objects=()
for src in "${lib_sources[@]}"; do
  obj="$build/obj/$(basename "${src%.cpp}").o"
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link,address,undefined -c "$root/$src" -o "$obj" &
  objects+=("$obj")
done
wait
"$cxx" "${flags[@]}" -fsanitize=fuzzer,address,undefined "$root/tests/fuzz/fuzz_checkpoint.cpp" "${objects[@]}" \
  -lzip -lz -o "$build/fuzz_checkpoint"

"$python" "$root/tests/fuzz/make_seeds.py" "$build/corpus"

cd "$build"
# rss_limit keeps a runaway allocation a finding rather than a hung machine; the leak check stays on.
"$build/fuzz_checkpoint" "$build/corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1
