"""Label Studio's ML backend, as label-studio-ml-backend's SAM example serves it: Label Studio's
project settings, Model, "Connect model", URL http://HOST:PORT/labelstudio, interactive
preannotations on (and, with --token, basic auth with the token as the password).

Label Studio calls /health and /setup when it connects (/setup names its own address and an access
token for the task images), then /predict for each smart-tool interaction: the task (its image's
URL) and the user's keypoints (x, y in percent of the image, is_positive) and rectangles (percent),
as the SAM example reads them (pixels truncated to integers, one box, multimask off). The answer is
a brushlabels result in Label Studio's own RLE (mask_to_label_studio_rle) on the project's
BrushLabels, labelled as the user's prompt was.

Task images come from Label Studio's http(s) address only (see image_source, download), within the
request's --timeout, with --label-studio-api-key or /setup's token (authorization); an image is
known by its absolute URL afterwards, so a click skips the download.
ref: HumanSignal/label-studio-ml-backend label_studio_ml/api.py (routes, envelope),
     label_studio_ml/examples/segment_anything_model/model.py (predict, get_results);
     HumanSignal/label-studio label_studio/ml/models.py, api_connector.py (the requests)"""
import asyncio
import base64
import functools
import json
import math
import re
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ElementTree
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import httpx
from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, StrictStr

from ... import _samfast
from ..schemas import errors, nullable

SCHEMES = ("http", "https")
CLOUD_SCHEMES = ("s3", "gs", "azure-blob")  # (ref: label_studio_sdk io.py is_cloud_storage_uri)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
URL_SAFE = "!#$%&'()*+,/:;=?@[]~"  # (what requests leaves unquoted: spaces and non-ASCII get quoted)


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
    # (the image's absolute URL, the token it is fetched with) -> its image id, so that a click skips
    # the download. Keyed by the absolute URL: one relative URL names different files on different
    # Label Studio hosts. A file replaced under the same URL keeps its old masks while its embedding
    # stays cached (Label Studio names each upload afresh, so this takes a storage rewriting a file).
    known: "OrderedDict[Tuple[str, str], str]" = OrderedDict()

    @r.get("/health")
    @r.get("/")
    def health():
        return {"status": "UP", "model_class": "samfast", "model_version": version}

    @r.post("/setup", dependencies=[Depends(authorized)], responses=errors(400, 401, 422))
    async def setup(body: Setup):
        if body.project and body.hostname:  # (its address and token, for its task images: see download)
            checked_address(body.hostname, "hostname")
            await core.remember("labelstudio-project:" + body.project,
                                {"hostname": body.hostname, "access_token": body.access_token or ""})
        return {"model_version": version}

    @r.post("/webhook", dependencies=[Depends(authorized)], status_code=201, responses=errors(401))
    def webhook():
        return {}  # (annotations are not used to train)

    async def image_id_of(source: Tuple[str, str], start: float) -> str:
        """The image id of a task's image (downloaded and added unless known)."""
        image_id = known.get(source)
        if image_id is None or not await core.known(image_id):
            seconds = start + core.config.request_timeout_s - time.perf_counter()
            data = await download(*source, seconds, core.config)
            image_id = (await run_in_threadpool(core.add_image, data, True, start)).id
        known[source] = image_id
        known.move_to_end(source)
        while len(known) > 4096:
            known.popitem(last=False)
        return image_id

    @r.post("/predict", dependencies=[Depends(authorized)], responses=errors(400, 401, 413, 415, 422, 502, 503, 504))
    async def predict(body: PredictBody):
        start = time.perf_counter()
        prompts = context_results(body.params)
        if not prompts or not body.tasks:
            return {"results": [], "model_version": version}  # (no interaction yet: no prediction)
        brush, image_tag, data_key = brush_target(body.label_config or "")
        url = task_image(body.tasks[0], data_key)
        points, labels, box, label = prompts_of(prompts)  # (checked before the image is fetched)
        project = await core.recall("labelstudio-project:" + (body.project or ""))
        image_id = await image_id_of(image_source(url, project, core.config, body.tasks[0].get("id")), start)
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


def context_results(params: Optional[Dict[str, Any]]) -> Optional[list]:
    """The results of the user's interaction (params.context.result), None without one."""
    context = (params or {}).get("context") or {}
    results = context.get("result") if isinstance(context, dict) else None
    if results is not None and not isinstance(results, list):
        raise HTTPException(422, "params.context.result must be a list of Label Studio results "
                                 f"(keypoints, rectangles), got {type(results).__name__}")
    return results


