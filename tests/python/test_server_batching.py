"""The server's model work (CPU, tiny synthetic checkpoint): concurrent uploads share an encoder batch
and concurrent clicks one ragged decode, with the library's results; a bad click fails alone; the
two-tier embedding cache moves embeddings to the host and back and drops images past its bound;
timeouts answer 504; polygon output is OpenCV's contours of the library's mask."""
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import IMAGES, rgb

pytest.importorskip("fastapi", reason="the server needs fastapi (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def sam(samfast_pkg, tiny_checkpoint):
    return samfast_pkg.load(tiny_checkpoint, device="cpu")


def images():
    return [rgb("dog.jpg"), rgb("truck.jpg"), rgb("dog.jpg")[::2, ::3].copy(), rgb("truck.jpg")[100:400].copy()]


def click(samfast_pkg, x, y, multimask=True):
    from samfast.server.batcher import Click
    return Click(np.array([[x, y]], np.float32), np.array([1], np.int32), None, None, multimask)


def test_encoder_batch_equals_set_images(samfast_pkg, sam):
    from samfast import _samfast
    from samfast.server.batcher import Batcher
    native = sam._native_model()
    batcher = Batcher(max_encode_batch=4, max_wait_s=5.0)  # (four arrive well within the wait: one pass)
    futures = [batcher.encode(native, _samfast.prepare_image(native, im)) for im in images()]
    got = [f.result(timeout=120) for f in futures]
    assert batcher.batches["encode"] == [4]
    ref = _samfast.Predictor(native)
    ref.set_images(images())
    for i, p in enumerate(got):
        assert p.image_count == 1 and p.original_size(0) == images()[i].shape[:2]
        assert np.array_equal(p.image_embedding(0), ref.image_embedding(i))
    batcher.close()


def test_ragged_decode_equals_one_click_at_a_time(samfast_pkg, sam):
    from samfast import _samfast
    from samfast.server.batcher import Batcher
    native = sam._native_model()
    predictors = []
    for im in images()[:3]:
        p = _samfast.Predictor(native)
        p.set_image(im)
        predictors.append(p)
    batcher = Batcher()
    gate = threading.Event()
    batcher.run(gate.wait)  # (holds the model's thread until every click is queued: one pass takes them all)
    work = [(predictors[k % 3], click(samfast_pkg, 30 + 7 * k, 40 + 5 * k, multimask=k % 4 != 3)) for k in range(8)]
    work.append((predictors[1], click(samfast_pkg, 5000, 10)))  # outside the image: fails alone
    futures = [batcher.predict(p, c) for p, c in work]
    gate.set()
    for (p, c), f in zip(work[:-1], futures):
        masks, scores, low = f.result(timeout=120)
        want = p.predict(c.points, c.labels, None, None, c.multimask_output, False, 0)
        assert np.allclose(scores, want[1], atol=1e-5) and np.allclose(low, want[2], atol=1e-4)
        assert np.mean(masks != want[0]) < 1e-4  # (float noise may flip a pixel at the threshold)
    with pytest.raises(ValueError, match="outside"):
        futures[-1].result(timeout=60)
    # by form (6 multimask clicks and the bad one, 2 single-mask) in batches of powers of two
    assert batcher.batches["decode"] == [4, 2, 1, 2]
    batcher.close()


def upload(client, data):
    r = client.post("/v1/images", files={"file": ("i.jpg", data)})
    assert r.status_code == 200, r.text
    return r.json()


def jpeg(array):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_concurrent_uploads_share_a_batch(sam):
    from fastapi.testclient import TestClient
    from samfast.server import ServerConfig, create_app
    datas = [jpeg(im) for im in images()]
    with TestClient(create_app(sam, ServerConfig(max_encode_batch=8, max_batch_wait_ms=500))) as client:
        with ThreadPoolExecutor(6) as pool:  # four distinct images and two repeats, at once
            infos = list(pool.map(lambda d: upload(client, d), datas + datas[:2]))
        assert len({i["id"] for i in infos}) == 4
        metrics = client.get("/metrics").text
    # every image encoded once (repeats wait for the first's encode), in fewer passes than images
    passes = float(metrics.split('samfast_batch_size_count{kind="encode"} ')[1].split()[0])
    encoded = float(metrics.split('samfast_batch_size_sum{kind="encode"} ')[1].split()[0])
    assert encoded == 4 and passes < 4, (passes, encoded)


def test_two_tier_cache(samfast_pkg, sam):
    from fastapi.testclient import TestClient
    from samfast.server import ServerConfig, create_app
    one = 256 * 64 * 64 * 4  # (a tiny fp32 model's embedding)
    dog, truck = images()[:2]
    config = ServerConfig(device_cache_bytes=one, host_cache_bytes=dog.nbytes + truck.nbytes + one)
    with TestClient(create_app(sam, config)) as client:
        a, b = upload(client, jpeg(dog))["id"], upload(client, jpeg(truck))["id"]
        moves = lambda: {m: float(client.get("/metrics").text.split(f'samfast_embedding_cache_moves{{move="{m}"}} ')[1].split()[0])
                         for m in ("to_host", "to_device", "dropped")}
        assert moves() == {"to_host": 1, "to_device": 0, "dropped": 0}  # a's embedding went to the host
        r = client.post(f"/v1/images/{a}/predict", json={"points": [[300, 200]], "labels": [1], "format": "rle"})
        assert r.status_code == 200  # a came back to the device (and b went to the host)
        assert moves() == {"to_host": 2, "to_device": 1, "dropped": 0}
        ref = samfast_pkg.SamPredictor(sam)
        ref.set_image(rgb_of_jpeg(jpeg(dog)))
        want = ref.predict(point_coords=np.array([[300, 200]]), point_labels=np.array([1]))
        assert np.allclose(r.json()["scores"], want[1], atol=0, rtol=0)
        c = upload(client, jpeg(images()[2]))["id"]  # past the host bound: the least recently used (b) is dropped
        assert moves()["dropped"] == 1
        assert client.post(f"/v1/images/{b}/predict", json={"points": [[5, 5]], "labels": [1]}).status_code == 404
        assert client.post(f"/v1/images/{c}/predict", json={"points": [[5, 5]], "labels": [1]}).status_code == 200


def rgb_of_jpeg(data):
    from PIL import Image
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def test_timeout_answers_504(sam):
    from fastapi.testclient import TestClient
    from samfast.server import ServerConfig, create_app
    with TestClient(create_app(sam, ServerConfig(request_timeout_s=0.01))) as client:
        r = client.post("/v1/images", files={"file": ("d.jpg", (IMAGES / "truck.jpg").read_bytes())})
        assert r.status_code == 504 and "more than 0.01 s" in r.json()["detail"]


def test_polygons_are_the_masks_contours(samfast_pkg, sam):
    cv2 = pytest.importorskip("cv2")
    from fastapi.testclient import TestClient
    from samfast.server import create_app
    with TestClient(create_app(sam)) as client:
        image_id = upload(client, (IMAGES / "dog.jpg").read_bytes())["id"]
        r = client.post(f"/v1/images/{image_id}/predict", json={"points": [[400, 260]], "labels": [1],
                                                                "format": "polygon"})
        assert r.status_code == 200, r.text
    ref = samfast_pkg.SamPredictor(sam)
    ref.set_image(rgb("dog.jpg"))
    masks, _, _ = ref.predict(point_coords=np.array([[400, 260]]), point_labels=np.array([1]))
    for got, mask in zip(r.json()["masks"], masks):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        assert got["polygons"] == [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
        # filled back, the polygons cover the mask's outer region
        filled = np.zeros(mask.shape, np.uint8)
        cv2.fillPoly(filled, [np.array(p, np.int32).reshape(-1, 2) for p in got["polygons"]], 1)
        assert np.mean(filled[mask.astype(bool)]) > 0.95
