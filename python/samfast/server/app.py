"""The HTTP API (FastAPI) over the Python package, and the web page at / (static/): upload an image once (its id is the content hash),
then predict on it (each click a decode), segment everything, or fetch its embedding. Embeddings
stay in an LRU cache bounded in bytes, so a re-upload or a click on a known image never re-encodes.
Bad input is a JSON error with a 4xx code; more work than max_pending is refused with 503 and
Retry-After instead of queueing without bound."""
import base64
import hashlib
import io
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from .. import _samfast
from ..automatic_mask_generator import SamAutomaticMaskGenerator
from ..predictor import SamPredictor
from ..utils.amg import coco_encode_rle, mask_to_rle_pytorch


@dataclass
class ServerConfig:
    token: Optional[str] = None            # bearer token required on /v1 when set
    cors_origins: List[str] = field(default_factory=list)
    max_upload_bytes: int = 50 * 2**20
    max_pixels: int = 100_000_000
    max_prompts: int = 64
    max_pending: int = 64                  # requests computing or waiting for the model
    cache_bytes: int = 2 * 2**30           # embeddings and their images kept
    retry_after_s: int = 1


class PredictRequest(BaseModel):
    points: Optional[List[List[float]]] = Field(None, description="(x, y) in image pixels")
    labels: Optional[List[int]] = Field(None, description="1 foreground, 0 background, one per point")
    box: Optional[List[float]] = Field(None, min_items=4, max_items=4, description="x0, y0, x1, y1 in image pixels")
    mask_input: Optional[str] = Field(None, description="base64 .npy of a (1, 256, 256) float32 low-res logits "
                                                        "array, as low_res_logits of an earlier response")
    multimask_output: bool = True
    format: Literal["png", "rle"] = Field("png", description="png: base64 PNG per mask; rle: COCO RLE")
    return_low_res_logits: bool = False


class PredictResponse(BaseModel):
    masks: List[Dict[str, object]]
    scores: List[float]
    low_res_logits: Optional[str] = None
    elapsed_ms: float


class EverythingRequest(BaseModel):
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0


class ImageInfo(BaseModel):
    id: str
    width: int
    height: int
    cached: bool = Field(description="the embedding was already computed (no encoder pass)")
    elapsed_ms: float


class Base64Image(BaseModel):
    image_base64: str


class _Entry:
    def __init__(self, predictor, image, nbytes):
        self.predictor, self.image, self.nbytes = predictor, image, nbytes


class EmbeddingCache:
    """Predictors with their image set, least recently used dropped first past `capacity` bytes."""

    def __init__(self, capacity):
        self.capacity, self.used = capacity, 0
        self._entries: "OrderedDict[str, _Entry]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key, entry):
        with self._lock:
            if key in self._entries:
                self.used -= self._entries.pop(key).nbytes
            self._entries[key] = entry
            self.used += entry.nbytes
            while self.used > self.capacity and len(self._entries) > 1:
                self.used -= self._entries.popitem(last=False)[1].nbytes

    def __len__(self):
        return len(self._entries)


