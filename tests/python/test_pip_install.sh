#!/usr/bin/env bash
# pip install . in a fresh virtual environment (no torch there), then the installed package used
# from outside the source tree: load a synthetic checkpoint, predict, generate, check the errors.
# usage: test_pip_install.sh SOURCE_DIR WORK_DIR SAMFAST_CLI
set -euo pipefail
src=$1 work=$2 cli=$3
rm -rf "$work" && mkdir -p "$work"
/usr/bin/python3 -m venv "$work/venv"
py="$work/venv/bin/python"
echo "pip install $src (CPU backend) into a fresh venv"
if ! CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$py" -m pip install "$src" --config-settings=cmake.define.SAMFAST_CUDA=OFF \
  --config-settings=build-dir="$work/build" > "$work/pip.log" 2>&1; then
  tail -40 "$work/pip.log"; echo "pip install failed (log: $work/pip.log)"; exit 1
fi
"$cli" make-checkpoint --model tiny --seed 3 --out "$work/tiny.pth" >/dev/null
cd "$work"  # (not the source tree: the installed package must be the one imported)
"$py" - "$work/tiny.pth" "$src/../shared/testdata/images/truck.jpg" <<'PY'
import os, sys
import numpy as np
import samfast
from samfast import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

assert "site-packages" in samfast.__file__, samfast.__file__
package = os.path.dirname(samfast.__file__)
assert any(f.startswith("libsamfast.so") for f in os.listdir(package)), os.listdir(package)
for f in ("_samfast.pyi", "py.typed", "server/static/index.html", "server/static/app.js"):
    assert os.path.exists(os.path.join(package, f)), f"{f} is not in the wheel"
try:
    import torch  # noqa: F401
    raise SystemExit("torch should not be in the fresh venv")
except ImportError:
    pass
sam = samfast.load(sys.argv[1], device="cpu")
image = samfast.read_image(sys.argv[2])
p = SamPredictor(sam)
p.set_image(image)
masks, scores, low = p.predict(point_coords=np.array([[300, 200]]), point_labels=np.array([1]))
assert masks.shape == (3,) + image.shape[:2] and masks.dtype == bool and scores.shape == (3,)
records = SamAutomaticMaskGenerator(sam, points_per_side=2, pred_iou_thresh=0, stability_score_thresh=0).generate(image)
assert records and set(records[0]) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords",
                                       "stability_score", "crop_box"}
try:
    p.predict(point_coords=np.array([[1e6, 0]]), point_labels=np.array([1]))
    raise SystemExit("a point outside the image should be refused")
except ValueError as e:
    assert "outside" in str(e)
try:
    sam_model_registry["vit_h"](checkpoint=sys.argv[1]).model_type
    raise SystemExit("a tiny checkpoint is not a vit_h")
except RuntimeError as e:
    assert "vit_h" in str(e)
print(f"installed samfast works: {len(records)} masks, scores {np.round(scores, 3).tolist()}")
PY