def task_image(task: Dict[str, Any], data_key: str) -> str:
    """The URL of a task's image, under data.<the Image's value>."""
    data = task.get("data")
    if not isinstance(data, dict):
        raise HTTPException(422, f"the task's data must be an object (with its image under data.{data_key})")
    url = data.get(data_key)
    if not isinstance(url, str) or not url:
        raise HTTPException(422, f"the task has no image under data.{data_key}")
    return url


def prompts_of(prompts):
    """SAM prompts from Label Studio's context results, as the SAM example reads them: keypoints and
    a rectangle in percent of original_width/height, to integer pixels; the label of the last one."""
    points, labels, box, label = [], [], None, None
    for p in prompts:
        try:
            width, height = float(p["original_width"]), float(p["original_height"])
            value, kind = p["value"], p["type"]
            x, y = pixels(value, "x", width), pixels(value, "y", height)
            label = (value.get(kind) or [None])[0]
            if kind == "keypointlabels":
                points.append([int(x), int(y)])
                labels.append(int(bool(p.get("is_positive", False))))
            elif kind == "rectanglelabels":
                w, h = pixels(value, "width", width), pixels(value, "height", height)
                box = [int(x), int(y), int(x + w), int(y + h)]
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise HTTPException(422, f"a context result is not a keypoint or a rectangle of Label Studio: {e!r}") \
                from None
    return points, labels, box, label


def pixels(value: Dict[str, Any], key: str, size: float) -> float:
    """value[key], a percent of size, in pixels; a ValueError unless finite (int() of an infinity,
    as 1e308 percent of a width overflows to, raises OverflowError)."""
    result = float(value[key]) * size / 100
    if not math.isfinite(result):
        raise ValueError(f"{key} of {value[key]!r} percent of {size:g} pixels is not a finite number")
    return result


def checked_address(address: str, name: str) -> urllib.parse.SplitResult:
    """Label Studio's address, split, or the 422 that says why samfast will not fetch from it: an
    http(s) address only (a file:// one would have samfast read, and answer about, its own disk)."""
    try:
        parts = urllib.parse.urlsplit(address)
        parts.port  # (raises ValueError for a port out of range)
    except ValueError as e:
        raise HTTPException(422, f"Label Studio's {name} {address!r} is not a URL: {e}") from None
    if parts.scheme not in SCHEMES or not parts.hostname or CONTROL.search(address):
        raise HTTPException(422, f"Label Studio's {name} must be an http:// or https:// address, got {address!r}")
    return parts


def image_source(url: str, project: Optional[Dict[str, str]], config, task_id: Any = None) -> Tuple[str, str, str]:
    """(the absolute URL, the token, Label Studio's address) a task's image is fetched with: a path on
    Label Studio's address (from /setup, else --label-studio-url), an absolute URL on that address,
    or a cloud storage's URI (s3://, gs://, azure-blob://), which Label Studio serves at
    /tasks/ID/presign/ as its SDK asks for it. Other hosts are not fetched (the server would fetch
    whatever a request names). The token: --label-studio-api-key when given (a personal access
    token: /setup's is a legacy token, which Label Studio 1.20+ refuses unless legacy tokens are
    enabled), else /setup's."""
    base = (project or {}).get("hostname") or config.label_studio_url
    token = config.label_studio_api_key or (project or {}).get("access_token") or ""
    if not base:
        raise HTTPException(422, "Label Studio's address is not known: connect the model again in Label Studio "
                                 "(its /setup names it), or start samfast-server with --label-studio-url")
    origin = checked_address(base, "address (its /setup hostname or --label-studio-url)")
    if CONTROL.search(url):
        raise HTTPException(422, f"the task's image URL {url!r} has control characters")
    if urllib.parse.urlsplit(url).scheme in CLOUD_SCHEMES:  # (ref: label_studio_sdk io.py get_local_path)
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise HTTPException(422, f"the task's image {url!r} is in a cloud storage, which Label Studio serves "
                                     "by the task's id: the task has none")
        # (relative: under Label Studio's address, its path too, as the SDK's concat_urls puts it)
        url = f"tasks/{task_id}/presign/?fileuri=" + base64.urlsafe_b64encode(url.encode()).decode()
    target = urllib.parse.urlsplit(urllib.parse.urljoin(base.rstrip("/") + "/", url))
    if (target.scheme, target.netloc) != (origin.scheme, origin.netloc):
        raise HTTPException(422, f"the task's image is not on Label Studio ({base}): samfast fetches images from "
                                 "Label Studio only")
    quoted = target._replace(path=urllib.parse.quote(target.path, safe=URL_SAFE),
                             query=urllib.parse.quote(target.query, safe=URL_SAFE), fragment="")
    return urllib.parse.urlunsplit(quoted), token, base.rstrip("/")


