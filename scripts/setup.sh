#!/usr/bin/env bash
# Installs what samfast needs to build and test (Debian packages; upstream segment_anything from
# PyPI as the test oracle; nanobind for the Python module), builds it in ./build (the library, the
# samfast command and the Python package in build/python) and makes `import samfast` work for
# /usr/bin/python3. Safe to run again: installed parts are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(cmake g++ pkg-config libopenblas-dev libstb-dev libjpeg62-turbo-dev libpng-dev nlohmann-json3-dev libcli11-dev
              libzip-dev libexif-dev libgtest-dev clang libclang-rt-14-dev python3-torch python3-torchvision python3-numpy
              python3-pil python3-pytest python3-pip python3-matplotlib python3-dev python3-venv
              python3-fastapi python3-uvicorn python3-multipart python3-prometheus-client python3-httpx
              chromium chromium-driver python3-selenium)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! /usr/bin/python3 -c "import segment_anything" 2>/dev/null; then
  echo "setup: installing upstream segment_anything (test oracle) for /usr/bin/python3"
  /usr/bin/python3 -m pip install -q --break-system-packages --no-deps segment_anything
fi
if ! /usr/bin/python3 -c "import pycocotools" 2>/dev/null; then
  echo "setup: installing pycocotools (RLE test oracle) for /usr/bin/python3"
  /usr/bin/python3 -m pip install -q --break-system-packages pycocotools
fi

if ! /usr/bin/python3 -c "import cv2" 2>/dev/null; then
  # Upstream's min_mask_region_area (a generator parity case) calls OpenCV; 4.10 still fits Debian's numpy 1.x.
  echo "setup: installing opencv-python-headless (oracle for small-region removal) for /usr/bin/python3"
  /usr/bin/python3 -m pip install -q --break-system-packages --no-deps "opencv-python-headless==4.10.0.84"
fi

if ! /usr/bin/python3 -c "import nanobind" 2>/dev/null; then
  echo "setup: installing nanobind (the Python module's bindings) for /usr/bin/python3"
  /usr/bin/python3 -m pip install -q --break-system-packages "nanobind>=2.0"
fi

# schemathesis (tests/python/test_server_schema.py) in a virtual environment of its own: its
# libraries (hypothesis, jsonschema, requests, ...) are newer than those beside Debian's fastapi.
SCHEMATHESIS=4.32.5
if ! build/schemathesis-venv/bin/st --version 2>/dev/null | grep -q "version $SCHEMATHESIS"; then
  echo "setup: installing schemathesis $SCHEMATHESIS into build/schemathesis-venv"
  /usr/bin/python3 -m venv --clear build/schemathesis-venv
  build/schemathesis-venv/bin/pip install -q "schemathesis==$SCHEMATHESIS"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
# The build tree's package for /usr/bin/python3 (as `pip install -e` would): a .pth file naming build/python.
site="$(/usr/bin/python3 -c 'import site; print(site.getsitepackages()[0])')"
echo "$PWD/build/python" > "$site/samfast-build.pth" 2>/dev/null || \
  echo "setup: could not write $site/samfast-build.pth; use PYTHONPATH=$PWD/build/python"
echo "setup: built build/samfast and the Python package (import samfast; pip install . for a wheel)"
