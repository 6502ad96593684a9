"""X-AnyLabeling's remote server (samfast.server.tools.xanylabeling) driven by X-AnyLabeling's own
client (x-anylabeling-cvhub's RemoteServer, in build/xanylabeling-venv: its Qt and libraries stay
apart from the server's) against a live server with a token: the model listed, the marks of a
click and a box turned into polygons that fill samfast's masks, the user's shapes kept (replace
false), a wrong token shown to the user."""
import base64
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import IMAGES, rgb, venv_command
from test_server import running_server

cv2 = pytest.importorskip("cv2", reason="polygons need OpenCV (scripts/setup.sh installs it)")
CLIENT = Path(__file__).resolve().parent / "clients" / "xanylabeling_client.py"


@pytest.fixture(scope="module", params=["1", "2"], ids=["one process", "front ends"])
def server(request, samfast_pkg, tiny_checkpoint):
    with running_server(samfast_pkg, tiny_checkpoint, "--token", "s3cret", "--workers", request.param) as (url, _):
        yield url + "xanylabeling"


def run_client(url, api_key, image, marks):
    python = venv_command("xanylabeling-venv", "python", "SAMFAST_XANYLABELING_PYTHON")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run([python, str(CLIENT), url, api_key, str(image), json.dumps(marks)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def filled(polygons, shape):
    out = np.zeros(shape, np.uint8)
    cv2.fillPoly(out, [np.round(np.array(p)).astype(np.int32) for p in polygons], 1)
    return out.astype(bool)


def outer_fill(mask):
    """A mask with its holes filled: what outer-contour polygons can describe."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(out, contours, -1, 1, thickness=-1)
    return out.astype(bool)


@pytest.mark.parametrize("kind", ["jpg", "webp"])  # (X-AnyLabeling opens WebP and sends the file's bytes)
def test_client_click_and_boxes(samfast_pkg, tiny_checkpoint, server, kind, tmp_path):
    marks = [{"type": "point", "data": [400, 260], "label": 1}, {"type": "point", "data": [120, 80], "label": 0},
             {"type": "rectangle", "data": [100, 90, 600, 500], "label": 1},
             {"type": "rectangle", "data": [300, 50, 700, 300], "label": 1}]
    image = IMAGES / "dog.jpg"
    if kind == "webp":  # (lossless: the same pixels)
        from PIL import Image
        image = tmp_path / "dog.webp"
        Image.fromarray(rgb("dog.jpg")).save(image, lossless=True)
    got = run_client(server, "s3cret", image, marks)
    assert got["messages"] == [] and got["replace"] is False
    assert list(got["models"]) == ["segment_anything"] and got["models"]["segment_anything"]["display_name"]
    ref = samfast_pkg.SamPredictor(samfast_pkg.load(tiny_checkpoint, device="cpu"))
    ref.set_image(rgb("dog.jpg"))
    shapes = got["shapes"]
    assert shapes and all(s["label"] == "AUTOLABEL_OBJECT" and s["shape_type"] == "polygon" for s in shapes)
    for box in ([100, 90, 600, 500], [300, 50, 700, 300]):  # (a mask per box, the points with each)
        masks, scores, _ = ref.predict(point_coords=np.array([[400, 260], [120, 80]]), point_labels=np.array([1, 0]),
                                       box=np.array(box), multimask_output=False)
        mine = [s["points"] for s in shapes if s["score"] == pytest.approx(float(scores[0]), abs=1e-6)]
        assert mine, "no polygon has this box's mask score"
        # The polygons (outer contours, the smallest left out) lie in the mask and hold most of it.
        polygons, want = filled(mine, masks[0].shape), outer_fill(masks[0])
        assert (polygons & want).sum() >= 0.99 * polygons.sum()
        assert (polygons & want).sum() >= 0.9 * want.sum()


def test_wrong_token_is_shown(server):
    got = run_client(server, "wrong", IMAGES / "dog.jpg", [{"type": "point", "data": [400, 260], "label": 1}])
    assert got["shapes"] == [] and any("401" in m for m in got["messages"])


def test_bad_marks_are_refused(server):
    import httpx
    image = "data:image/jpeg;base64," + base64.b64encode((IMAGES / "dog.jpg").read_bytes()).decode()

    def post(marks, **params):
        return httpx.post(f"{server}/v1/predict", headers={"Token": "s3cret"}, timeout=120,
                          json={"model": "segment_anything", "image": image, "params": {"marks": marks, **params}})
    click = {"type": "point", "data": [400, 260], "label": 1}
    for label in (None, {}, 2**40, 5):  # (2**40 once became 0, a background point)
        r = post([{**click, "label": label}])
        assert r.status_code == 422 and "label" in r.json()["detail"], (label, r.text)
    for epsilon in ([1], -1, 1e308, float("nan"), "0.1"):
        r = post([click], epsilon_factor=epsilon)
        assert r.status_code == 422 and "epsilon_factor" in r.json()["detail"], (epsilon, r.text)
    assert post([click], epsilon_factor=None).json()["success"]  # (null: the default)
    # More rectangles than the server's pending requests once answered 503 on every retry.
    rectangle = {"type": "rectangle", "data": [100, 90, 600, 500], "label": 1}
    r = post([rectangle] * 17)
    assert r.status_code == 422 and "17 rectangles are past the limit of 16" in r.json()["detail"]
