"""CVAT's SAM interactor. CVAT finds its AI tools through the nuclio dashboard's API and invokes
them through it, so samfast serves that API at the root (CVAT_NUCLIO_HOST/PORT name a host and a
port, no path): CVAT set to CVAT_SERVERLESS=1, CVAT_NUCLIO_INVOKE_METHOD=dashboard and
CVAT_NUCLIO_HOST/CVAT_NUCLIO_PORT pointing here needs no nuclio.

Two functions:
- pth-facebookresearch-sam-vit-h, CVAT's own SAM function: answers {"blob": base64 of the float32
  (1, 256, 64, 64) embedding}, which cvat-ui's SAM plugin (it switches on that id) decodes in the
  browser with its ONNX decoder (ViT-H weights only, as CVAT exports it).
  ref: cvat-ai/cvat serverless/pytorch/facebookresearch/sam/nuclio/main.py, model_handler.py,
       function.yaml; cvat-ui/plugins/sam/src/ts/index.tsx
- samfast-sam-mask: the mask decoded here, in CVAT's generic interactor answer
  {"mask": rows of 0/1 of the crop, "bounds": [xtl, ytl, xbr, ybr]} (inclusive), for a CVAT
  without the SAM plugin or models other than ViT-H.
  ref: cvat-ai/cvat cvat-core/src/lambda-manager.ts InteractorResults,
       cvat-ui/.../controls-side-bar/tools-control.tsx

Requests as CVAT's lambda manager sends them (cvat/apps/lambda_manager/views.py, LambdaFunction.invoke,
interactor): {"image": base64 of the frame's file, "pos_points": [[x, y], ...], "neg_points": [...],
"obj_bbox": null, [] (no box: what CVAT's UI sends for clicks alone) or [[x0, y0], [x1, y1]]}; the function is named by the x-nuclio-function-name
header. CVAT's function opens the frame with PIL (no EXIF orientation), and so does this."""
import base64
import time
from typing import List, Optional

import numpy as np
from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, StrictStr

from ..core import base64_file
from ..schemas import Number, errors, nullable

EMBEDDING_FUNCTION = "pth-facebookresearch-sam-vit-h"  # (the id cvat-ui's SAM plugin looks for)
MASK_FUNCTION = "samfast-sam-mask"


class Invocation(BaseModel):
    image: StrictStr
    pos_points: List[List[Number]] = []
    neg_points: List[List[Number]] = []
    obj_bbox: Optional[List[List[Number]]] = nullable()
    threshold: Optional[Number] = nullable()  # (sent by CVAT when its request had one; unused)


def functions(core):
    """The dashboard's function objects, as CVAT's LambdaFunction reads them (every annotation a
    string, as nuclio gives them; no startswith_box: CVAT reads bool("false") as true)."""
    def function(name, title, description, help_message):
        return {"metadata": {"name": name, "namespace": "nuclio", "annotations": {
                    "name": title, "type": "interactor", "version": "2", "spec": "", "framework": "samfast",
                    "min_pos_points": "0", "min_neg_points": "0", "startswith_box_optional": "true",
                    "help_message": help_message, "animated_gif": ""}},
                "spec": {"description": description},
                "status": {"state": "ready", "httpPort": 0}}
    model = f"{core.native.model_type} {core.native.precision} on {core.native.device}"
    return {
        EMBEDDING_FUNCTION: function(EMBEDDING_FUNCTION, "Segment Anything (samfast)",
                                     f"Segment Anything on samfast ({model}): the browser decodes the clicks",
                                     "Click inside an object (positive points) and outside it (negative points)"),
        MASK_FUNCTION: function(MASK_FUNCTION, "Segment Anything, masks from the server (samfast)",
                                f"Segment Anything on samfast ({model}): every click decoded on the server",
                                "Click inside an object (positive points) and outside it (negative points), "
                                "or draw a box"),
    }


def router(core, authorized) -> APIRouter:
    r = APIRouter(tags=["CVAT (nuclio dashboard)"], dependencies=[Depends(authorized)])

    @r.get("/api/functions", responses=errors(401))
    def list_functions():
        return functions(core)

    @r.get("/api/functions/{function_name}", responses=errors(401, 404))
    def get_function(function_name: str):
        found = functions(core).get(function_name)
        if found is None:
            raise HTTPException(404, f"no function {function_name}")
        return found

    @r.post("/api/function_invocations", responses=errors(400, 401, 404, 413, 415, 422, 503, 504))
    async def invoke(body: Invocation, x_nuclio_function_name: str = Header(...)):
        if x_nuclio_function_name not in (EMBEDDING_FUNCTION, MASK_FUNCTION):
            raise HTTPException(404, f"no function {x_nuclio_function_name}")
        start = time.perf_counter()
        data = base64_file(body.image, core.config.max_upload_bytes, "image")
        added = await run_in_threadpool(core.add_image, data, False, start)
        if x_nuclio_function_name == EMBEDDING_FUNCTION:
            embedding = await run_in_threadpool(core.embedding, added.id)
            return {"blob": base64.b64encode(embedding.astype("<f4").tobytes()).decode()}
        return await mask_answer(core, added, body, start)

    return r


async def mask_answer(core, added, body: Invocation, start: float):
    points = [p for p in body.pos_points] + [p for p in body.neg_points]
    labels = [1] * len(body.pos_points) + [0] * len(body.neg_points)
    box = None
    if body.obj_bbox:
        if len(body.obj_bbox) != 2 or any(len(c) != 2 for c in body.obj_bbox):
            raise HTTPException(422, "obj_bbox is [[x0, y0], [x1, y1]]")
        box = [*body.obj_bbox[0], *body.obj_bbox[1]]
    click = core.click(points or None, labels or None, box, None, False)
    masks, _, _, _ = await core.predict(added.id, click, start, False)
    mask = masks[0]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return {"mask": [[0]], "bounds": [0, 0, 0, 0]}  # (nothing inside)
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return {"mask": mask[y0:y1 + 1, x0:x1 + 1].astype(np.uint8).tolist(), "bounds": [x0, y0, x1, y1]}
