#!/usr/bin/env bash
# Installs what samfast needs to build and test (Debian packages; upstream segment_anything from
# PyPI as the test oracle; nanobind for the Python module), builds it in ./build (the library, the
# samfast command and the Python package in build/python) and makes `import samfast` work for
# /usr/bin/python3. Safe to run again: installed parts are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# Without recommends, so listed: make (cmake's generator) and libopenblas0-pthread (without it
# python3-torch gets Debian's reference BLAS, on which upstream's fp32 encoder, the tests' oracle,
# runs ~25x slower). Checked on a bare Debian 12 (debootstrap --variant=minbase).
APT_PACKAGES=(cmake make g++ pkg-config libdnnl-dev ocl-icd-opencl-dev libstb-dev libjpeg62-turbo-dev libpng-dev libwebp-dev libtiff-dev nlohmann-json3-dev libcli11-dev
              libzip-dev libexif-dev libgtest-dev clang libclang-rt-14-dev python3-torch python3-torchvision python3-numpy
              libopenblas0-pthread python3-pil python3-pytest python3-pip python3-matplotlib python3-dev python3-venv
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
# pip_for_python3 MODULE WHAT PIP-ARGS...: a PyPI package for /usr/bin/python3, unless MODULE imports.
pip_for_python3() {
  local module=$1 what=$2
  shift 2
  /usr/bin/python3 -c "import $module" 2>/dev/null && return 0
  echo "setup: installing $what for /usr/bin/python3"
  /usr/bin/python3 -m pip install -q --break-system-packages "$@"
}
pip_for_python3 segment_anything "upstream segment_anything (test oracle)" --no-deps segment_anything
pip_for_python3 pycocotools "pycocotools (RLE test oracle)" pycocotools
# Upstream's min_mask_region_area (a generator parity case) calls OpenCV; 4.10 still fits Debian's numpy 1.x.
pip_for_python3 cv2 "opencv-python-headless (oracle for small-region removal)" --no-deps "opencv-python-headless==4.10.0.84"
pip_for_python3 nanobind "nanobind (the Python module's bindings)" "nanobind>=2.0"
# CUTLASS's headers (the fp8 encoder's lin1 and qkv kernels on Hopper): only headers are used, so no deps.
/usr/bin/python3 -c "import importlib.util as u; exit(u.find_spec('cutlass_library') is None)" 2>/dev/null || {
  echo "setup: installing nvidia-cutlass (CUTLASS's headers) for /usr/bin/python3"
  /usr/bin/python3 -m pip install -q --break-system-packages --no-deps "nvidia-cutlass==4.2.0.0"; }
# ISAT's answer is an embedding as JSON lists of numbers: orjson writes one in 0.05 s, json in 1 s.
pip_for_python3 orjson "orjson (the server's ISAT answers)" orjson
# Label Studio's own brush RLE decoder, the oracle of the Label Studio tests (numpy and PIL are all
# brush.py needs; the converter's other formats' dependencies are left out).
pip_for_python3 label_studio_converter.brush "label-studio-converter (oracle for Label Studio's RLE)" --no-deps \
  "label-studio-converter==0.0.59"

# schemathesis (tests/python/test_server_schema.py) in a virtual environment of its own: its
# libraries (hypothesis, jsonschema, requests, ...) are newer than those beside Debian's fastapi.
SCHEMATHESIS=4.32.5
if ! build/schemathesis-venv/bin/st --version 2>/dev/null | grep -q "version $SCHEMATHESIS"; then
  echo "setup: installing schemathesis $SCHEMATHESIS into build/schemathesis-venv"
  /usr/bin/python3 -m venv --clear build/schemathesis-venv
  build/schemathesis-venv/bin/pip install -q "schemathesis==$SCHEMATHESIS"
fi

# X-AnyLabeling's own client (tests/python/test_tools_xanylabeling.py) in a virtual environment of
# its own, beside Debian's numpy and OpenCV: its Qt (PyQt6) and the few libraries its import needs.
XANYLABELING=4.2.1
if ! build/xanylabeling-venv/bin/python -c "import importlib.metadata as m, PyQt6
assert m.version('x-anylabeling-cvhub') == '$XANYLABELING'" 2>/dev/null; then
  echo "setup: installing x-anylabeling-cvhub $XANYLABELING into build/xanylabeling-venv"
  /usr/bin/python3 -m venv --clear --system-site-packages build/xanylabeling-venv
  build/xanylabeling-venv/bin/pip install -q --no-deps "x-anylabeling-cvhub==$XANYLABELING"
  build/xanylabeling-venv/bin/pip install -q "PyQt6==6.9.1" "PyQt6-Qt6==6.9.2" "termcolor==3.3.0" "natsort==8.4.0" \
    "importlib_metadata==10.2.0" "Markdown==3.11.3" "jsonlines==4.0.0" "json_repair==0.64.6" \
    "qimage2ndarray==1.10.0" "tqdm==4.70.1"
fi

# ISAT's own client (tests/python/test_tools_isat.py) in a virtual environment of its own, beside
# Debian's torch, numpy and OpenCV: isat-sam without its requirements (they pull a CUDA torch of
# several GB) and what importing its main window needs, pinned.
ISAT=1.5.2
if ! build/isat-venv/bin/python -c "import importlib.metadata as m, PyQt5
assert m.version('isat-sam') == '$ISAT'" 2>/dev/null; then
  echo "setup: installing isat-sam $ISAT into build/isat-venv"
  /usr/bin/python3 -m venv --clear --system-site-packages build/isat-venv
  build/isat-venv/bin/pip install -q --no-deps "isat-sam==$ISAT" "PyQt5==5.15.11" "PyQt5-Qt5==5.15.19" \
    "PyQt5_sip==12.20.1" "imgviz==2.1.0" "cmap==0.8.0" "scikit-image==0.26.0" "lazy-loader==0.6" \
    "pydicom==3.0.2" "hydra-core==1.3.8" "omegaconf==2.4.0" "antlr4-python3-runtime==4.9.3" "tqdm==4.70.1" \
    "shapely==2.2.0" "fuzzywuzzy==0.18.0"
fi

# Label Studio itself (tests/python/test_tools_labelstudio.py runs one on loopback and connects samfast
# as its ML backend), in a virtual environment of its own: about 1 GB of Django and its libraries.
LABEL_STUDIO=1.23.2
if ! build/labelstudio-venv/bin/python -c "import importlib.metadata as m
assert m.version('label-studio') == '$LABEL_STUDIO'" 2>/dev/null; then
  echo "setup: installing label-studio $LABEL_STUDIO into build/labelstudio-venv"
  /usr/bin/python3 -m venv --clear build/labelstudio-venv
  build/labelstudio-venv/bin/pip install -q "label-studio==$LABEL_STUDIO"
fi

# Ray Data (tests/ray: samfast-dataset and samfast.ray on a local Ray) in a virtual environment of its
# own: its pyarrow, pandas and numpy are newer than Debian's.
RAY=2.60.0
if ! build/ray-venv/bin/python -c "import importlib.metadata as m, pyarrow
assert m.version('ray') == '$RAY'" 2>/dev/null; then
  echo "setup: installing ray[data] $RAY into build/ray-venv"
  /usr/bin/python3 -m venv --clear build/ray-venv
  build/ray-venv/bin/pip install -q "ray[data]==$RAY"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
# The build tree's package for /usr/bin/python3 (as `pip install -e` would): a .pth file naming build/python.
site="$(/usr/bin/python3 -c 'import site; print(site.getsitepackages()[0])')"
echo "$PWD/build/python" > "$site/samfast-build.pth" 2>/dev/null || \
  echo "setup: could not write $site/samfast-build.pth; use PYTHONPATH=$PWD/build/python"
echo "setup: built build/samfast and the Python package (import samfast; pip install . for a wheel)"
