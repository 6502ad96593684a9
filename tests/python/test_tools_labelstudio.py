"""Label Studio's ML backend (samfast.server.tools.labelstudio).

- The brush RLE against label_studio_converter's own mask2rle, byte for byte.
- The requests Label Studio 1.23.2 sent an ML backend (captured from a real run: health, setup with
  its address and token, predict with a keypoint context) replayed against the server, with a
  stand-in for Label Studio's file server: the brushlabels answer decodes, with Label Studio's own
  decoder, to the library's mask.
- Hostile or broken input against stand-in hosts: addresses and redirects other than http(s)
  refused (no file of samfast's own disk is read), the token kept on Label Studio's address, one
  relative URL on two hosts giving each its own image, a trickling host answered 504 within
  --timeout, images past the size limit, malformed tasks and contexts answered 422.
- End to end (when scripts/setup.sh has made build/labelstudio-venv): a real Label Studio on
  loopback with a project (BrushLabels + smart KeyPointLabels and RectangleLabels), an uploaded
  image and samfast connected as its ML backend through its own API; interactive predictions for a
  keypoint and a rectangle; the brush annotation Label Studio stores decodes to samfast's mask.
ref: HumanSignal/label-studio label_studio/ml/models.py, api_connector.py, ml/api.py
     (interactive-annotating); label-studio-ml-backend examples/segment_anything_model/model.py"""
import base64
import contextlib
import http.server
import io
import json
import os
import secrets
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from conftest import IMAGES, rgb, venv_command
from test_server import free_port, running_server

brush = pytest.importorskip("label_studio_converter.brush",
                            reason="Label Studio's RLE oracle needs label-studio-converter (scripts/setup.sh)")
requests = pytest.importorskip("requests")

LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="brush" toName="image">
    <Label value="Dog" background="#FF0000"/>
  </BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true">
    <Label value="Dog" smart="true" background="#00FF00" showInline="true"/>
  </KeyPointLabels>
  <RectangleLabels name="rect" toName="image" smart="true">
    <Label value="Dog" background="#0000FF" showInline="true"/>
  </RectangleLabels>
</View>"""


def keypoint(x, y, positive=True, width=800, height=534):
    """A smart keypoint as Label Studio's editor sends it in the interactive context."""
    return {"original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["Dog"]}, "is_positive": positive,
            "id": secrets.token_hex(3), "from_name": "kp", "to_name": "image", "type": "keypointlabels",
            "origin": "manual"}


def rectangle(x, y, w, h, width=800, height=534):
    return {"original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": ["Dog"]},
            "id": secrets.token_hex(3), "from_name": "rect", "to_name": "image", "type": "rectanglelabels",
            "origin": "manual"}


def expected_mask(samfast_pkg, checkpoint, name, context):
    """The library's mask for a context, read as the SAM example reads it (integer pixels, multimask off)."""
    ref = samfast_pkg.SamPredictor(samfast_pkg.load(checkpoint, device="cpu"))
    image = rgb(name)
    ref.set_image(image)
    h, w = image.shape[:2]
    points = [[int(c["value"]["x"] * w / 100), int(c["value"]["y"] * h / 100)] for c in context
              if c["type"] == "keypointlabels"]
    labels = [int(c["is_positive"]) for c in context if c["type"] == "keypointlabels"]
    box = None
    for c in context:
        if c["type"] == "rectanglelabels":
            v = c["value"]
            x, y = v["x"] * w / 100, v["y"] * h / 100
            box = np.array([int(x), int(y), int(x + v["width"] * w / 100), int(y + v["height"] * h / 100)])
    masks, scores, _ = ref.predict(point_coords=np.array(points) if points else None,
                                   point_labels=np.array(labels) if labels else None, box=box,
                                   multimask_output=False)
    return masks[0], float(scores[0])


