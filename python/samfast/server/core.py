"""The server's model work, as the routes of every protocol use it (the API's /v1 routes in app.py,
the annotation tools' in tools/): images in (a file or pixels; the id is a content hash), clicks,
embeddings and segment-everything out. All model work runs on one thread (batcher.py): concurrent
uploads share encoder batches and concurrent clicks one ragged decode. Embeddings stay in a two-tier
cache bounded in bytes (cache.py), so a re-upload or a click on a known image never re-encodes.
More work than max_pending is refused with 503 and Retry-After; work past request_timeout_s answers 504."""
import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import hashlib
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from fastapi import HTTPException
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .. import _samfast
from ..automatic_mask_generator import SamAutomaticMaskGenerator
from ..decode import decode_image
from .batcher import Batcher, Click
from .cache import EmbeddingCache, Entry


@dataclass
class ServerConfig:
    token: Optional[str] = None            # bearer token required on /v1 (and the tools' routes) when set
    cors_origins: List[str] = field(default_factory=list)
    max_upload_bytes: int = 50 * 2**20
    max_pixels: int = 100_000_000
    max_prompts: int = 64
    max_everything_points: int = 65536     # grid points over every crop of one segment-everything request
    max_pending: int = 64                  # requests computing or waiting for the model
    request_timeout_s: float = 60.0        # waiting plus computing; past it: 504
    device_cache_bytes: int = 2 * 2**30    # embeddings on the device
    host_cache_bytes: int = 4 * 2**30      # images, and embeddings moved off the device
    max_encode_batch: int = 8              # images in one encoder pass
    max_batch_wait_ms: float = 5.0         # how long an upload waits for others to join its batch
    retry_after_s: int = 1
    label_studio_url: Optional[str] = None      # where Label Studio's task images are downloaded from
    label_studio_api_key: Optional[str] = None  # its token for those downloads


@dataclass
class Added:
    """An image the cache holds: its id (content hash), its size, and whether it was known."""
    id: str
    height: int
    width: int
    cached: bool
    elapsed_ms: float


@dataclass
class ModelInfo:
    """What the routes say of the model (a front-end process has this, not the model)."""
    device: str
    model_type: str
    precision: str
    img_size: int
    low_res_size: int

    @classmethod
    def of(cls, native):
        return cls(native.device, native.model_type, native.precision, native.img_size, native.low_res_size)


class Checks:
    """The checks of a request's prompts and image size that need no model: done where the request
    arrives, in a front-end process too (remote.py). Needs self.config and self.native."""

    def check_pixels(self, height: int, width: int):
        if height * width > self.config.max_pixels:
            raise HTTPException(413, f"image of {width}x{height} pixels is past the limit of {self.config.max_pixels}")

    def click(self, points=None, labels=None, box=None, mask_input=None, multimask_output=True) -> Click:
        """A Click from a request's prompts (lists or arrays; points (x, y) and a box (x0, y0, x1, y1)
        in image pixels), or the 422 that says what is wrong with them."""
        if points is not None and len(points) == 0 and labels is not None and len(labels) == 0:
            points = labels = None  # (empty lists are no points: a box or a mask input must then be given)
        n_points = 0 if points is None else len(points)
        if n_points > self.config.max_prompts:
            raise HTTPException(422, f"{n_points} points are past the limit of {self.config.max_prompts}")
        if (points is None) != (labels is None) or (labels is not None and len(labels) != n_points):
            raise HTTPException(422, "give one label per point")
        if points is not None and any(len(p) != 2 for p in points):
            raise HTTPException(422, "each point is [x, y]")
        if labels is not None and not all(label in (-1, 0, 1) for label in labels):  # (before numpy's int32 wraps 2**40 to 0)
            raise HTTPException(422, "a point's label is 1 (foreground), 0 (background) or -1 (ignored)")
        if box is not None and len(box) != 4:
            raise HTTPException(422, "a box is [x0, y0, x1, y1]")
        if points is None and box is None and mask_input is None:
            raise HTTPException(422, "give points, a box or a mask input")
        low = self.native.low_res_size
        if mask_input is not None and (mask_input.dtype != np.float32 or mask_input.shape != (1, low, low)):
            raise HTTPException(422, f"mask_input must be float32 (1, {low}, {low}), got {mask_input.dtype} "
                                     f"{mask_input.shape}")
        try:
            coords = [np.asarray(v, np.float64).ravel() for v in (points, box) if v is not None]
        except (OverflowError, ValueError, TypeError):
            coords = [np.array([np.inf])]
        if not all(np.isfinite(c).all() and (np.abs(c) < 1e30).all() for c in coords):  # (1e300: finite, but inf in float32)
            raise HTTPException(422, "points and boxes must be finite numbers")
        return Click(points=None if points is None else np.asarray(points, np.float32).reshape(-1, 2),
                     labels=None if labels is None else np.asarray(labels, np.int32),
                     box=None if box is None else np.asarray(box, np.float32),
                     mask_input=mask_input, multimask_output=multimask_output)


