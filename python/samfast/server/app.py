"""The HTTP API (FastAPI) over the Python package, and the web page at / (static/): upload an image once (its id is the content hash),
then predict on it (each click a decode), segment everything, or fetch its embedding. All model work
runs on one thread (batcher.py): concurrent uploads share encoder batches and concurrent clicks one
ragged decode. Embeddings stay in a two-tier cache bounded in bytes (cache.py), so a re-upload or a
click on a known image never re-encodes. Bad input is a JSON error with a 4xx code; more work than
max_pending is refused with 503 and Retry-After, and work past request_timeout_s answers 504."""
import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import io
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .. import _samfast
from ..automatic_mask_generator import SamAutomaticMaskGenerator
from .batcher import Batcher, Click
from .cache import EmbeddingCache, Entry
from .schemas import (Base64Image, Error, EverythingRequest, EverythingResponse, ImageInfo, PredictRequest,
                      PredictResponse, Rejected)


@dataclass
class ServerConfig:
    token: Optional[str] = None            # bearer token required on /v1 when set
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


def create_app(sam, config: Optional[ServerConfig] = None) -> FastAPI:
    """The app for one model. sam: a samfast Sam (samfast.load(...))."""
    config = config or ServerConfig()
    native = sam._native_model()
    grid_values = 256 * (native.img_size // 16) ** 2
    cache = EmbeddingCache(config.device_cache_bytes, config.host_cache_bytes,
                           embedding_bytes=grid_values * (4 if native.precision == "fp32" else 2),
                           host_embedding_bytes=grid_values * 4)
    pending = {"n": 0}
    pending_lock = threading.Lock()
    encoding = {}  # image id -> the Future of its encode, so that concurrent uploads of one image encode it once
    encoding_lock = threading.Lock()

    registry = CollectorRegistry()
    requests_total = Counter("samfast_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("samfast_request_seconds", "request latency", ["endpoint"], registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    queue_depth = Gauge("samfast_pending_requests", "requests computing or waiting for the model", registry=registry)
    batch_size = Histogram("samfast_batch_size", "requests per model pass", ["kind"], registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64))
    pass_seconds = Histogram("samfast_pass_seconds", "the model thread's time per pass", ["kind"], registry=registry,
                             buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2))
    # Where a click's time goes, to find what is not the model: wait (queued until its pass began),
    # model (its pass, until the handler has the masks), respond (the masks to the response body).
    predict_stage = Histogram("samfast_predict_stage_seconds", "a predict request's time by stage", ["stage"],
                              registry=registry, buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01,
                                                          0.02, 0.05, 0.1, 0.25, 1))
    waited, modelled, responded = (predict_stage.labels(stage) for stage in ("wait", "model", "respond"))

    upload_stage = Histogram("samfast_upload_stage_seconds", "an upload's time by stage (decode: the file to "
                             "pixels; prepare: resized and normalized; wait: queued for its encoder pass; model: "
                             "that pass)", ["stage"], registry=registry,
                             buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))

    def on_pass(kind, size, seconds):
        batch_size.labels(kind).observe(size)
        pass_seconds.labels(kind).observe(seconds)
    batcher = Batcher(config.max_encode_batch, config.max_batch_wait_ms / 1e3, on_pass=on_pass)
    cache_hits = Counter("samfast_embedding_cache", "image uploads by whether their embedding was cached", ["result"],
                         registry=registry)
    cache_bytes = Gauge("samfast_embedding_cache_bytes", "bytes held by the embedding cache", ["tier"],
                        registry=registry)
    cache_moves = Gauge("samfast_embedding_cache_moves", "embeddings moved between the cache's tiers or dropped",
                        ["move"], registry=registry)
    device_memory = Gauge("samfast_device_memory_bytes", "the model's device memory (0 on the CPU)", ["kind"],
                          registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        import anyio.to_thread
        # every pending request may wait on its result in a worker thread (the default allows 40)
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(40, config.max_pending + 8)
        yield
        batcher.close()

    app = FastAPI(title="samfast", version="1", lifespan=lifespan,
                  description="Segment Anything on samfast's engine: upload an image once, then predict masks for "
                  "clicks and boxes, or segment everything.")
    default_openapi = app.openapi  # (builds app.openapi_schema once, then returns it)

    def openapi():
        if app.openapi_schema is None:
            openapi_3_0_bounds(default_openapi())
        return app.openapi_schema
    app.openapi = openapi

    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])

    def observe(scope, status, seconds):
        route = scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        requests_total.labels(endpoint, str(status)).inc()
        latency.labels(endpoint).observe(seconds)
    app.add_middleware(Measured, observe=observe)

    @app.exception_handler(ValueError)
    async def bad_input(request, e):
        return JSONResponse(status_code=422, content={"detail": str(e)})

    @app.exception_handler(MemoryError)
    async def out_of_memory(request, e):
        return JSONResponse(status_code=503, content={"detail": f"out of device memory: {e}"},
                            headers={"Retry-After": str(config.retry_after_s)})

    async def authorized(request: Request):  # (async: checked in the event loop, no thread hop)
        if config.token and request.headers.get("authorization") != f"Bearer {config.token}":
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @contextlib.contextmanager
    def slot():
        """A place among max_pending; none free answers 503 with Retry-After."""
        with pending_lock:
            if pending["n"] >= config.max_pending:
                raise HTTPException(503, f"busy: {pending['n']} requests pending",
                                    headers={"Retry-After": str(config.retry_after_s)})
            pending["n"] += 1
            queue_depth.set(pending["n"])
        try:
            yield
        finally:
            with pending_lock:
                pending["n"] -= 1
                queue_depth.set(pending["n"])

    def result(future: concurrent.futures.Future, started: float):
        """The batcher's answer, or 504 once the request has taken request_timeout_s."""
        try:
            return future.result(timeout=max(0.0, started + config.request_timeout_s - time.perf_counter()))
        except concurrent.futures.TimeoutError:
            future.cancel()  # (skipped if still queued)
            raise HTTPException(504, f"the request took more than {config.request_timeout_s:g} s") from None
        except concurrent.futures.CancelledError:  # (an upload of the same image timed out while queued)
            raise HTTPException(503, "the work was dropped when another request for it timed out: retry",
                                headers={"Retry-After": str(config.retry_after_s)}) from None

    @contextlib.contextmanager
    def entry_of(image_id):
        with cache.use(image_id) as entry:
            if entry is None:
                raise HTTPException(404, f"unknown image id {image_id[:16]}...: upload it to /v1/images first")
            yield entry

    def decode_upload(data: bytes):
        if len(data) > config.max_upload_bytes:
            raise HTTPException(413, f"image of {len(data)} bytes is past the limit of {config.max_upload_bytes}")
        if not data:
            raise HTTPException(422, "empty image")
        # The library's decoder reads files (EXIF orientation, PNG checks, pixel limit before allocating).
        with tempfile.TemporaryDirectory(prefix="samfast-upload-") as d:
            path = os.path.join(d, "image")
            with open(path, "wb") as f:
                f.write(data)
            try:
                image = _samfast.read_image(path)
            except RuntimeError as e:
                raise HTTPException(415, str(e).replace(path, "the upload")) from None
        if image.shape[0] * image.shape[1] > config.max_pixels:
            raise HTTPException(413, f"image of {image.shape[1]}x{image.shape[0]} pixels is past the limit of "
                                     f"{config.max_pixels}")
        return image

    def encoded(image_id, image, future):
        with encoding_lock:
            encoding.pop(image_id, None)
        if not future.cancelled() and future.exception() is None:
            cache.put(image_id, Entry(future.result(), image))

    def add_image(data: bytes) -> ImageInfo:
        start = time.perf_counter()
        image_id = hashlib.sha256(data).hexdigest()
        image = cache.get_image(image_id)
        cached = image is not None
        cache_hits.labels("hit" if cached else "miss").inc()
        if not cached:
            image = decode_upload(data)
            decoded = time.perf_counter()
            upload_stage.labels("decode").observe(decoded - start)
            with slot():
                with encoding_lock:
                    future = encoding.get(image_id)
                if future is None:
                    prepared = _samfast.prepare_image(native, image)  # (outside the lock: uploads prepare at once)
                    submitted = time.perf_counter()
                    upload_stage.labels("prepare").observe(submitted - decoded)
                    with encoding_lock:
                        future = encoding.get(image_id)  # (the same image may have come meanwhile)
                        if future is None:
                            future = encoding[image_id] = batcher.encode(native, prepared)
                            future.submitted = submitted
                            # (cached when done even if this request has timed out: a retry is then a hit)
                            future.add_done_callback(lambda f: encoded(image_id, image, f))
                predictor = result(future, start)
            if hasattr(future, "began"):
                upload_stage.labels("wait").observe(future.began - future.submitted)
                upload_stage.labels("model").observe(time.perf_counter() - future.began)
            cache.put(image_id, Entry(predictor, image))
        h, w = image.shape[:2]
        return ImageInfo(id=image_id, width=w, height=h, cached=cached, elapsed_ms=(time.perf_counter() - start) * 1e3)

    static = os.path.join(os.path.dirname(__file__), "static")
    page_files = {"app.js": "text/javascript"}  # (by name: no path from the request reaches the disk)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(os.path.join(static, "index.html"), media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def page_file(name: str):
        if name not in page_files:
            raise HTTPException(404, f"no page file {name}")
        return FileResponse(os.path.join(static, name), media_type=page_files[name])

    @app.get("/health")
    def health():
        return {"status": "ok", "device": native.device, "model": native.model_type, "precision": native.precision,
                "images_cached": len(cache)}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics():
        for kind, value in native.memory_use().items():
            if kind != "graphs_in_arena":
                device_memory.labels(kind).set(value)
        cache_bytes.labels("device").set(cache.device_used)
        cache_bytes.labels("host").set(cache.host_used)
        for move, n in cache.moves.items():
            cache_moves.labels(move).set(n)
        return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.post("/v1/images", response_model=ImageInfo, dependencies=[Depends(authorized)],
              responses=errors(400, 401, 413, 415, 422, 503, 504))
    def upload(file: UploadFile = File(..., description="an image file (JPEG, PNG, BMP, ...)")):
        data = file.file.read(config.max_upload_bytes + 1)
        return add_image(data)

    @app.post("/v1/images/base64", response_model=ImageInfo, dependencies=[Depends(authorized)],
              responses=errors(400, 401, 413, 415, 422, 503, 504))
    def upload_base64(body: Base64Image):
        if len(body.image_base64) > config.max_upload_bytes * 4 // 3 + 4:
            raise HTTPException(413, f"image past the limit of {config.max_upload_bytes} bytes")
        try:
            data = base64.b64decode(body.image_base64, validate=True)
        except ValueError:
            raise HTTPException(422, "image_base64 is not valid base64") from None
        return add_image(data)

    @app.post("/v1/images/{image_id}/predict", response_model=PredictResponse, dependencies=[Depends(authorized)],
              responses=errors(400, 401, 404, 422, 501, 503, 504))
    async def predict(image_id: str, body: PredictRequest):
        # In the event loop: a click's own work is small, and the hops between threads (each taking
        # the GIL) were most of a click's time. What may wait goes to the thread pool: bringing an
        # embedding back from the host tier, and PNG or polygon answers.
        start = time.perf_counter()
        click = click_of(body)
        click.rle = body.format == "rle"
        with slot():
            entry = cache.pin(image_id, wait=False) or await run_in_threadpool(cache.pin, image_id)
            if entry is None:
                raise HTTPException(404, f"unknown image id {image_id[:16]}...: upload it to /v1/images first")
            try:
                submitted = time.perf_counter()
                future = batcher.predict(entry.predictor, click)
                masks, scores, low_res = await awaited(future, start)
            finally:
                cache.unpin(entry)
        answered = time.perf_counter()
        waited.observe(future.began - submitted)
        modelled.observe(answered - future.began)
        size = list(entry.image.shape[:2])
        if click.rle:  # (the strings came from the model thread)
            reply = predict_answer([{"rle": {"size": size, "counts": c}} for c in masks], scores, low_res, body, start)
        else:
            reply = await run_in_threadpool(lambda: predict_answer(
                [{"png": base64.b64encode(_samfast.encode_png_gray(m.astype(np.uint8) * 255)).decode()}
                 if body.format == "png" else {"polygons": polygons(m)} for m in masks], scores, low_res, body, start))
        responded.observe(time.perf_counter() - answered)
        return reply

    def predict_answer(masks, scores, low_res, body: PredictRequest, start) -> Response:
        low = None
        if body.return_low_res_logits:
            buf = io.BytesIO()
            np.save(buf, low_res[np.argmax(scores)][None])
            low = base64.b64encode(buf.getvalue()).decode()
        # (the body as JSON at once: a model's validation and encoding would walk the masks' long strings;
        # json.dumps escaping to ASCII is twice as fast as JSONResponse's UTF-8 on them)
        return Response(json.dumps({"masks": masks, "scores": [finite(s) for s in scores], "low_res_logits": low,
                                    "elapsed_ms": (time.perf_counter() - start) * 1e3}, allow_nan=False),
                        media_type="application/json")

    async def awaited(future: concurrent.futures.Future, started: float):
        """result() for the event loop: the batcher's answer, or 504 once the request has taken
        request_timeout_s (and its work is dropped if still queued)."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future),
                                          max(0.0, started + config.request_timeout_s - time.perf_counter()))
        except asyncio.TimeoutError:
            future.cancel()
            raise HTTPException(504, f"the request took more than {config.request_timeout_s:g} s") from None

    def click_of(body: PredictRequest) -> Click:
        n_points = len(body.points or [])
        if n_points > config.max_prompts:
            raise HTTPException(422, f"{n_points} points are past the limit of {config.max_prompts}")
        if (body.points is None) != (body.labels is None) or (body.labels is not None and len(body.labels) != n_points):
            raise HTTPException(422, "give one label per point")
        if any(len(p) != 2 for p in body.points or []):
            raise HTTPException(422, "each point is [x, y]")
        if body.box is not None and len(body.box) != 4:
            raise HTTPException(422, "a box is [x0, y0, x1, y1]")
        if body.points is None and body.box is None and body.mask_input is None:
            raise HTTPException(422, "give points, a box or a mask input")
        mask_input = None
        if body.mask_input is not None:
            try:
                mask_input = np.load(io.BytesIO(base64.b64decode(body.mask_input, validate=True)), allow_pickle=False)
            except (ValueError, EOFError, OSError) as e:
                raise HTTPException(422, f"mask_input is not a base64 .npy array: {e}") from None
            if mask_input.dtype != np.float32 or mask_input.shape != (1, native.low_res_size, native.low_res_size):
                raise HTTPException(422, f"mask_input must be float32 (1, {native.low_res_size}, "
                                         f"{native.low_res_size}), got {mask_input.dtype} {mask_input.shape}")
        return Click(points=None if body.points is None else np.asarray(body.points, np.float32).reshape(-1, 2),
                     labels=None if body.labels is None else np.asarray(body.labels, np.int32),
                     box=None if body.box is None else np.asarray(body.box, np.float32),
                     mask_input=mask_input, multimask_output=body.multimask_output)

    @app.post("/v1/images/{image_id}/everything", response_model=EverythingResponse,
              dependencies=[Depends(authorized)], responses=errors(400, 401, 404, 422, 503, 504))
    def everything(image_id: str, body: EverythingRequest):
        start = time.perf_counter()
        image = cache.get_image(image_id)
        if image is None:
            raise HTTPException(404, f"unknown image id {image_id[:16]}...: upload it to /v1/images first")
        options = body.model_dump() if hasattr(body, "model_dump") else body.dict()  # (pydantic 2 or 1)
        points = everything_points(options)
        if points > config.max_everything_points:
            raise HTTPException(422, f"{points} grid points over every crop are past the limit of "
                                     f"{config.max_everything_points}: fewer points_per_side or crop layers")
        generator = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **options)
        with slot():
            records = result(batcher.run(lambda: generator.generate(image)), start)
        for r in records:
            r["predicted_iou"], r["stability_score"] = finite(r["predicted_iou"]), finite(r["stability_score"])
        return EverythingResponse(records=records, elapsed_ms=(time.perf_counter() - start) * 1e3)

    @app.get("/v1/images/{image_id}/embedding", dependencies=[Depends(authorized)],
             response_class=Response,
             responses={**errors(401, 404, 503, 504), 200: {"content": {"application/octet-stream": {}},
                                                            "description": "float32 .npy of shape (1, 256, 64, 64)"}})
    def embedding(image_id: str):
        start = time.perf_counter()
        with slot(), entry_of(image_id) as entry:
            emb = result(batcher.run(lambda: entry.predictor.image_embedding(0)), start)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(emb, dtype=np.float32))
        return Response(buf.getvalue(), media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{image_id[:16]}.npy"'})

    return app


class Measured:
    """ASGI middleware: observe(scope, status, seconds) after each HTTP request, the time until its
    answer is sent. (Plain ASGI: FastAPI's @app.middleware("http") runs each request through extra
    tasks and streams, which cost a click more than its decode.)"""

    def __init__(self, app, observe):
        self.app, self.observe = app, observe

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.observe(scope, status[0], time.perf_counter() - start)


def everything_points(options) -> int:
    """The prompts a segment-everything request decodes: each crop layer's grid over its crops."""
    return sum((options["points_per_side"] // options["crop_n_points_downscale_factor"] ** i) ** 2 * 4 ** i
               for i in range(options["crop_n_layers"] + 1))


def errors(*codes):
    """The error answers an operation documents: {"detail": sentence}; a 422 may be FastAPI's list."""
    return {c: {"model": Rejected if c == 422 else Error} for c in codes}


def openapi_3_0_bounds(spec):
    """pydantic 1 writes an exclusive bound as a number (newer JSON Schema); OpenAPI 3.0 wants it as
    a boolean beside maximum/minimum. The spec, fixed in place."""
    def fix(node):
        if isinstance(node, dict):
            for exclusive, bound in (("exclusiveMaximum", "maximum"), ("exclusiveMinimum", "minimum")):
                value = node.get(exclusive)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    node[bound], node[exclusive] = value, True
            for v in node.values():
                fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)
    if spec.get("openapi", "").startswith("3.0"):
        fix(spec)
    return spec


def finite(x: float) -> Optional[float]:
    """JSON has no NaN or infinity: null for them (a stability score with stability_score_offset 0
    over an empty mask is 0/0, as upstream computes it)."""
    x = float(x)
    return x if math.isfinite(x) else None


def polygons(mask: np.ndarray) -> List[List[float]]:
    """A binary mask's outer contours as COCO polygons [x0, y0, x1, y1, ...] (3 points or more)."""
    try:
        import cv2
    except ImportError:
        raise HTTPException(501, "polygon output needs OpenCV: pip install opencv-python-headless") from None
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