def decoded(result, height, width):
    """A brushlabels result's mask, by label_studio_converter's decode_rle (a pixel is inside where alpha is)."""
    assert result["type"] == "brushlabels" and result["value"]["format"] == "rle"
    return brush.decode_rle(result["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0


def test_brush_rle_is_label_studios(samfast_pkg):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:700, :900]
    for mask in [np.zeros((3, 5), bool), np.ones((300, 300), bool), rng.random((37, 53)) > 0.5,
                 (yy - 300) ** 2 + (xx - 400) ** 2 < 250 ** 2, np.ones((1, 2), bool), np.ones((200, 400), bool)]:
        ours = samfast_pkg._samfast.mask_to_label_studio_rle(mask.view(np.uint8))
        assert list(ours) == brush.mask2rle(mask.astype(np.uint8) * 255)


@contextlib.contextmanager
def file_host(token, files):
    """A stand-in for Label Studio's file server: GET path -> bytes with 'Authorization: Token T'."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers.get("Authorization") == f"Token {token}" and self.path in files
            self.send_response(200 if ok else 401)
            self.end_headers()
            if ok:
                self.wfile.write(files[self.path])

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_captured_requests_replayed(samfast_pkg, tiny_checkpoint):
    """The requests of a real Label Studio 1.23.2 run (scripts, tasks and headers as it sent them)."""
    from fastapi.testclient import TestClient
    from samfast.server import ServerConfig, create_app
    client = TestClient(create_app(samfast_pkg.load(tiny_checkpoint, device="cpu"), ServerConfig(token="s3cret")))
    auth = {"Authorization": "Basic " + base64.b64encode(b"ls:s3cret").decode()}  # (its basic-auth setting)
    token, path = "6cfaaf640ac1491333cad7228e806c8c9045c669", "/data/upload/1/67d83ba6-dog.jpg"
    assert client.get("/labelstudio/health").json()["status"] == "UP"
    with file_host(token, {path: (IMAGES / "dog.jpg").read_bytes()}) as hostname:
        setup = {"project": "1.1796358466", "schema": LABEL_CONFIG, "hostname": hostname, "access_token": token,
                 "extra_params": None}
        assert client.post("/labelstudio/setup", json=setup).status_code == 401
        r = client.post("/labelstudio/setup", json=setup, headers=auth)
        assert r.status_code == 200 and r.json()["model_version"]
        task = {"id": 1, "annotations": [], "file_upload": "67d83ba6-dog.jpg", "drafts": [], "predictions": [],
                "data": {"image": path}, "meta": {}, "created_at": "2026-12-04T04:27:47.330190Z",
                "updated_at": "2026-12-04T04:27:47.330222Z", "allow_skip": True, "inner_id": 1,
                "total_annotations": 0, "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0,
                "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 1,
                "updated_by": None, "comment_authors": []}
        for context in ([keypoint(50.0, 55.0)], [keypoint(50.0, 55.0), keypoint(15.2, 10.7, positive=False),
                                                 rectangle(20.0, 20.0, 40.0, 50.0)]):
            body = {"tasks": [task], "project": "1.1796358466", "label_config": LABEL_CONFIG,
                    "params": {"login": None, "password": None, "context": {"result": context}}}
            r = client.post("/labelstudio/predict", json=body, headers=auth)
            assert r.status_code == 200, r.text
            prediction = r.json()["results"][0]
            result = prediction["result"][0]
            assert (result["from_name"], result["to_name"], result["value"]["brushlabels"]) == ("brush", "image", ["Dog"])
            want, score = expected_mask(samfast_pkg, tiny_checkpoint, "dog.jpg", context)
            assert np.array_equal(decoded(result, 534, 800), want) and want.any()
            assert result["score"] == pytest.approx(score, abs=1e-6) == prediction["score"]
        # no interaction yet (the batch "retrieve predictions"): nothing predicted
        r = client.post("/labelstudio/predict", json={**body, "params": {"context": None}}, headers=auth)
        assert r.json()["results"] == []
        # an image elsewhere than Label Studio is not fetched
        elsewhere = {**body, "tasks": [{**task, "data": {"image": "http://169.254.169.254/latest"}}]}
        r = client.post("/labelstudio/predict", json=elsewhere, headers=auth)
        assert r.status_code == 422 and "Label Studio only" in r.json()["detail"]


@contextlib.contextmanager
def samfast_client(samfast_pkg, tiny_checkpoint, **config):
    """The app on the tiny model, its lifespan run (server errors come back as 500s, not raised)."""
    from fastapi.testclient import TestClient
    from samfast.server import ServerConfig, create_app
    app = create_app(samfast_pkg.load(tiny_checkpoint, device="cpu"), ServerConfig(**config))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@contextlib.contextmanager
def http_host(respond):
    """A local HTTP server answering each GET by respond(handler); yields (its URL, the requests it
    got as (path, Authorization header) pairs)."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            respond(self)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def serve(handler, status, body=b"", headers=()):
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def png(width, height):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def click(client, project, image, context=None, **task):
    body = {"tasks": [{"id": 1, "data": {"image": image}, **task}], "project": project,
            "label_config": LABEL_CONFIG, "params": {"context": {"result": context or [keypoint(50.0, 50.0)]}}}
    return client.post("/labelstudio/predict", json=body)


def size_of(reply):
    assert reply.status_code == 200, reply.text
    result = reply.json()["results"][0]["result"][0]
    return result["original_width"], result["original_height"]


def test_addresses_other_than_http_are_refused(samfast_pkg, tiny_checkpoint):
    """Label Studio's address from /setup or --label-studio-url is http(s) only: a file:// one had
    samfast segment (and, by 415 or 502, tell the existence of) files of its own disk."""
    local = str(IMAGES / "dog.jpg")
    with samfast_client(samfast_pkg, tiny_checkpoint) as client:
        for hostname in ("file://", "file:///", "FILE://localhost", "ftp://127.0.0.1", "data:,x", "gopher://h",
                         "http://", "127.0.0.1:8080", "http://h/\r\nX: 1"):
            r = client.post("/labelstudio/setup", json={"project": "F", "hostname": hostname})
            assert r.status_code == 422 and "must be an http:// or https:// address" in r.json()["detail"], hostname
        r = client.post("/labelstudio/setup", json={"project": "F", "hostname": "http://h:99999"})
        assert r.status_code == 422 and "is not a URL" in r.json()["detail"]
        r = click(client, "F", local)  # (nothing was remembered for the project)
        assert r.status_code == 422 and "address is not known" in r.json()["detail"]
    for address in ("file://", "ftp://127.0.0.1"):
        with samfast_client(samfast_pkg, tiny_checkpoint, label_studio_url=address) as client:
            for image in (local, "file://" + local):
                r = click(client, None, image)
                assert r.status_code == 422 and "must be an http:// or https:// address" in r.json()["detail"]
    with http_host(lambda h: serve(h, 200, (IMAGES / "dog.jpg").read_bytes())) as (url, _):
        with samfast_client(samfast_pkg, tiny_checkpoint, label_studio_url=url) as client:
            r = click(client, None, "file://" + local)
            assert r.status_code == 422 and "Label Studio only" in r.json()["detail"]


def test_redirects_are_http_only_and_keep_the_token_home(samfast_pkg, tiny_checkpoint):
    """Label Studio's redirects (a cloud storage's signed URL) are followed to http(s) only, and its
    token goes to its own address only."""
    dog = (IMAGES / "dog.jpg").read_bytes()
    with http_host(lambda h: serve(h, 200, dog)) as (storage, storage_seen):
        routes = {"/to-file": "file://" + str(IMAGES / "dog.jpg"), "/to-ftp": "ftp://127.0.0.1:9/dog.jpg",
                  "/to-storage": storage + "/signed/dog.jpg", "/moved": "/dog.jpg"}

        def label_studio(h):
            if h.headers.get("Authorization") != "Token t0k":
                serve(h, 401)
            elif h.path in routes:
                serve(h, 302, headers=[("Location", routes[h.path])])
            else:
                serve(h, 200 if h.path == "/dog.jpg" else 404, dog if h.path == "/dog.jpg" else b"")
        with http_host(label_studio) as (url, seen), samfast_client(samfast_pkg, tiny_checkpoint) as client:
            client.post("/labelstudio/setup", json={"project": "R", "hostname": url, "access_token": "t0k"})
            for path in ("/to-file", "/to-ftp"):
                r = click(client, "R", path)
                assert r.status_code == 502, r.text
            assert "http(s) redirects only" in click(client, "R", "/to-ftp").json()["detail"]
            assert size_of(click(client, "R", "/to-storage")) == (800, 534)
            assert storage_seen == [("/signed/dog.jpg", None)]  # (the storage did not get Label Studio's token)
            assert size_of(click(client, "R", "/moved")) == (800, 534)  # (a redirect home keeps it)
            assert seen[-1] == ("/dog.jpg", "Token t0k")


def fake_jwt(claims):
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_personal_access_tokens_and_cloud_storage(samfast_pkg, tiny_checkpoint):
    """Label Studio 1.20+ refuses its legacy tokens (the one /setup gives) unless told otherwise: a
    personal access token (--label-studio-api-key) is exchanged for an access token, sent as Bearer,
    once while it lasts (ref: label_studio_sdk tokens/client_ext.py refresh, io.py _build_headers).
    A cloud storage's image (s3://...) comes from /tasks/ID/presign/ (io.py get_local_path)."""
    dog = (IMAGES / "dog.jpg").read_bytes()
    pat, access = fake_jwt({"token_type": "refresh"}), fake_jwt({"token_type": "access", "exp": time.time() + 600})
    s3 = "s3://bucket/dogs/1.jpg"
    files = {"/ls/data/upload/1/dog.jpg": dog, "/ls/data/upload/1/dog2.jpg": dog,
             "/ls/tasks/7/presign/?fileuri=" + base64.urlsafe_b64encode(s3.encode()).decode(): dog}
    refreshes = []

    class LabelStudioStandIn(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            refreshes.append((self.path, body))
            good = self.path == "/ls/api/token/refresh/" and body == {"refresh": pat}
            serve(self, 200 if good else 401, json.dumps({"access": access} if good else {}).encode())

        def do_GET(self):
            ok = self.headers.get("Authorization") == f"Bearer {access}" and self.path in files
            serve(self, 200 if ok else 401, files[self.path] if ok else b"")

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LabelStudioStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hostname = f"http://127.0.0.1:{server.server_address[1]}/ls"
    try:
        setup = {"project": "P", "hostname": hostname, "access_token": "6cfaaf640ac1491333cad7228e806c8c9045c669"}
        with samfast_client(samfast_pkg, tiny_checkpoint, label_studio_api_key=pat) as client:
            client.post("/labelstudio/setup", json=setup)
            assert size_of(click(client, "P", "/ls/data/upload/1/dog.jpg")) == (800, 534)
            assert size_of(click(client, "P", "/ls/data/upload/1/dog2.jpg")) == (800, 534)
            assert size_of(click(client, "P", s3, id=7)) == (800, 534)
            assert refreshes == [("/ls/api/token/refresh/", {"refresh": pat})]  # (one, for all three)
            r = click(client, "P", "gs://bucket/dog.jpg", id=None)
            assert r.status_code == 422 and "by the task's id: the task has none" in r.json()["detail"], r.text
        with samfast_client(samfast_pkg, tiny_checkpoint) as client:  # (/setup's legacy token alone: refused)
            client.post("/labelstudio/setup", json=setup)
            r = click(client, "P", "/ls/data/upload/1/dog.jpg")
            assert r.status_code == 502 and "give samfast-server a personal access token" in r.json()["detail"]
    finally:
        server.shutdown()
        server.server_close()


def test_same_relative_url_on_two_hosts(samfast_pkg, tiny_checkpoint):
    """Two Label Studio hosts (projects) with an image under one relative URL: each gets its own
    image's mask, and a second click on either is answered without a download."""
    big, small = (IMAGES / "dog.jpg").read_bytes(), png(96, 64)
    with http_host(lambda h: serve(h, 200, big)) as (url_a, seen_a), \
            http_host(lambda h: serve(h, 200, small)) as (url_b, seen_b), \
            samfast_client(samfast_pkg, tiny_checkpoint) as client:
        for project, url in (("A", url_a), ("B", url_b)):
            client.post("/labelstudio/setup", json={"project": project, "hostname": url, "access_token": "t"})
        for _ in range(2):
            assert size_of(click(client, "A", "/img.jpg")) == (800, 534)
            assert size_of(click(client, "B", "/img.jpg", [keypoint(50.0, 50.0, width=96, height=64)])) == (96, 64)
        assert len(seen_a) == len(seen_b) == 1
        # an absolute URL on host A names the same image as the relative one: no download either
        assert size_of(click(client, "A", url_a + "/img.jpg")) == (800, 534) and len(seen_a) == 1


def trickle(status_line_only):
    """A host that sends one byte every 0.1 s, of its headers or of its body, for at most 20 s (so
    that a server without a deadline still answers, late); .ended is set once it stops sending,
    when samfast has dropped the connection."""
    ended = threading.Event()

    def respond(h):
        try:
            if status_line_only:
                h.wfile.write(b"HTTP/1.1 200 OK\r\n")
                pending = b"Content-Type: image/jpeg\r\n" * 10
            else:
                h.send_response(200)
                h.send_header("Content-Length", "100000")
                h.end_headers()
                pending = b"\xff" * 200
            for byte in pending:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(0.1)
        except OSError:  # (samfast shut the connection)
            pass
        finally:
            ended.set()
    return respond, ended


@pytest.mark.parametrize("status_line_only", [False, True], ids=["body", "headers"])
def test_slow_host_answered_within_the_timeout(samfast_pkg, tiny_checkpoint, status_line_only):
    """A host trickling an image (a socket timeout bounds each read, not the download) is answered
    504 within the server's --timeout (1 s here), and samfast drops the connection."""
    respond, ended = trickle(status_line_only)
    with http_host(respond) as (url, _), samfast_client(samfast_pkg, tiny_checkpoint, request_timeout_s=1.0,
                                                         label_studio_url=url) as client:
        start = time.monotonic()
        r = click(client, None, "/slow.jpg")
        took = time.monotonic() - start
        assert r.status_code == 504 and "did not arrive from Label Studio within" in r.json()["detail"], r.text
        # (the deadline's, not the host's ~20 s: the bound is loose so that a busy machine passes)
        assert 0.9 < took < 15.0, took
        assert ended.wait(5), "samfast still holds the slow host's connection"


def test_image_past_the_size_limit(samfast_pkg, tiny_checkpoint):
    """An image past max_upload_bytes: 413, whether its length is declared or not."""
    dog = (IMAGES / "dog.jpg").read_bytes()

    def respond(h):
        if h.path == "/declared.jpg":
            serve(h, 200, dog)
        else:  # (no Content-Length: the body ends with the connection)
            h.send_response(200)
            h.end_headers()
            h.wfile.write(dog)
    with http_host(respond) as (url, _), samfast_client(samfast_pkg, tiny_checkpoint, max_upload_bytes=50000,
                                                         label_studio_url=url) as client:
        for path in ("/declared.jpg", "/undeclared.jpg"):
            r = click(client, None, path)
            assert r.status_code == 413 and "past the limit of 50000" in r.json()["detail"], r.text


def test_bad_requests_answer_4xx(samfast_pkg, tiny_checkpoint):
    """Malformed tasks, contexts, coordinates and URLs: a 422 that says what is wrong, never a 500."""
    dog = (IMAGES / "dog.jpg").read_bytes()
    images = {"/img.jpg": dog, "/my%20dog.jpg": dog, "/caf%C3%A9.jpg": dog}
    with http_host(lambda h: serve(h, 200 if h.path in images else 404, images.get(h.path, b""))) as (url, _), \
            samfast_client(samfast_pkg, tiny_checkpoint, label_studio_url=url) as client:
        def rejected(reply, says):
            assert reply.status_code == 422 and says in reply.json()["detail"], reply.text

        for data in (None, "x", [1]):
            body = {"tasks": [{"data": data}], "label_config": LABEL_CONFIG,
                    "params": {"context": {"result": [keypoint(50.0, 50.0)]}}}
            rejected(client.post("/labelstudio/predict", json=body), "the task's data must be an object")
        for result in (5, "x", {"x": 1}):
            body = {"tasks": [{"data": {"image": "/img.jpg"}}], "label_config": LABEL_CONFIG,
                    "params": {"context": {"result": result}}}
            rejected(client.post("/labelstudio/predict", json=body), "params.context.result must be a list")
        for x in (1e308, float("inf"), float("nan")):
            rejected(click(client, None, "/img.jpg", [keypoint(x, 50.0)]), "is not a finite number")
        rejected(click(client, None, "/img.jpg", [rectangle(10.0, 10.0, 1e308, 5.0)]), "is not a finite number")
        rejected(click(client, None, "/img.jpg", ["kp"]), "is not a keypoint or a rectangle")
        for image in ("/img.jpg?\r\nX-Injected: 1", "/img.jpg\n", "/img\x00.jpg"):
            rejected(click(client, None, image), "has control characters")
        # spaces and non-ASCII in a path are quoted, as Label Studio's own client (requests) does
        assert size_of(click(client, None, "/my dog.jpg")) == (800, 534)
        assert size_of(click(client, None, "/café.jpg")) == (800, 534)


class LabelStudio:
    """A fresh Label Studio on loopback in its default setup (legacy tokens off: the one /setup hands
    an ML backend is refused), its first user from the environment, stopped with its process group.
    The test talks to it as that user, logged in; login() also makes the user's personal access token."""

    def __init__(self, label_studio, data_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update({"LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "LABEL_STUDIO_USERNAME": "test@example.com",
                    "LABEL_STUDIO_PASSWORD": "test12345",
                    "ML_BLOCK_LOCAL_IP": "false",  # (1.23 refuses ML backends on 127.0.0.1 by default)
                    "SSRF_PROTECTION_ENABLED": "false", "COLLECT_ANALYTICS": "false", "DJANGO_DB": "sqlite",
                    # (nothing off loopback: no version check on PyPI, no error reports)
                    "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""})
        self.log = open(data_dir / "label_studio.log", "w")
        self.proc = subprocess.Popen([label_studio, "start", "--no-browser", "--internal-host", "127.0.0.1",
                                      "--port", str(self.port)], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, process_group=0)  # (stop() signals the group)
        import httpx
        self.user = httpx.Client(follow_redirects=True, timeout=120)  # (the first user's cookies and CSRF header)

    def wait(self, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            assert self.proc.poll() is None, f"Label Studio exited: see {self.log.name}"
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise AssertionError(f"Label Studio did not come up in {seconds} s: see {self.log.name}")

    def login(self) -> str:
        """Logs the first user in (as the web page does: a form with its CSRF token) and returns a new
        personal access token of the user."""
        u = self.user
        u.get(self.url + "/user/login/")
        u.post(self.url + "/user/login/", data={"email": "test@example.com", "password": "test12345",
                                                "csrfmiddlewaretoken": u.cookies.get("csrftoken")},
               headers={"Referer": self.url + "/user/login/"})
        u.headers.update({"X-CSRFToken": u.cookies.get("csrftoken"), "Referer": self.url})
        return self.api("POST", "/api/token/")["token"]

    def api(self, method, path, **kw):
        r = self.user.request(method, self.url + path, **kw)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else None

    def stop(self):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()
        self.user.close()


def test_label_studio_end_to_end(samfast_pkg, tiny_checkpoint, tmp_path):
    label_studio = venv_command("labelstudio-venv", "label-studio", "SAMFAST_LABEL_STUDIO")
    ls = LabelStudio(label_studio, tmp_path)
    try:
        ls.wait(240)
        personal_token = ls.login()
        # (with front-end processes: the replay above covers the one-process server)
        with running_server(samfast_pkg, tiny_checkpoint, "--token", "s3cret", "--workers", "2",
                            env={"LABEL_STUDIO_API_KEY": personal_token}) as (samfast_url, _):
            project = ls.api("POST", "/api/projects", json={"title": "samfast", "label_config": LABEL_CONFIG})["id"]
            with open(IMAGES / "dog.jpg", "rb") as f:
                ls.api("POST", f"/api/projects/{project}/import", files={"file": ("dog.jpg", f, "image/jpeg")})
            tasks = ls.api("GET", f"/api/tasks?project={project}")
            task = (tasks["tasks"] if isinstance(tasks, dict) else tasks)[0]["id"]
            # samfast as the project's ML backend, with basic auth (the token as the password)
            backend = ls.api("POST", "/api/ml", json={
                "url": samfast_url + "labelstudio", "project": project, "is_interactive": True, "title": "samfast",
                "auth_method": "BASIC_AUTH", "basic_auth_user": "ls", "basic_auth_pass": "s3cret"})
            assert backend["state"] == "CO", backend  # (connected: its health and setup answered)
            for context in ([keypoint(50.0, 55.0)], [rectangle(20.0, 20.0, 40.0, 50.0)]):
                # what Label Studio's editor asks for a smart-tool interaction
                answer = ls.api("POST", f"/api/ml/{backend['id']}/interactive-annotating",
                                json={"task": task, "context": {"result": context}})
                assert "data" in answer, answer
                result = answer["data"]["result"][0]
                want, _ = expected_mask(samfast_pkg, tiny_checkpoint, "dog.jpg", context)
                assert np.array_equal(decoded(result, 534, 800), want) and want.any()
            # the brush mask kept as an annotation, read back from Label Studio
            saved = ls.api("POST", f"/api/tasks/{task}/annotations", json={"result": [result]})
            stored = ls.api("GET", f"/api/annotations/{saved['id']}")["result"][0]
            assert np.array_equal(decoded(stored, 534, 800), want)
    finally:
        ls.stop()
