"""X-AnyLabeling's remote server, for its "Remote-Server" model: X-AnyLabeling's server_url set to
http://HOST:PORT/xanylabeling (its api_key to the server's token, sent as a Token header).

The client (x-anylabeling-cvhub, anylabeling/services/auto_labeling/remote_server.py) lists the
models, then on every change of the marks posts the whole image (a data URI of the file) and all
marks; the embedding cache makes every post after the first a decode. Points are SAM points (label
1 inside, 0 outside), each rectangle a box (its label unused; several boxes, a mask each, with
the points repeated for each), in the image's pixels. Masks come back as polygons the way
X-AnyLabeling-Server's SAM model makes them, and "replace" is false so that the client keeps the
user's other shapes.
ref: CVHub520/X-AnyLabeling-Server app/api/health.py, models.py, predict.py, app/schemas/,
     app/models/segment_anything_2.py (_predict_with_marks, _convert_results_to_shapes),
     app/core/middleware.py (the Token header)"""
import asyncio
import datetime
import time
from typing import Any, Dict

import numpy as np
from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, StrictStr

from ..core import base64_file
from ..schemas import errors

MODEL_ID = "segment_anything"
# Rectangles in one request: each is a decode and a place among the server's pending requests, so
# past max_pending a request could never get all it needs (503 on every retry).
MAX_RECTANGLES = 16
# The interactive widgets X-AnyLabeling shows for a SAM model (its auto_labeling.py reads these
# names); the mask fineness slider sets epsilon_factor.
WIDGETS = [{"name": n, "value": None} for n in ("button_add_point", "button_remove_point", "button_add_rect",
                                                 "button_clear", "button_finish_object")] + \
          [{"name": "mask_fineness_slider", "value": 10}, {"name": "mask_fineness_value_label", "value": None}]


class Prediction(BaseModel):
    model: StrictStr
    image: StrictStr
    params: Dict[str, Any] = {}


def failure(code, message):
    """X-AnyLabeling-Server's error envelope (answered with HTTP 200, as it does)."""
    return {"success": False, "error": {"code": code, "message": message, "details": None}}


def router(core, authorized) -> APIRouter:
    r = APIRouter(prefix="/xanylabeling", tags=["X-AnyLabeling"])
    native = core.native
    model = {"display_name": f"Segment Anything ({native.model_type}, samfast)", "widgets": WIDGETS,
             "params": {"model_type": native.model_type, "precision": native.precision, "device": native.device,
                        "show_boxes": False, "show_masks": True, "multimask_output": False,
                        "epsilon_factor": 0.001},
             "capabilities": {}, "batch_processing_mode": "default"}

    @r.get("/health")
    def health():
        return {"status": "healthy", "models_loaded": 1,
                "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")}

    @r.get("/v1/models", dependencies=[Depends(authorized)], responses=errors(401))
    def models():
        return {"success": True, "data": {MODEL_ID: model}}

    @r.get("/v1/models/{model_id}/info", dependencies=[Depends(authorized)], responses=errors(401))
    def info(model_id: str):
        if model_id != MODEL_ID:
            return failure("MODEL_NOT_FOUND", f"Model '{model_id}' not loaded")
        return {"success": True, "data": {"model_id": model_id, **model}}

    @r.post("/v1/predict", dependencies=[Depends(authorized)], responses=errors(400, 401, 422, 501, 503, 504))
    async def predict(body: Prediction):
        start = time.perf_counter()
        if body.model != MODEL_ID:
            return failure("MODEL_NOT_FOUND", f"Model '{body.model}' not loaded")
        params = body.params
        points, labels, boxes = [], [], []
        marks = params.get("marks") or []
        for mark in marks if isinstance(marks, list) else []:  # (marks of other forms are skipped, as upstream does)
            if not isinstance(mark, dict):
                continue
            data = mark.get("data")
            if mark.get("type") == "point" and isinstance(data, list) and len(data) == 2:
                points.append(data)
                labels.append(mark.get("label", 1))
            elif mark.get("type") == "rectangle" and isinstance(data, list) and len(data) == 4:
                boxes.append(data)
        if not points and not boxes:
            return {"success": True, "data": {"shapes": [], "description": "", "replace": False}}
        if any(label not in (0, 1) for label in labels):  # (None, {}, 2**40 or NaN would reach numpy)
            raise HTTPException(422, "a point's label is 1 (inside) or 0 (outside)")
        limit = min(MAX_RECTANGLES, core.config.max_pending)
        if len(boxes) > limit:
            raise HTTPException(422, f"{len(boxes)} rectangles are past the limit of {limit} a request")
        epsilon = params.get("epsilon_factor")
        epsilon = 0.001 if epsilon is None else epsilon
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon <= 1:
            raise HTTPException(422, f"epsilon_factor is a number from 0 to 1, got {str(epsilon)[:40]}")
        try:
            data = base64_file(body.image, core.config.max_upload_bytes, "image")
            added = await run_in_threadpool(core.add_image, data, True, start)
        except HTTPException as e:
            if e.status_code not in (413, 415, 422):
                raise
            return failure("INVALID_IMAGE", str(e.detail))
        multimask = bool(params.get("multimask_output", False))
        clicks = [core.click(points or None, labels or None, box, None, multimask) for box in boxes or [None]]
        answers = await asyncio.gather(*(core.predict(added.id, c, start, False) for c in clicks))
        shapes = []
        for masks, scores, _, _ in answers:
            best = int(np.argmax(scores)) if multimask else 0
            shapes += await run_in_threadpool(shapes_of, masks[best], float(scores[best]), epsilon,
                                              bool(params.get("show_boxes", False)),
                                              bool(params.get("show_masks", True)))
        return {"success": True, "data": {"shapes": shapes, "description": "", "replace": False}}

    return r


def shapes_of(mask: np.ndarray, score: float, epsilon_factor: float, show_boxes: bool, show_masks: bool):
    """A mask as X-AnyLabeling-Server's SAM model answers it (_convert_results_to_shapes): each
    outer contour simplified by approxPolyDP to epsilon_factor of its perimeter, those covering 90%
    of the image and those under a fifth of the mean area left out while others remain, each a
    closed polygon; with show_boxes, the box around them."""
    try:
        import cv2
    except ImportError:
        raise HTTPException(501, "X-AnyLabeling's polygons need OpenCV: pip install opencv-python-headless") from None
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    kept = [cv2.approxPolyDP(c, epsilon_factor * cv2.arcLength(c, True), True) for c in contours]
    for keep in (lambda area, areas: area < mask.size * 0.9, lambda area, areas: area > np.mean(areas) * 0.2):
        if len(kept) > 1:
            areas = [cv2.contourArea(c) for c in kept]
            kept = [c for c, a in zip(kept, areas) if keep(a, areas)] or kept

    def shape(shape_type, points):
        return {"label": "AUTOLABEL_OBJECT", "shape_type": shape_type, "points": points, "score": score,
                "attributes": {}, "description": None, "difficult": False, "direction": 0.0, "flags": None,
                "group_id": None, "kie_linking": []}
    shapes = []
    for c in kept if show_masks else []:
        points = c.reshape(-1, 2).tolist()
        if len(points) >= 3:
            if points[0] != points[-1]:
                points.append(points[0])
            shapes.append(shape("polygon", [[float(x), float(y)] for x, y in points]))
    if show_boxes and kept:
        xy = np.concatenate([c.reshape(-1, 2) for c in kept]).astype(float)
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        if x0 < x1 and y0 < y1:
            shapes.append(shape("rectangle", [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    return shapes
