#!/usr/bin/env bash
# Builds the libFuzzer targets for the readers of untrusted files (checkpoints, the safetensors
# header, .npy arrays, images, COCO RLE strings) with clang (libFuzzer + ASan + UBSan), seeds a
# corpus for each with small valid files, and fuzzes them one after another, splitting a bounded
# time between them.
#   tests/fuzz/run_fuzz.sh [seconds=60, in all] [build dir=/tmp/samfast-fuzz]
# Exits non-zero if a fuzzer finds a crash (the reproducer is left in the build dir).
set -euo pipefail

seconds="${1:-60}"
build="${2:-/tmp/samfast-fuzz}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cxx="${CXX_FUZZ:-clang++}"
python="${SAMFAST_PYTHON:-/usr/bin/python3}"
targets=(checkpoint safetensors npy image rle)  # tests/fuzz/fuzz_<target>.cpp, corpus in corpus/<target>

mkdir -p "$build/obj" "$build/corpus"
# The readers themselves get coverage instrumentation and sanitizers; only the targets link libFuzzer.
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fno-sanitize-recover=undefined -I "$root/include" -I "$root/src"
       -I /usr/include/stb)
lib_sources=(src/core/tensor.cpp src/io/checkpoint.cpp src/io/exif.cpp src/io/image.cpp src/io/image_formats.cpp src/io/npy.cpp
             src/io/pickle.cpp src/io/printable.cpp
             src/io/safe_file.cpp src/io/safetensors.cpp src/io/zip.cpp src/masks/rle.cpp)
objects=() pids=()
for src in "${lib_sources[@]}"; do
  obj="$build/obj/$(basename "${src%.cpp}").o"
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link,address,undefined -c "$root/$src" -o "$obj" &
  objects+=("$obj") pids+=($!)
done
# `wait PID` returns that build's status, so a failed build stops the script (set -e).
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()
for target in "${targets[@]}"; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer,address,undefined "$root/tests/fuzz/fuzz_$target.cpp" "${objects[@]}" \
    -lzip -lpng -lz -ljpeg -lexif -lwebp -ltiff -o "$build/fuzz_$target" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

"$python" "$root/tests/fuzz/make_seeds.py" "$build/corpus"

cd "$build"
share=$((seconds / ${#targets[@]}))
((share > 0)) || share=1
for target in "${targets[@]}"; do
  echo "run_fuzz.sh: fuzz_$target for ${share}s"
  # rss_limit keeps a runaway allocation a finding rather than a hung machine; the leak check stays on.
  "$build/fuzz_$target" "$build/corpus/$target" -max_total_time="$share" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1
done
