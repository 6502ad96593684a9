#!/usr/bin/env bash
# Prepares, on this (GPU-less) machine, what a run on the lent GPU machine needs: a CUDA build of
# samfast in build-dev/, its binaries, libsamfast.so and the non-CUDA shared libraries they load in .devbin/
# (the GPU machine has the CUDA libraries but not oneDNN, libzip, libjpeg, libpng, libexif, libwebp, libtiff and
# libtiff's codecs; found through RUNPATH),
# packed into .whl/devbin.tar.xz, and the two upstream Python packages in .whl/pysrc (fetched code:
# ignored by git, never committed).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v patchelf >/dev/null || { echo "prepare.sh needs patchelf (apt-get install patchelf)"; exit 1; }
B="${SAMFAST_BUILD_DIR:-build-dev}"  # e.g. SAMFAST_BUILD_DIR=build to reuse scripts/setup.sh's CUDA build
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DSAMFAST_CUDA=ON >/dev/null
cmake --build "$B" -j"$(nproc)" --target samfast_cli parity_tool samfast_gpu_tests
rm -rf .devbin && mkdir -p .devbin/tests .devbin/lib
cp "$B/samfast" .devbin/
# (the CPU unit tests run here, not there: the carried folders must stay under 64 MiB)
cp "$B/tests/parity_tool" "$B/tests/samfast_gpu_tests" .devbin/tests/
# (bench/gpu/lin1_gemm_options.cu and bf16_gemm_options.cu, where CMake found CUTLASS's headers:
# run.sh's lin1 and gemm_bf16 steps)
if cmake --build "$B" --target help | grep lin1_gemm_options >/dev/null; then  # (not -q: pipefail)
  for t in lin1_gemm_options bf16_gemm_options; do
    cmake --build "$B" -j"$(nproc)" --target $t && cp "$B/$t" .devbin/tests/
  done
fi
for bin in .devbin/samfast .devbin/tests/*; do
  ldd "$bin" | awk '/=> \// {print $3}' | grep -E 'libsamfast|libdnnl|libgomp|libjpeg|libpng|libzip|libexif|libwebp|libtiff|libLerc|libjbig|libdeflate' || true
done | sort -u | while read -r lib; do cp -L "$lib" .devbin/lib/; done
# The binaries find these through their RUNPATH, so nothing else on that machine (Python, torch) sees them.
patchelf --set-rpath '$ORIGIN/lib' .devbin/samfast
for bin in .devbin/tests/*; do patchelf --set-rpath '$ORIGIN/../lib' "$bin"; done
for lib in .devbin/lib/*; do patchelf --set-rpath '$ORIGIN' "$lib"; done
# Symbols are not needed there, and the carried folders must stay under the 64 MiB a call may carry.
strip --strip-unneeded .devbin/samfast .devbin/tests/* .devbin/lib/*
du -sh .devbin
for pkg in segment_anything segment_anything_fast; do  # (the anchors' packages: ../shared/bench/README.md)
  [ -d ".whl/pysrc/$pkg" ] || echo "note: put $pkg (from its public repository) under .whl/pysrc for the anchors and parity"
done
cp ../shared/bench/anchor_bench.py .whl/anchor_bench.py
# the build's commit, for the results file of run.sh (bench/gpu/results.py): "-dirty" where the tree
# differs from it
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include CMakeLists.txt || echo -dirty)" > .whl/commit.txt
mkdir -p .whl/testdata && cp -r ../shared/testdata/images .whl/testdata/  # ../shared does not travel
# .devbin (oneDNN alone is ~40 MB) may not fit the 64 MiB a call may carry: it travels
# compressed inside .whl (~9 MB); run.sh unpacks it there.
tar -cf - .devbin | xz -6 -T"$(nproc)" > .whl/devbin.tar.xz
du -sh .whl/devbin.tar.xz
echo "carry [\".whl\"] and run bench/gpu/run.sh (it unpacks .whl/devbin.tar.xz)"
