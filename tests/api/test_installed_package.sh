#!/usr/bin/env bash
# samfast as users get it: `cmake --install` into a temporary prefix, then
#  - every installed header compiles on its own with only the prefix's include/ on the path,
#  - libsamfast.so exports samfast's symbols only,
#  - examples/predict_point builds against the installed CMake package (find_package(samfast CONFIG))
#    and, a second time, through pkg-config, and both runs segment a test image with a tiny
#    synthetic checkpoint written by the installed samfast command.
#   test_installed_package.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build="$1" src="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir="$(dirname "$(find "$prefix" -name 'libsamfast.so' | head -1)")"

for h in "$prefix"/include/samfast/*.h; do
  echo "#include \"samfast/$(basename "$h")\"" > "$tmp/one_header.cpp"
  c++ -std=c++20 -fsyntax-only -I "$prefix/include" "$tmp/one_header.cpp" || { echo "FAIL: $h is not self-contained"; exit 1; }
done
echo "ok: $(ls "$prefix"/include/samfast | wc -l) installed headers compile alone"

foreign="$(nm -D --defined-only "$libdir/libsamfast.so" | awk '{print $3}' | c++filt | grep -v 'samfast::' | grep -v '^SAMFAST_' || true)"
[ -z "$foreign" ] || { echo "FAIL: libsamfast.so exports symbols that are not samfast's:"; echo "$foreign" | head; exit 1; }
echo "ok: libsamfast.so exports samfast's symbols only"

"$prefix/bin/samfast" make-checkpoint --model tiny --seed 1 --out "$tmp/tiny.pth" >/dev/null
image="$src/../shared/testdata/images/dog.jpg"

cmake -S "$src/examples/predict_point" -B "$tmp/example" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/example" >/dev/null
"$tmp/example/predict_point" "$tmp/tiny.pth" "$image" 400 260 "$tmp/cmake_mask.png"

export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
c++ -O1 "$src/examples/predict_point/main.cpp" $(pkg-config --cflags --libs samfast) -Wl,-rpath,"$libdir" \
  -o "$tmp/predict_point_pc"
"$tmp/predict_point_pc" "$tmp/tiny.pth" "$image" 400 260 "$tmp/pkgconfig_mask.png"

cmp "$tmp/cmake_mask.png" "$tmp/pkgconfig_mask.png"
"${SAMFAST_PYTHON:-/usr/bin/python3}" - "$tmp/cmake_mask.png" "$image" <<'PY'
import sys
from PIL import Image, ImageOps
mask, image = Image.open(sys.argv[1]), ImageOps.exif_transpose(Image.open(sys.argv[2]))
assert mask.size == image.size and mask.mode == "L", (mask.size, mask.mode, image.size)
values = set(mask.getdata())
assert values <= {0, 255} and 255 in values, values
print("ok: mask", mask.size, "with", sum(v == 255 for v in mask.getdata()), "pixels inside")
PY
