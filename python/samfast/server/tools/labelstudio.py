"""Label Studio's ML backend, as label-studio-ml-backend's SAM example serves it: Label Studio's
project settings, Model, "Connect model", URL http://HOST:PORT/labelstudio, interactive
preannotations on (and, with --token, basic auth with the token as the password).

Label Studio calls /health and /setup when it connects (/setup names its own address and an access
token for the task images), then /predict for each smart-tool interaction: the task (its image's
URL) and the user's keypoints (x, y in percent of the image, is_positive) and rectangles (percent),
as the SAM example reads them (pixels truncated to integers, one box, multimask off). The answer is
a brushlabels result in Label Studio's own RLE (mask_to_label_studio_rle) on the project's
BrushLabels, labelled as the user's prompt was.
ref: HumanSignal/label-studio-ml-backend label_studio_ml/api.py (routes, envelope),
     label_studio_ml/examples/segment_anything_model/model.py (predict, get_results);
     HumanSignal/label-studio label_studio/ml/models.py, api_connector.py (the requests)"""
import functools
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ElementTree
from collections import OrderedDict
from typing import Any, Dict, List, Optional

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, StrictStr

from ... import _samfast
from ..schemas import errors, nullable



class Setup(BaseModel):  # (and "schema", the label config, which /predict sends again)
    project: Optional[StrictStr] = nullable()
    hostname: Optional[StrictStr] = nullable()
    access_token: Optional[StrictStr] = nullable()


class PredictBody(BaseModel):
    tasks: List[Dict[str, Any]]
    project: Optional[StrictStr] = nullable()
    label_config: Optional[StrictStr] = nullable()
    params: Optional[Dict[str, Any]] = nullable()


@functools.lru_cache(maxsize=64)
def brush_target(label_config: str):
    """(BrushLabels name, Image name, the task data key of the Image) of a label config: the first
    BrushLabels whose toName is an Image, as the SAM example's get_first_tag_occurence finds it."""
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as e:
        raise HTTPException(422, f"the label config is not XML: {e}") from None
    images = {t.get("name"): t.get("value", "") for t in root.iter("Image")}
    for tag in root.iter("BrushLabels"):
        if tag.get("toName") in images:
            return tag.get("name"), tag.get("toName"), images[tag.get("toName")].lstrip("$")
    raise HTTPException(422, "the project's label config has no BrushLabels on an Image")


def router(core, authorized) -> APIRouter:
    r = APIRouter(prefix="/labelstudio", tags=["Label Studio ML backend"])
    version = f"samfast-{core.native.model_type}"
    known: "OrderedDict[str, str]" = OrderedDict()  # an image URL -> its image id (a click skips the download)

    @r.get("/health")
    @r.get("/")
    def health():
        return {"status": "UP", "model_class": "samfast", "model_version": version}

    @r.post("/setup", dependencies=[Depends(authorized)], responses=errors(400, 401, 422))
    async def setup(body: Setup):
        if body.project and body.hostname:  # (its address and token, for its task images: see download)
            await core.remember("labelstudio-project:" + body.project,
                                {"hostname": body.hostname, "access_token": body.access_token or ""})
        return {"model_version": version}

    @r.post("/webhook", dependencies=[Depends(authorized)], status_code=201, responses=errors(401))
    def webhook():
        return {}  # (annotations are not used to train)

    @r.post("/predict", dependencies=[Depends(authorized)], responses=errors(400, 401, 413, 415, 422, 502, 503, 504))
    async def predict(body: PredictBody):
        start = time.perf_counter()
        context = (body.params or {}).get("context") or {}
        prompts = context.get("result") if isinstance(context, dict) else None
        if not prompts or not body.tasks:
            return {"results": [], "model_version": version}  # (no interaction yet: no prediction)
        brush, image_tag, data_key = brush_target(body.label_config or "")
        url = body.tasks[0].get("data", {}).get(data_key)
        if not isinstance(url, str):
            raise HTTPException(422, f"the task has no image under data.{data_key}")
        image_id = known.get(url)
        if image_id is None or not await core.known(image_id):
            project = await core.recall("labelstudio-project:" + (body.project or ""))
            data = await run_in_threadpool(download, url, project, core)
            image_id = (await run_in_threadpool(core.add_image, data)).id
            known[url] = image_id
            while len(known) > 4096:
                known.popitem(last=False)
        known.move_to_end(url)
        points, labels, box, label = prompts_of(prompts)
        click = core.click(points or None, labels or None, box, None, False)
        masks, scores, _, (height, width) = await core.predict(image_id, click, start, False)
        mask = masks[0]
        rle = list(_samfast.mask_to_label_studio_rle(mask.view("uint8")))
        score = float(scores[0])
        result = {"id": uuid.uuid4().hex[:10], "from_name": brush, "to_name": image_tag,
                  "original_width": int(width), "original_height": int(height), "image_rotation": 0,
                  "value": {"format": "rle", "rle": rle, "brushlabels": [label] if label else []},
                  "score": score, "type": "brushlabels", "readonly": False}
        return {"results": [{"result": [result], "model_version": version, "score": score}],
                "model_version": version}

    return r


def prompts_of(prompts):
    """SAM prompts from Label Studio's context results, as the SAM example reads them: keypoints and
    a rectangle in percent of original_width/height, to integer pixels; the label of the last one."""
    points, labels, box, label = [], [], None, None
    for p in prompts:
        try:
            width, height = float(p["original_width"]), float(p["original_height"])
            value, kind = p["value"], p["type"]
            x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
            label = (value.get(kind) or [None])[0]
            if kind == "keypointlabels":
                points.append([int(x), int(y)])
                labels.append(int(bool(p.get("is_positive", False))))
            elif kind == "rectanglelabels":
                w, h = float(value["width"]) * width / 100, float(value["height"]) * height / 100
                box = [int(x), int(y), int(x + w), int(y + h)]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise HTTPException(422, f"a context result is not a keypoint or a rectangle of Label Studio: {e!r}") \
                from None
    return points, labels, box, label


def download(url: str, project: Optional[Dict[str, str]], core) -> bytes:
    """A task's image from Label Studio: a path on Label Studio's address (from /setup, else
    --label-studio-url) with its access token, or an absolute URL on that address. Other hosts are
    not fetched (the server would fetch whatever a request names)."""
    config = core.config
    base = (project or {}).get("hostname") or config.label_studio_url
    token = (project or {}).get("access_token") or config.label_studio_api_key
    if not base:
        raise HTTPException(422, "Label Studio's address is not known: connect the model again in Label Studio "
                                 "(its /setup names it), or start samfast-server with --label-studio-url")
    full = urllib.parse.urljoin(base.rstrip("/") + "/", url)
    origin = urllib.parse.urlsplit(base)
    target = urllib.parse.urlsplit(full)
    if (target.scheme, target.netloc) != (origin.scheme, origin.netloc):
        raise HTTPException(422, f"the task's image is not on Label Studio ({base}): samfast fetches images from "
                                 "Label Studio only")
    request = urllib.request.Request(full, headers={"Authorization": f"Token {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            data = reply.read(config.max_upload_bytes + 1)
    except urllib.error.HTTPError as e:
        raise HTTPException(502, f"Label Studio answered {e.code} for the task's image {url}") from None
    except (urllib.error.URLError, OSError) as e:
        raise HTTPException(502, f"could not fetch the task's image from Label Studio: {e}") from None
    return data