class Core(Checks):
    def __init__(self, sam, config: ServerConfig):
        self.sam, self.config = sam, config
        self.native = native = sam._native_model()
        self.registry = registry = CollectorRegistry()
        grid_values = 256 * (native.img_size // 16) ** 2
        self.cache = EmbeddingCache(config.device_cache_bytes, config.host_cache_bytes,
                                    embedding_bytes=grid_values * (4 if native.precision == "fp32" else 2),
                                    host_embedding_bytes=grid_values * 4)
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._encoding = {}  # image id -> the Future of its encode, so that concurrent uploads of one image encode it once
        self._encoding_lock = threading.Lock()
        self._remembered = collections.OrderedDict()  # see remember()
        # Decodes at once, at most one a core: each may hold max_pixels * 3 bytes (300 MB by default)
        # however many uploads arrive together, and more would not decode faster.
        self._decoding = threading.BoundedSemaphore(os.cpu_count() or 4)

        self.queue_depth = Gauge("samfast_pending_requests", "requests computing or waiting for the model",
                                 registry=registry)
        batch_size = Histogram("samfast_batch_size", "requests per model pass", ["kind"], registry=registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64))
        pass_seconds = Histogram("samfast_pass_seconds", "the model thread's time per pass", ["kind"],
                                 registry=registry, buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                                                             0.2, 0.5, 1, 2))
        # Where a click's time goes, to find what is not the model: wait (queued until its pass began),
        # model (its pass, until the handler has the masks); the app observes respond (the masks to the
        # response body), in the process that answers the request.
        predict_stage = Histogram("samfast_predict_stage_seconds", "a predict request's time by stage", ["stage"],
                                  registry=registry, buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01,
                                                              0.02, 0.05, 0.1, 0.25, 1))
        self._waited, self._modelled = (predict_stage.labels(s) for s in ("wait", "model"))
        self._upload_stage = Histogram(
            "samfast_upload_stage_seconds", "an upload's time by stage (decode: the file to pixels; prepare: "
            "resized and normalized; wait: queued for its encoder pass; model: that pass)", ["stage"],
            registry=registry, buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
        self._cache_hits = Counter("samfast_embedding_cache", "image uploads by whether their embedding was cached",
                                   ["result"], registry=registry)
        self._cache_bytes = Gauge("samfast_embedding_cache_bytes", "bytes held by the embedding cache", ["tier"],
                                  registry=registry)
        self._cache_moves = Gauge("samfast_embedding_cache_moves", "embeddings moved between the cache's tiers or "
                                  "dropped", ["move"], registry=registry)
        self._device_memory = Gauge("samfast_device_memory_bytes", "the model's device memory (0 on the CPU)",
                                    ["kind"], registry=registry)

        def on_pass(kind, size, seconds):
            batch_size.labels(kind).observe(size)
            pass_seconds.labels(kind).observe(seconds)
        self.batcher = Batcher(config.max_encode_batch, config.max_batch_wait_ms / 1e3, on_pass=on_pass)

    async def open(self):
        """(Nothing to open: the model is loaded. RemoteCore connects here.)"""

    def close(self):
        self.batcher.close()

    def health(self) -> dict:
        native = self.native
        return {"status": "ok", "device": native.device, "model": native.model_type, "precision": native.precision,
                "images_cached": len(self.cache)}

    def metrics(self) -> bytes:
        """The model's metrics (passes, stages, cache, device memory) in Prometheus' text format."""
        for kind, value in self.native.memory_use().items():
            if kind != "graphs_in_arena":
                self._device_memory.labels(kind).set(value)
        self._cache_bytes.labels("device").set(self.cache.device_used)
        self._cache_bytes.labels("host").set(self.cache.host_used)
        for move, n in self.cache.moves.items():
            self._cache_moves.labels(move).set(n)
        return generate_latest(self.registry)

    async def remember(self, key: str, value):
        """Keeps a client's settings (Label Studio's address for a project, say) where every front end
        finds them (recall); the oldest go past 4096 keys."""
        self._remembered[key] = value
        self._remembered.move_to_end(key)
        while len(self._remembered) > 4096:
            self._remembered.popitem(last=False)

    async def recall(self, key: str):
        return self._remembered.get(key)

    async def known(self, image_id: str) -> bool:
        """Whether the cache holds the image (a click on it needs no upload). (async: asked in the
        event loop before a click, as RemoteCore asks the model process)"""
        return self.cache.get_image(image_id) is not None

    @contextlib.contextmanager
    def slot(self):
        """A place among max_pending; none free answers 503 with Retry-After."""
        with self._pending_lock:
            if self._pending >= self.config.max_pending:
                raise HTTPException(503, f"busy: {self._pending} requests pending",
                                    headers={"Retry-After": str(self.config.retry_after_s)})
            self._pending += 1
            self.queue_depth.set(self._pending)
        try:
            yield
        finally:
            with self._pending_lock:
                self._pending -= 1
                self.queue_depth.set(self._pending)

    def result(self, future: concurrent.futures.Future, started: float):
        """The batcher's answer, or 504 once the request has taken request_timeout_s."""
        try:
            return future.result(timeout=max(0.0, started + self.config.request_timeout_s - time.perf_counter()))
        except concurrent.futures.TimeoutError:
            future.cancel()  # (skipped if still queued)
            raise HTTPException(504, f"the request took more than {self.config.request_timeout_s:g} s") from None
        except concurrent.futures.CancelledError:  # (an upload of the same image timed out while queued)
            raise HTTPException(503, "the work was dropped when another request for it timed out: retry",
                                headers={"Retry-After": str(self.config.retry_after_s)}) from None

    async def awaited(self, future: concurrent.futures.Future, started: float):
        """result() for the event loop: the batcher's answer, or 504 once the request has taken
        request_timeout_s (and its work is dropped if still queued)."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future),
                                          max(0.0, started + self.config.request_timeout_s - time.perf_counter()))
        except asyncio.TimeoutError:
            future.cancel()
            raise HTTPException(504, f"the request took more than {self.config.request_timeout_s:g} s") from None

    @contextlib.contextmanager
    def entry_of(self, image_id):
        with self.cache.use(image_id) as entry:
            if entry is None:
                raise HTTPException(404, f"unknown image id {image_id[:16]}...: upload it first")
            yield entry

    def decode_file(self, data: bytes, exif_orientation: bool = True) -> np.ndarray:
        """An image file's pixels (HxWx3 uint8 RGB; a JPEG's EXIF orientation applied unless told
        not to, as PIL's Image.open does not), or the 4xx that says why not."""
        if len(data) > self.config.max_upload_bytes:
            raise HTTPException(413, f"image of {len(data)} bytes is past the limit of {self.config.max_upload_bytes}")
        if not data:
            raise HTTPException(422, "empty image")
        try:  # (the pixel limit checked from the header: a 250 KB PNG can decode to gigabytes)
            image = decode_image(data, exif_orientation, "the upload", max_pixels=self.config.max_pixels)
        except _samfast.ImageTooLarge as e:
            raise HTTPException(413, str(e)) from None
        except ValueError as e:
            raise HTTPException(415, str(e)) from None
        return image

    def add_image(self, data: bytes, exif_orientation: bool = True, started: Optional[float] = None) -> Added:
        """An image file, decoded and encoded unless known (its id is the file's SHA-256, and a
        mark where the EXIF orientation is not applied). started: when the request began
        (time.perf_counter()), if before this call: its request_timeout_s counts from then."""
        return self._add(hashlib.sha256(data).hexdigest() + ("" if exif_orientation else "-noexif"),
                         lambda: self.decode_file(data, exif_orientation), started)

    def add_pixels(self, image: np.ndarray) -> Added:
        """HxWx3 uint8 RGB pixels, encoded unless known (the id hashes the shape and the pixels)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise HTTPException(422, f"pixels must be HxWx3 uint8, got {image.dtype} {image.shape}")
        self.check_pixels(image.shape[0], image.shape[1])
        digest = hashlib.sha256(repr(image.shape).encode())
        digest.update(np.ascontiguousarray(image).data)
        return self._add(digest.hexdigest(), lambda: image)

    def _add(self, image_id: str, pixels, started: Optional[float] = None) -> Added:
        start = time.perf_counter()
        image = self.cache.get_image(image_id)
        cached = image is not None
        self._cache_hits.labels("hit" if cached else "miss").inc()
        if not cached:
            with self._decoding:
                image = pixels()
            decoded = time.perf_counter()
            self._upload_stage.labels("decode").observe(decoded - start)
            with self.slot():
                with self._encoding_lock:
                    future = self._encoding.get(image_id)
                if future is None:
                    prepared = _samfast.prepare_image(self.native, image)  # (outside the lock: uploads prepare at once)
                    submitted = time.perf_counter()
                    self._upload_stage.labels("prepare").observe(submitted - decoded)
                    with self._encoding_lock:
                        future = self._encoding.get(image_id)  # (the same image may have come meanwhile)
                        if future is None:
                            future = self._encoding[image_id] = self.batcher.encode(self.native, prepared)
                            future.submitted = submitted
                            # (cached when done even if this request has timed out: a retry is then a hit)
                            future.add_done_callback(lambda f: self._encoded(image_id, image, f))
                predictor = self.result(future, start if started is None else started)
            if hasattr(future, "began"):
                self._upload_stage.labels("wait").observe(future.began - future.submitted)
                self._upload_stage.labels("model").observe(time.perf_counter() - future.began)
            self.cache.put(image_id, Entry(predictor, image))
        return Added(image_id, image.shape[0], image.shape[1], cached, (time.perf_counter() - start) * 1e3)

    def _encoded(self, image_id, image, future):
        with self._encoding_lock:
            self._encoding.pop(image_id, None)
        if not future.cancelled() and future.exception() is None:
            self.cache.put(image_id, Entry(future.result(), image))

    async def predict(self, image_id: str, click: Click, started: float, low_res: bool = True):
        """(masks, scores, low-res logits (None unless low_res), (height, width)) of a click on a
        known image: masks as COCO RLE strings if click.rle, else HxW bool arrays. In the event loop: a click's own work is small,
        and the hops between threads (each taking the GIL) were most of a click's time; bringing an
        embedding back from the host tier goes to the thread pool."""
        with self.slot():
            entry = self.cache.pin(image_id, wait=False) or await run_in_threadpool(self.cache.pin, image_id)
            if entry is None:
                raise HTTPException(404, f"unknown image id {image_id[:16]}...: upload it first")
            try:
                submitted = time.perf_counter()
                future = self.batcher.predict(entry.predictor, click)
                masks, scores, logits = await self.awaited(future, started)
            finally:
                self.cache.unpin(entry)
        self._waited.observe(future.began - submitted)
        self._modelled.observe(time.perf_counter() - future.began)
        return masks, scores, logits if low_res else None, entry.image.shape[:2]

    def embedding(self, image_id: str) -> np.ndarray:
        """The image embedding as upstream's get_image_embedding() gives it: float32 (1, 256, 64, 64)."""
        start = time.perf_counter()
        with self.slot(), self.entry_of(image_id) as entry:
            emb = self.result(self.batcher.run(lambda: entry.predictor.image_embedding(0)), start)
        return np.ascontiguousarray(emb, dtype=np.float32)

    def everything(self, image_id: str, options: dict) -> list:
        """Upstream's segment-everything records (COCO RLE) of a known image, generator options as
        SamAutomaticMaskGenerator takes them."""
        start = time.perf_counter()
        image = self.cache.get_image(image_id)
        if image is None:
            raise HTTPException(404, f"unknown image id {image_id[:16]}...: upload it first")
        points = everything_points(options)
        if points > self.config.max_everything_points:
            raise HTTPException(422, f"{points} grid points over every crop are past the limit of "
                                     f"{self.config.max_everything_points}: fewer points_per_side or crop layers")
        generator = SamAutomaticMaskGenerator(self.sam, output_mode="coco_rle", **options)
        with self.slot():
            records = self.result(self.batcher.run(lambda: generator.generate(image)), start)
        for r in records:
            r["predicted_iou"], r["stability_score"] = finite(r["predicted_iou"]), finite(r["stability_score"])
        return records


def base64_file(text: str, max_bytes: int, name: str) -> bytes:
    """A base64 string's bytes (a data: URI's too), or the 413/422 that says why not."""
    if text.startswith("data:") and "," in text[:256]:
        text = text.split(",", 1)[1]
    if len(text) > max_bytes * 4 // 3 + 4:
        raise HTTPException(413, f"{name} is past the limit of {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise HTTPException(422, f"{name} is not valid base64") from None


def everything_points(options) -> int:
    """The prompts a segment-everything request decodes: each crop layer's grid over its crops."""
    return sum((options["points_per_side"] // options["crop_n_points_downscale_factor"] ** i) ** 2 * 4 ** i
               for i in range(options["crop_n_layers"] + 1))


def finite(x: float) -> Optional[float]:
    """JSON has no NaN or infinity: null for them (a stability score with stability_score_offset 0
    over an empty mask is 0/0, as upstream computes it)."""
    x = float(x)
    return x if math.isfinite(x) else None