def jwt_part(token: str, index: int) -> Optional[dict]:
    """Part `index` of a JWT (0 its header, 1 its claims) as a dict, or None when it is not one.
    Its signature is Label Studio's to check."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        part = json.loads(base64.urlsafe_b64decode(parts[index] + "=" * (-len(parts[index]) % 4)))
    except ValueError:
        return None
    return part if isinstance(part, dict) else None


def is_jwt(token: str) -> bool:
    """Whether a token is a JWT: Label Studio's personal access tokens are (refresh tokens), its
    legacy tokens are not (ref: label_studio_sdk io.py is_jwt_well_formed)."""
    return "alg" in (jwt_part(token, 0) or {})


def jwt_expiry(token: str) -> float:
    """A JWT's exp claim (Unix time), or in a minute."""
    exp = (jwt_part(token, 1) or {}).get("exp")
    return float(exp) if isinstance(exp, (int, float)) else time.time() + 60


_access_tokens: Dict[Tuple[str, str], Tuple[str, float]] = {}  # (address, PAT) -> (access token, its expiry)


async def authorization(client: httpx.AsyncClient, base: str, token: str) -> Dict[str, str]:
    """The header a download sends: "Token" with a legacy token; with a personal access token,
    "Bearer" with an access token that Label Studio gives for it (POST /api/token/refresh/, as its
    SDK does), kept until a little before it expires."""
    if not token:
        return {}
    if not is_jwt(token):
        return {"Authorization": f"Token {token}"}
    access, expiry = _access_tokens.get((base, token), ("", 0.0))
    if time.time() > expiry - 30:
        reply = await client.post(base + "/api/token/refresh/", json={"refresh": token})
        access = reply.json().get("access") if reply.status_code == 200 else None
        if not isinstance(access, str) or not access:
            raise HTTPException(502, f"Label Studio answered {reply.status_code} for an access token for the personal "
                                     f"access token (POST {base}/api/token/refresh/)")
        _access_tokens[(base, token)] = access, jwt_expiry(access)
    return {"Authorization": f"Bearer {access}"}


async def download(url: str, token: str, base: str, seconds: float, config) -> bytes:
    """A task's image (url from image_source) with Label Studio's token, in at most `seconds` (else
    504: a socket timeout bounds each read, not the whole download, and a host sending a byte every
    few seconds would hold the request for days) and max_upload_bytes (else 413). In the event loop,
    so that the deadline cancels the download wherever it is (connecting, headers, body) and closes
    its connection. Label Studio's redirects (a cloud storage's signed URL) are followed, to http(s)
    only, and httpx sends the token to Label Studio's own origin only."""
    if seconds > 0:
        try:
            return await asyncio.wait_for(fetch(url, token, base, config.max_upload_bytes), seconds)
        except asyncio.TimeoutError:
            pass
    raise HTTPException(504, f"the task's image {url} did not arrive from Label Studio within the request's "
                             f"{config.request_timeout_s:g} s")


async def fetch(url: str, token: str, base: str, max_bytes: int) -> bytes:
    try:
        async with httpx.AsyncClient(follow_redirects=True, timeout=None) as client:
            headers = await authorization(client, base, token)
            async with client.stream("GET", url, headers=headers) as reply:
                if reply.status_code == 401 and token and not is_jwt(token):
                    raise HTTPException(502, f"Label Studio answered 401 for the task's image {url}: its legacy token "
                                             "is refused where legacy tokens are off (Label Studio's default since "
                                             "1.20); give samfast-server a personal access token "
                                             "(--label-studio-api-key or LABEL_STUDIO_API_KEY)")
                if reply.status_code != 200:
                    raise HTTPException(502, f"Label Studio answered {reply.status_code} for the task's image {url}")
                declared = reply.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise HTTPException(413, f"the task's image of {declared} bytes is past the limit of {max_bytes}")
                data = bytearray()
                async for chunk in reply.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        raise HTTPException(413, f"the task's image is past the limit of {max_bytes} bytes")
                return bytes(data)
    except httpx.UnsupportedProtocol:  # (a redirect to file:, ftp:, ...)
        raise HTTPException(502, f"Label Studio redirected the task's image {url} to an address that is not "
                                 "http(s): samfast follows http(s) redirects only") from None
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as e:
        raise HTTPException(502, f"could not fetch the task's image {url} from Label Studio: {e!r}") from None
