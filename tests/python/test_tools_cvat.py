"""CVAT's SAM interactor (samfast.server.tools.cvat) with requests as CVAT builds them: the
function list read the way CVAT's lambda manager reads it, the embedding blob decoded as cvat-ui's
SAM plugin decodes it, and the server-side mask against the library's predict.
ref: cvat-ai/cvat cvat/apps/lambda_manager/views.py (LambdaGateway, LambdaFunction),
     cvat-ui/plugins/sam/src/ts/index.tsx, serverless/pytorch/facebookresearch/sam/nuclio/main.py"""
import base64
import io
import json

import numpy as np
import pytest

from conftest import IMAGES
from test_server import client, sam  # noqa: F401 (fixtures: the tiny model and its app)

pytest.importorskip("fastapi", reason="the server needs fastapi (scripts/setup.sh installs it)")

# The headers CVAT's LambdaGateway sends the dashboard (views.py _http and invoke, dashboard mode).
NUCLIO_HEADERS = {"x-nuclio-project-name": "cvat", "x-nuclio-function-namespace": "nuclio",
                  "x-nuclio-invoke-via": "domain-name", "X-Nuclio-Invoke-Timeout": "120s"}


def frame_of(name):
    """The frame as CVAT sends it (views.py _get_image: base64 of the frame's file) and as CVAT's
    function opens it (PIL, converted to RGB)."""
    from PIL import Image
    data = (IMAGES / name).read_bytes()
    return base64.b64encode(data).decode(), np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def invoke(client, function, body):
    return client.post("/api/function_invocations", json=body,
                       headers={**NUCLIO_HEADERS, "x-nuclio-function-name": function, "x-nuclio-path": "/"})


def test_cvat_finds_the_functions(client):
    listed = client.get("/api/functions", headers=NUCLIO_HEADERS)
    assert listed.status_code == 200
    for data in listed.json().values():  # (as LambdaFunction.__init__ reads each)
        meta = data["metadata"]["annotations"]
        assert meta["type"] == "interactor" and int(meta.get("version", "1")) >= 2
        assert json.loads(meta.get("spec") or "[]") == []
        assert int(meta.get("min_pos_points", 1)) == 0 and int(meta.get("min_neg_points", -1)) == 0
        assert "startswith_box" not in meta  # (bool("false") would be true)
        assert data["spec"]["description"] and "httpPort" in data["status"]
        assert client.get(f"/api/functions/{data['metadata']['name']}").json() == data
    assert "pth-facebookresearch-sam-vit-h" in listed.json()  # (the id cvat-ui's SAM plugin switches on)
    assert client.get("/api/functions/nope").status_code == 404


def test_the_blob_is_the_embedding(samfast_pkg, sam, client):
    b64, pixels = frame_of("truck.jpg")
    r = invoke(client, "pth-facebookresearch-sam-vit-h",
               {"image": b64, "pos_points": [[500.5, 375.0]], "neg_points": [], "obj_bbox": None})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"blob"}
    # cvat-ui: atob -> Uint8Array -> new Float32Array(buffer) as a [1, 256, 64, 64] tensor
    blob = np.frombuffer(base64.b64decode(r.json()["blob"]), dtype="<f4").reshape(1, 256, 64, 64)
    ref = samfast_pkg.SamPredictor(sam)
    ref.set_image(pixels)
    assert np.array_equal(blob, ref.get_image_embedding())


def test_masks_from_the_server(samfast_pkg, sam, client):
    b64, pixels = frame_of("dog.jpg")
    ref = samfast_pkg.SamPredictor(sam)
    ref.set_image(pixels)
    for body, prompts in [
        ({"pos_points": [[400, 260]], "neg_points": [[120.5, 80]], "obj_bbox": None},
         dict(point_coords=np.array([[400, 260], [120.5, 80]]), point_labels=np.array([1, 0]))),
        # cvat-ui's tools-control.tsx sends clicks without a box as obj_bbox [] (no rectangle drawn)
        ({"pos_points": [[400, 260]], "neg_points": [], "obj_bbox": []},
         dict(point_coords=np.array([[400, 260]]), point_labels=np.array([1]))),
        ({"pos_points": [], "neg_points": [], "obj_bbox": [[100, 90], [600, 500]]},
         dict(box=np.array([100, 90, 600, 500]))),
    ]:
        r = invoke(client, "samfast-sam-mask", {"image": b64, **body})
        assert r.status_code == 200, r.text
        want = ref.predict(**prompts, multimask_output=False)[0][0]
        # tools-control.tsx: the mask is the crop of bounds [xtl, ytl, xbr, ybr], inclusive
        x0, y0, x1, y1 = r.json()["bounds"]
        got = np.zeros_like(want)
        got[y0:y1 + 1, x0:x1 + 1] = np.array(r.json()["mask"], dtype=bool)
        assert want.any() and np.array_equal(got, want)


def test_bad_invocations(sam, client):
    from fastapi.testclient import TestClient
    from samfast.server import ServerConfig, create_app
    b64, _ = frame_of("dog.jpg")
    assert invoke(client, "nope", {"image": b64}).status_code == 404
    assert invoke(client, "samfast-sam-mask", {"image": "%%%"}).status_code == 422
    assert invoke(client, "samfast-sam-mask", {"image": base64.b64encode(b"no image").decode()}).status_code == 415
    r = invoke(client, "samfast-sam-mask", {"image": b64, "obj_bbox": [[1, 2, 3]]})
    assert r.status_code == 422 and "obj_bbox" in r.json()["detail"]
    assert invoke(client, "samfast-sam-mask", {"image": b64}).status_code == 422  # (no prompt)
    assert client.post("/api/function_invocations", json={"image": b64}).status_code == 422  # (no function header)
    # with a token: CVAT's gateway sends none, but a user:TOKEN@host nuclio host gives basic auth
    guarded = TestClient(create_app(sam, ServerConfig(token="s3cret")))
    assert guarded.get("/api/functions").status_code == 401
    basic = "Basic " + base64.b64encode(b"cvat:s3cret").decode()
    assert guarded.get("/api/functions", headers={"Authorization": basic}).status_code == 200