def create_app(sam, config: Optional[ServerConfig] = None) -> FastAPI:
    """The app for one model. sam: a samfast Sam (samfast.load(...))."""
    config = config or ServerConfig()
    native = sam._native_model()
    embedding_bytes = 256 * 64 * 64 * (4 if native.precision == "fp32" else 2)
    cache = EmbeddingCache(config.cache_bytes)
    pending = {"n": 0}
    pending_lock = threading.Lock()

    registry = CollectorRegistry()
    requests_total = Counter("samfast_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("samfast_request_seconds", "request latency", ["endpoint"], registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    queue_depth = Gauge("samfast_pending_requests", "requests computing or waiting for the model", registry=registry)
    cache_hits = Counter("samfast_embedding_cache", "image uploads by whether their embedding was cached", ["result"],
                         registry=registry)
    cache_bytes = Gauge("samfast_embedding_cache_bytes", "bytes held by the embedding cache", registry=registry)
    device_memory = Gauge("samfast_device_memory_bytes", "the model's device memory (0 on the CPU)", ["kind"],
                          registry=registry)

    app = FastAPI(title="samfast", version="1", description="Segment Anything on samfast's engine: upload an "
                  "image once, then predict masks for clicks and boxes, or segment everything.")
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        requests_total.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(ValueError)
    async def bad_input(request, e):
        return JSONResponse(status_code=422, content={"detail": str(e)})

    @app.exception_handler(MemoryError)
    async def out_of_memory(request, e):
        return JSONResponse(status_code=503, content={"detail": f"out of device memory: {e}"},
                            headers={"Retry-After": str(config.retry_after_s)})

    def authorized(request: Request):
        if config.token and request.headers.get("authorization") != f"Bearer {config.token}":
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    class _Slot:
        """A place among max_pending; none free answers 503 with Retry-After."""

        def __enter__(self):
            with pending_lock:
                if pending["n"] >= config.max_pending:
                    raise HTTPException(503, f"busy: {pending['n']} requests pending",
                                        headers={"Retry-After": str(config.retry_after_s)})
                pending["n"] += 1
                queue_depth.set(pending["n"])

        def __exit__(self, *exc):
            with pending_lock:
                pending["n"] -= 1
                queue_depth.set(pending["n"])

    def entry_of(image_id):
        entry = cache.get(image_id)
        if entry is None:
            raise HTTPException(404, f"unknown image id {image_id[:16]}...: upload it to /v1/images first")
        return entry

    def decode(data: bytes):
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

    def add_image(data: bytes) -> ImageInfo:
        start = time.perf_counter()
        image_id = hashlib.sha256(data).hexdigest()
        entry = cache.get(image_id)
        cached = entry is not None
        cache_hits.labels("hit" if cached else "miss").inc()
        if not cached:
            image = decode(data)
            with _Slot():
                predictor = SamPredictor(sam)
                predictor.set_image(image)
            entry = _Entry(predictor, image, embedding_bytes + image.nbytes)
            cache.put(image_id, entry)
            cache_bytes.set(cache.used)
        h, w = entry.image.shape[:2]
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

    @app.get("/metrics")
    def metrics():
        for kind, value in native.memory_use().items():
            if kind != "graphs_in_arena":
                device_memory.labels(kind).set(value)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/images", response_model=ImageInfo, dependencies=[Depends(authorized)])
    def upload(file: UploadFile = File(..., description="an image file (JPEG, PNG, BMP, ...)")):
        data = file.file.read(config.max_upload_bytes + 1)
        return add_image(data)

    @app.post("/v1/images/base64", response_model=ImageInfo, dependencies=[Depends(authorized)])
    def upload_base64(body: Base64Image):
        if len(body.image_base64) > config.max_upload_bytes * 4 // 3 + 4:
            raise HTTPException(413, f"image past the limit of {config.max_upload_bytes} bytes")
        try:
            data = base64.b64decode(body.image_base64, validate=True)
        except ValueError:
            raise HTTPException(422, "image_base64 is not valid base64") from None
        return add_image(data)

    @app.post("/v1/images/{image_id}/predict", response_model=PredictResponse, dependencies=[Depends(authorized)])
    def predict(image_id: str, body: PredictRequest):
        start = time.perf_counter()
        entry = entry_of(image_id)
        n_points = len(body.points or [])
        if n_points > config.max_prompts:
            raise HTTPException(422, f"{n_points} points are past the limit of {config.max_prompts}")
        if (body.points is None) != (body.labels is None) or (body.labels is not None and len(body.labels) != n_points):
            raise HTTPException(422, "give one label per point")
        if body.points is None and body.box is None and body.mask_input is None:
            raise HTTPException(422, "give points, a box or a mask input")
        mask_input = None
        if body.mask_input is not None:
            try:
                mask_input = np.load(io.BytesIO(base64.b64decode(body.mask_input, validate=True)), allow_pickle=False)
            except ValueError as e:
                raise HTTPException(422, f"mask_input is not a base64 .npy array: {e}") from None
        with _Slot():
            masks, scores, low_res = entry.predictor.predict(
                point_coords=None if body.points is None else np.asarray(body.points, np.float32).reshape(-1, 2),
                point_labels=None if body.labels is None else np.asarray(body.labels, np.int32),
                box=None if body.box is None else np.asarray(body.box, np.float32),
                mask_input=mask_input, multimask_output=body.multimask_output)
        if body.format == "png":
            out = [{"png": base64.b64encode(_samfast.encode_png_gray(m.astype(np.uint8) * 255)).decode()} for m in masks]
        else:
            out = [{"rle": coco_encode_rle(r)} for r in mask_to_rle_pytorch(masks)]
        low = None
        if body.return_low_res_logits:
            buf = io.BytesIO()
            np.save(buf, low_res[np.argmax(scores)][None])
            low = base64.b64encode(buf.getvalue()).decode()
        return PredictResponse(masks=out, scores=[float(s) for s in scores], low_res_logits=low,
                               elapsed_ms=(time.perf_counter() - start) * 1e3)

    @app.post("/v1/images/{image_id}/everything", dependencies=[Depends(authorized)])
    def everything(image_id: str, body: EverythingRequest):
        start = time.perf_counter()
        entry = entry_of(image_id)
        generator = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **body.dict())
        with _Slot():
            records = generator.generate(entry.image)
        return {"records": records, "elapsed_ms": (time.perf_counter() - start) * 1e3}

    @app.get("/v1/images/{image_id}/embedding", dependencies=[Depends(authorized)],
             responses={200: {"content": {"application/octet-stream": {}},
                              "description": "float32 .npy of shape (1, 256, 64, 64)"}})
    def embedding(image_id: str):
        entry = entry_of(image_id)
        with _Slot():
            emb = entry.predictor._native.image_embedding(0)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(emb, dtype=np.float32))
        return Response(buf.getvalue(), media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{image_id[:16]}.npy"'})

    return app
