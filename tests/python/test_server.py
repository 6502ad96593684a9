"""samfast.server against the library's own results (CPU, tiny synthetic checkpoint): upload, predict
(PNG and COCO RLE, mask inputs), segment everything, the embedding .npy, health and metrics; bad input
as JSON 4xx, never a 500; the samfast-server command on loopback. The API's tests run twice: on the
app in this process, and on samfast-server --workers 2 (front-end processes before a model process)."""
import base64
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import IMAGES, rgb

pytest.importorskip("fastapi", reason="the server needs fastapi (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def sam(samfast_pkg, tiny_checkpoint):
    return samfast_pkg.load(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module", params=["one process", "front ends"])
def client(request, samfast_pkg, tiny_checkpoint, sam):
    if request.param == "one process":
        from fastapi.testclient import TestClient
        from samfast.server import create_app
        yield TestClient(create_app(sam))
        return
    import httpx
    with running_server(samfast_pkg, tiny_checkpoint, "--workers", "2") as (url, _):
        with httpx.Client(base_url=url, timeout=60) as c:
            yield c


@pytest.fixture(scope="module")
def dog_id(client):
    r = client.post("/v1/images", files={"file": ("dog.jpg", (IMAGES / "dog.jpg").read_bytes())})
    assert r.status_code == 200, r.text
    assert r.json()["width"] == 800 and r.json()["height"] == 534
    return r.json()["id"]


def png_mask(b64):
    from PIL import Image
    return np.array(Image.open(io.BytesIO(base64.b64decode(b64)))) > 0


def test_predict_equals_the_library(samfast_pkg, sam, client, dog_id):
    ref = samfast_pkg.SamPredictor(sam)
    ref.set_image(rgb("dog.jpg"))
    want_masks, want_scores, want_low = ref.predict(point_coords=np.array([[400, 260]]), point_labels=np.array([1]))
    r = client.post(f"/v1/images/{dog_id}/predict", json={"points": [[400, 260]], "labels": [1],
                                                           "return_low_res_logits": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert np.allclose(body["scores"], want_scores, atol=0, rtol=0)
    assert len(body["masks"]) == 3
    for m, want in zip(body["masks"], want_masks):
        assert np.array_equal(png_mask(m["png"]), want)
    low = np.load(io.BytesIO(base64.b64decode(body["low_res_logits"])))
    assert np.array_equal(low, want_low[np.argmax(want_scores)][None])
    # the low-res logits fed back, a box, COCO RLE out
    r = client.post(f"/v1/images/{dog_id}/predict", json={"points": [[400, 260], [420, 300]], "labels": [1, 0],
                                                           "box": [100, 100, 600, 500],
                                                           "mask_input": body["low_res_logits"],
                                                           "multimask_output": False, "format": "rle"})
    assert r.status_code == 200, r.text
    want = ref.predict(point_coords=np.array([[400, 260], [420, 300]]), point_labels=np.array([1, 0]),
                       box=np.array([100, 100, 600, 500]), mask_input=low, multimask_output=False)
    from samfast.utils.amg import coco_encode_rle, mask_to_rle_pytorch
    assert [m["rle"] for m in r.json()["masks"]] == [coco_encode_rle(x) for x in mask_to_rle_pytorch(want[0])]


def test_upload_forms_and_cache(client, dog_id):
    data = (IMAGES / "dog.jpg").read_bytes()
    r = client.post("/v1/images/base64", json={"image_base64": base64.b64encode(data).decode()})
    assert r.status_code == 200 and r.json()["id"] == dog_id and r.json()["cached"] is True
    metrics = client.get("/metrics").text
    assert 'samfast_embedding_cache_total{result="hit"}' in metrics
    assert 'samfast_requests_total{endpoint="/v1/images/base64",status="200"}' in metrics
    assert "samfast_request_seconds_bucket" in metrics and "samfast_pending_requests" in metrics
    assert 'samfast_device_memory_bytes{kind="peak"} 0.0' in metrics  # (the CPU: no device memory)
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu" and health["images_cached"] >= 1


def test_everything_and_embedding_equal_the_library(samfast_pkg, sam, client, dog_id):
    opts = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    r = client.post(f"/v1/images/{dog_id}/everything", json=opts)
    assert r.status_code == 200, r.text
    want = samfast_pkg.SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **opts).generate(rgb("dog.jpg"))
    assert r.json()["records"] == want and len(want) > 5
    r = client.get(f"/v1/images/{dog_id}/embedding")
    assert r.status_code == 200
    emb = np.load(io.BytesIO(r.content))
    ref = samfast_pkg.SamPredictor(sam)
    ref.set_image(rgb("dog.jpg"))
    assert emb.dtype == np.float32 and emb.shape == (1, 256, 64, 64)
    assert np.array_equal(emb, np.asarray(ref.get_image_embedding()))


@pytest.mark.parametrize("body,code,words", [
    ({"points": [[4000, 260]], "labels": [1]}, 422, "outside"),
    ({"points": [[10, 10]], "labels": [1, 0]}, 422, "label per point"),
    ({"points": [[10, 10]]}, 422, "label per point"),
    ({}, 422, "points, a box or a mask"),
    ({"box": [1, 2, 3]}, 422, ""),
    ({"points": [[1, 1]] * 65, "labels": [1] * 65}, 422, "limit"),
    ({"mask_input": "not base64!", "points": [[1, 1]], "labels": [1]}, 422, "mask_input"),
    ({"points": [[10, 10]], "labels": [1], "format": "svg"}, 422, ""),
    ({"points": [["a", 10]], "labels": [1]}, 422, ""),
    ({"points": [], "labels": []}, 422, "points, a box or a mask"),
    ({"points": [[1e300, 10]], "labels": [1]}, 422, "finite numbers"),
    ({"mask_input": (10**6, 10**6), "points": [[1, 1]], "labels": [1]}, 422, "(1, 256, 256)"),
    ({"mask_input": (1, 256, 256), "points": [[1, 1]], "labels": [1]}, 422, "mask_input"),
])
def test_bad_predict_requests(client, dog_id, body, code, words):
    if isinstance(body.get("mask_input"), tuple):  # a .npy header alone, claiming that shape
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                                   "shape": body["mask_input"]})
        body = {**body, "mask_input": base64.b64encode(buf.getvalue()).decode()}
    r = client.post(f"/v1/images/{dog_id}/predict", json=body)
    assert r.status_code == code, r.text
    assert words in str(r.json()["detail"])


def test_bad_uploads_and_unknown_ids(sam, client):
    from fastapi.testclient import TestClient
    from samfast.server import ServerConfig, create_app
    r = client.post("/v1/images", files={"file": ("x.jpg", b"not an image")})
    assert r.status_code == 415 and "not a readable image" in r.json()["detail"]
    assert client.post("/v1/images", files={"file": ("x.jpg", b"")}).status_code == 422
    assert client.post("/v1/images/base64", json={"image_base64": "%%%"}).status_code == 422
    r = client.post("/v1/images/" + "0" * 64 + "/predict", json={"points": [[1, 1]], "labels": [1]})
    assert r.status_code == 404 and "upload it" in r.json()["detail"]
    assert client.get("/v1/images/nope/embedding").status_code == 404
    small = TestClient(create_app(sam, ServerConfig(max_upload_bytes=1000, max_pixels=100 * 100)))
    assert small.post("/v1/images", files={"file": ("d.jpg", (IMAGES / "dog.jpg").read_bytes())}).status_code == 413
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (200, 100)).save(buf, "PNG")
    small = TestClient(create_app(sam, ServerConfig(max_pixels=100 * 100)))
    r = small.post("/v1/images", files={"file": ("big.png", buf.getvalue())})
    # (the decoder's words: refused from the header, before 200x100 pixels were decoded)
    assert r.status_code == 413 and "200x100 = 20000 pixels, more than the limit of 10000" in r.json()["detail"]


