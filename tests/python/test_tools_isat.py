"""ISAT's remote SAM backend (samfast.server.tools.isat) on a live server: ISAT's own client code
(isat-sam, in build/isat-venv) and the request it sends reproduced (requests, multipart of the raw
pixels) get the features ISAT decodes itself: equal to the library's embedding, with upstream's
original and input sizes.
ref: yatengLG/ISAT_with_segment_anything ISAT/widgets/mainwindow.py SegAnyThread.sam_encoder,
     ISAT/widgets/remote_sam_dialog.py"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import IMAGES, rgb, venv_command
from test_server import running_server

requests = pytest.importorskip("requests", reason="ISAT's client sends its requests with requests")


@pytest.fixture(scope="module", params=["1", "2"], ids=["one process", "front ends"])
def server(request, samfast_pkg, tiny_checkpoint):
    with running_server(samfast_pkg, tiny_checkpoint, "--workers", request.param) as (url, _):
        yield url.rstrip("/")


def encode(url, image, **override):
    """ISAT's request (mainwindow.py sam_encoder): the pixels' bytes as a file part named "" and
    their dtype and shape as form fields."""
    shape = ",".join(map(str, image.shape))
    return requests.post(url=f"{url}/api/encode", files={"file": ("", image.tobytes(), "application/octet-stream")},
                         data={"dtype": image.dtype.name, "shape": shape, **override}, timeout=120)


def test_isat_connects_and_encodes(samfast_pkg, tiny_checkpoint, server):
    info = requests.get(f"{server}/api/info", timeout=10)  # (remote_sam_dialog.py: the connect check)
    assert info.status_code == 200
    assert all(isinstance(info.json()[k], str) for k in ("checkpoint", "device", "dtype"))
    image = rgb("groceries.jpg")
    r = encode(server, image)
    assert r.status_code == 200, r.text
    data = json.loads(r.content)  # (ISAT: orjson.loads, then torch.tensor(features, dtype=float32))
    features = np.array(data["features"], dtype=np.float32)
    ref = samfast_pkg.SamPredictor(samfast_pkg.load(tiny_checkpoint, device="cpu"))
    ref.set_image(image)
    assert np.array_equal(features, ref.get_image_embedding())
    assert data["original_size"] == list(ref.original_size) and data["input_size"] == list(ref.input_size)


def test_bad_encodes(server):
    image = rgb("dog.jpg")
    assert encode(server, image, shape="534,800").status_code == 422
    assert encode(server, image, shape="a,b,c").status_code == 422
    assert encode(server, image, dtype="float32").status_code == 422
    assert encode(server, image[:10]).status_code == 200
    r = encode(server, image[:10], shape="11,800,3")
    assert r.status_code == 422 and "24000 bytes, not the 26400 bytes" in r.json()["detail"]
    # (a longer upload is read no further than the shape's bytes: once it was held in memory whole)
    r = encode(server, image, shape="10,800,3")
    assert r.status_code == 422 and "more than the 24000 bytes" in r.json()["detail"]


def test_isat_client(samfast_pkg, tiny_checkpoint, server, tmp_path):
    python = venv_command("isat-venv", "python", "SAMFAST_ISAT_PYTHON")
    host, port = server.split("//")[1].split(":")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    client = Path(__file__).resolve().parent / "clients" / "isat_client.py"
    done = subprocess.run([python, str(client), host, port, str(IMAGES / "truck.jpg"), str(tmp_path / "got.npz")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "got.npz")
    ref = samfast_pkg.SamPredictor(samfast_pkg.load(tiny_checkpoint, device="cpu"))
    ref.set_image(rgb("truck.jpg"))
    assert got["features"].dtype == np.float32 and np.array_equal(got["features"], ref.get_image_embedding())
    assert list(got["original_size"]) == list(ref.original_size) and list(got["input_size"]) == list(ref.input_size)
