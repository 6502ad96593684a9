"""The HTTP API (FastAPI) over the Python package, the annotation tools' protocols (tools/) and the
web page at / (static/): upload an image once (its id is the content hash), then predict on it (each
click a decode), segment everything, or fetch its embedding. The model's work and its limits are
core.py's. Bad input is a JSON error with a 4xx code."""
import base64
import contextlib
import io
import json
import os
import time
from typing import Dict, List, Optional

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from .. import _samfast
from .core import Core, ServerConfig, base64_file, finite  # noqa: F401 (ServerConfig: the package's name)
from .schemas import (Base64Image, EverythingRequest, EverythingResponse, ImageInfo, PredictRequest,
                      PredictResponse, errors)


def create_app(sam=None, config: Optional[ServerConfig] = None, core=None) -> FastAPI:
    """The app for one model. sam: a samfast Sam (samfast.load(...)); or core: the Core it serves
    (remote.RemoteCore in a front-end process before a model process)."""
    from .tools import include_tools
    config = config or ServerConfig()
    core = core or Core(sam, config)
    # The requests' own metrics, in the process that answers them (with front-end processes, each
    # writes its own and /metrics sums them: prometheus_client's multiprocess mode).
    registry = CollectorRegistry()
    requests_total = Counter("samfast_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("samfast_request_seconds", "request latency", ["endpoint"], registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    responded = Histogram("samfast_predict_respond_seconds", "a predict request's time from its masks to its "
                          "response body", registry=registry,
                          buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1))
    exposed = registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        exposed = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposed)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        import anyio.to_thread
        # every pending request may wait on its result in a worker thread (the default allows 40)
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(40, config.max_pending + 8)
        await core.open()
        yield
        core.close()

    app = FastAPI(title="samfast", version="1",
                  description="Segment Anything on samfast's engine: upload an image once, then predict masks for "
                  "clicks and boxes, or segment everything.")
    app.state.core = core
    app.router.lifespan_context = lifespan  # (FastAPI(lifespan=) is 0.93's; Debian's 0.92 would ignore it)
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
    # An image in base64 is 4/3 of its bytes; 1 MiB more holds any request's other fields (a
    # mask_input .npy in base64 is 0.35 MB). ISAT sends raw pixels, as many as --max-pixels allows.
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes * 4 // 3 + 2**20,
                       by_path={"/api/encode": config.max_pixels * 3 + 2**20})

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

    def image_info(data: bytes) -> ImageInfo:
        added = core.add_image(data)
        return ImageInfo(id=added.id, width=added.width, height=added.height, cached=added.cached,
                         elapsed_ms=added.elapsed_ms)

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
        return core.health()

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics():
        return Response(generate_latest(exposed) + core.metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.post("/v1/images", response_model=ImageInfo, dependencies=[Depends(authorized)],
              responses=errors(400, 401, 413, 415, 422, 503, 504))
    def upload(file: UploadFile = File(..., description="an image file (JPEG, PNG, BMP, ...)")):
        return image_info(file.file.read(config.max_upload_bytes + 1))

    @app.post("/v1/images/base64", response_model=ImageInfo, dependencies=[Depends(authorized)],
              responses=errors(400, 401, 413, 415, 422, 503, 504))
    def upload_base64(body: Base64Image):
        return image_info(base64_file(body.image_base64, config.max_upload_bytes, "image_base64"))

    @app.post("/v1/images/{image_id}/predict", response_model=PredictResponse, dependencies=[Depends(authorized)],
              responses=errors(400, 401, 404, 422, 501, 503, 504))
    async def predict(image_id: str, body: PredictRequest):
        # (async: see Core.predict; PNG or polygon answers go to the thread pool)
        start = time.perf_counter()
        mask_input = None if body.mask_input is None else npy_mask_input(body.mask_input, core.native.low_res_size)
        click = core.click(body.points, body.labels, body.box, mask_input, body.multimask_output)
        click.rle = body.format == "rle"
        masks, scores, low_res, size = await core.predict(image_id, click, start, body.return_low_res_logits)
        answered = time.perf_counter()
        size = list(size)
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

    @app.post("/v1/images/{image_id}/everything", response_model=EverythingResponse,
              dependencies=[Depends(authorized)], responses=errors(400, 401, 404, 422, 503, 504))
    def everything(image_id: str, body: EverythingRequest):
        start = time.perf_counter()
        options = body.model_dump() if hasattr(body, "model_dump") else body.dict()  # (pydantic 2 or 1)
        records = core.everything(image_id, options)
        return EverythingResponse(records=records, elapsed_ms=(time.perf_counter() - start) * 1e3)

    @app.get("/v1/images/{image_id}/embedding", dependencies=[Depends(authorized)],
             response_class=Response,
             responses={**errors(401, 404, 503, 504), 200: {"content": {"application/octet-stream": {}},
                                                            "description": "float32 .npy of shape (1, 256, 64, 64)"}})
    def embedding(image_id: str):
        buf = io.BytesIO()
        np.save(buf, core.embedding(image_id))
        return Response(buf.getvalue(), media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{image_id[:16]}.npy"'})

    include_tools(app, core)
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


class BodyLimit:
    """ASGI middleware: 413 for a request body past max_bytes, by its Content-Length before any of it
    is read, or as it streams in. FastAPI reads a JSON body whole, before any dependency (the token
    check too), so without it any client could make the server hold a body of any size."""

    def __init__(self, app, max_bytes: int, by_path: Optional[Dict[str, int]] = None):
        self.app, self.max_bytes, self.by_path = app, max_bytes, by_path or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        most = self.by_path.get(scope["path"], self.max_bytes)
        too_large = f"the request body is past the limit of {most} bytes (the server's --max-upload-mb, --max-pixels)"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > most:
            return await JSONResponse(status_code=413, content={"detail": too_large})(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > most:  # (FastAPI answers an HTTPException raised while it reads a body)
                raise HTTPException(413, too_large)
            return message
        await self.app(scope, counted, send)


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


def npy_mask_input(text: str, low: int) -> np.ndarray:
    """A predict request's mask_input: base64 of a float32 (1, low, low) .npy, or the 422 that says why
    not. The header is checked first: numpy allocates whatever shape a header claims before reading."""
    try:
        f = io.BytesIO(base64.b64decode(text, validate=True))
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not read")
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = header(f)
        if dtype != np.float32 or shape != (1, low, low):
            raise HTTPException(422, f"mask_input must be float32 (1, {low}, {low}), got {dtype} {shape}")
        f.seek(0)
        return np.load(f, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise HTTPException(422, f"mask_input is not a base64 .npy array: {e}") from None


def polygons(mask: np.ndarray) -> List[List[float]]:
    """A binary mask's outer contours as COCO polygons [x0, y0, x1, y1, ...] (3 points or more)."""
    try:
        import cv2
    except ImportError:
        raise HTTPException(501, "polygon output needs OpenCV: pip install opencv-python-headless") from None
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