def test_token_and_busy(sam):
    from fastapi.testclient import TestClient
    from samfast.server import ServerConfig, create_app
    c = TestClient(create_app(sam, ServerConfig(token="s3cret")))
    data = (IMAGES / "truck.jpg").read_bytes()
    assert c.post("/v1/images", files={"file": ("t.jpg", data)}).status_code == 401
    assert c.post("/v1/images", files={"file": ("t.jpg", data)},
                  headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/health").status_code == 200  # (health and metrics stay open for probes)
    ok = c.post("/v1/images", files={"file": ("t.jpg", data)}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    busy = TestClient(create_app(sam, ServerConfig(max_pending=0)))
    r = busy.post("/v1/images", files={"file": ("t.jpg", data)})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/images", "/v1/images/{image_id}/predict", "/v1/images/{image_id}/everything",
            "/v1/images/{image_id}/embedding", "/health", "/metrics"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(samfast_pkg, checkpoint, *args, env=None):
    """samfast-server (python -m samfast.server) on a free loopback port, up within 60 s, stopped after."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(samfast_pkg.__file__)), **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "samfast.server", "--checkpoint", str(checkpoint), "--device", "cpu",
                             "--port", str(port), *args], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.time() < deadline, "the server did not come up in 60 s"
                time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_server_command_on_loopback(samfast_pkg, tiny_checkpoint):
    """samfast-server starts, serves on 127.0.0.1 only, and stops."""
    with running_server(samfast_pkg, tiny_checkpoint) as (url, _):
        with urllib.request.urlopen(url + "docs", timeout=5) as r:
            assert r.status == 200
        port = url.rsplit(":", 1)[1].strip("/")
        lines = os.popen(f"ss -ltn 2>/dev/null | grep ':{port} '").read().splitlines()
        assert all("127.0.0.1" in line for line in lines)


def test_bodies_past_the_upload_limit_are_refused_unread(samfast_pkg, tiny_checkpoint):
    """A body past what any request needs (an image of --max-upload-mb in base64, and 1 MiB) is
    refused by its Content-Length before it is sent, or once that much has streamed in: never read
    whole, which FastAPI does before the token check (300 MB once took the server's RSS up 900 MB)."""
    import http.client
    import httpx
    from conftest import rss_mb
    with running_server(samfast_pkg, tiny_checkpoint, "--max-upload-mb", "1", "--token", "s3cret") as (url, proc):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/v1/images/base64")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(10**12))
        conn.endheaders()  # (and no body)
        r = conn.getresponse()
        assert r.status == 413 and b"past the limit of 2446677 bytes" in r.read()
        conn.close()
        before = rss_mb(proc.pid)

        def chunked():  # no Content-Length: 300 MiB as it comes
            yield b'{"image_base64": "'
            for _ in range(300):
                yield b"A" * 2**20
            yield b'"}'
        try:
            r = httpx.post(url + "v1/images/base64", content=chunked(), headers={"content-type": "application/json"},
                           timeout=60)
            assert r.status_code == 413, r.text
        except httpx.TransportError:  # (the server may close the connection before the client hears the 413)
            pass
        assert rss_mb(proc.pid) - before < 60
        assert httpx.get(url + "health", timeout=10).status_code == 200
        # ISAT's raw pixels are bounded by --max-pixels instead (a 24 MP photo is 72 MB of them)
        import requests  # (ISAT's client: its file part has filename="")
        pixels = np.zeros((1200, 800, 3), np.uint8)  # (2.9 MB, past the 2.4 MB of the bodies above)
        r = requests.post(url + "api/encode", files={"file": ("", pixels.tobytes(), "application/octet-stream")},
                          data={"dtype": "uint8", "shape": "1200,800,3"}, headers={"Authorization": "Bearer s3cret"},
                          timeout=120)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("flag,value,says", [("--max-pixels", "0", "1 or more"), ("--max-batch", "0", "1 or more"),
                                              ("--timeout", "nan", "above 0"), ("--max-upload-mb", "-1", "above 0"),
                                              ("--cache-mb", "-5", "0 or more"), ("--port", "70000", "at most 65535")])
def test_server_command_refuses_bad_limits(samfast_pkg, capsys, flag, value, says):
    """Limits that make no sense stop samfast-server at its start (--max-pixels 0 once answered every
    upload 415, "max_pixels must be positive")."""
    from samfast.server.cli import main
    with pytest.raises(SystemExit) as e:
        main(["--model", "tiny", flag, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{flag} is" in err and says in err, err


def front_ends_of(pid):
    """The server's front-end processes (multiprocessing's spawned children; not its resource tracker)."""
    out = []
    for child in os.popen(f"pgrep -P {pid}").read().split():
        with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                out.append(int(child))
    return out


def wait_until_gone(pid, message):
    """Until the process has exited (gone, or a zombie its killed parent left unreaped), 30 s at most."""
    deadline = time.time() + 30
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z":
        assert time.time() < deadline, message
        time.sleep(0.2)


def test_front_ends_replaced_and_stopped(samfast_pkg, tiny_checkpoint):
    """With --workers 2: every new connection (whichever front end takes it) reaches the one model
    and its cache; a front end that dies is replaced; stopping the server stops them all."""
    import httpx
    with running_server(samfast_pkg, tiny_checkpoint, "--workers", "2") as (url, proc):
        image_id = httpx.post(url + "v1/images", files={"file": ("t.jpg", (IMAGES / "truck.jpg").read_bytes())},
                              timeout=60).json()["id"]
        for _ in range(6):  # (a new connection each)
            r = httpx.post(url + f"v1/images/{image_id}/predict", json={"points": [[50, 60]], "labels": [1]}, timeout=60)
            assert r.status_code == 200, r.text
        front_ends = front_ends_of(proc.pid)
        assert len(front_ends) == 2, front_ends
        victim = front_ends[0]
        os.kill(victim, 9)
        deadline = time.time() + 60
        while victim in front_ends_of(proc.pid) or len(front_ends_of(proc.pid)) < 2:
            assert time.time() < deadline, "the front end was not replaced"
            time.sleep(0.2)
        for _ in range(4):
            r = httpx.post(url + f"v1/images/{image_id}/predict", json={"points": [[50, 60]], "labels": [1]}, timeout=60)
            assert r.status_code == 200, r.text
        metrics = httpx.get(url + "metrics").text  # (the front ends' request counts summed, and the model's)
        count = [l for l in metrics.splitlines()
                 if l.startswith('samfast_requests_total{endpoint="/v1/images/{image_id}/predict",status="200"}')]
        assert count and float(count[0].split()[-1]) >= 10, count
        assert "samfast_pass_seconds_count" in metrics
        left = front_ends_of(proc.pid) + [proc.pid]
    for pid in left:
        wait_until_gone(pid, f"process {pid} did not stop")


def test_front_ends_stop_with_the_model_process(samfast_pkg, tiny_checkpoint):
    """A model process killed outright (no chance to stop its front ends): they see its socket close
    and stop too, rather than holding the port with nothing behind it."""
    with running_server(samfast_pkg, tiny_checkpoint, "--workers", "2") as (url, proc):
        front_ends = front_ends_of(proc.pid)
        assert len(front_ends) == 2
        os.kill(proc.pid, 9)
        proc.wait(timeout=30)
        for pid in front_ends:
            wait_until_gone(pid, f"front end {pid} outlived its model process")
