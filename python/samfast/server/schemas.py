"""The API's request and response bodies (pydantic: validated on the way in, described in /openapi.json)."""
from typing import Dict, List, Literal, Optional, Union

from pydantic import VERSION, BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr, confloat, conint

Number = Union[StrictInt, StrictFloat]  # (no "1" or true for a number: pydantic 1 would take them)


def nullable():
    """A field that may be absent or null (annotation tools send null for what they do not have): an
    Optional says so in pydantic 2's schema; pydantic 1's needs OpenAPI 3.0's nullable."""
    return Field(None) if VERSION.startswith("2") else Field(None, nullable=True)


def bounded(**bounds):
    """A Number within bounds (ge, le, lt, ...)."""
    return Union[conint(strict=True, **bounds), confloat(strict=True, **bounds)]


class PredictRequest(BaseModel):
    points: Optional[List[List[Number]]] = Field(None, description="(x, y) in image pixels")
    labels: Optional[List[conint(strict=True, ge=-1, le=1)]] = Field(
        None, description="1 foreground, 0 background, one per point")
    box: Optional[List[Number]] = Field(None, description="x0, y0, x1, y1 in image pixels (4 numbers)")
    mask_input: Optional[StrictStr] = Field(None, description="base64 .npy of a (1, 256, 256) float32 low-res logits "
                                                        "array, as low_res_logits of an earlier response")
    multimask_output: StrictBool = True
    format: Literal["png", "rle", "polygon"] = Field(
        "png", description="png: base64 PNG per mask; rle: COCO RLE; polygon: COCO polygons (outer contours, "
                           "[x0, y0, x1, y1, ...] each, as OpenCV's findContours traces them)")
    return_low_res_logits: StrictBool = False


class PredictResponse(BaseModel):
    masks: List[Dict[str, object]]
    scores: List[Optional[float]] = Field(description="predicted IoU per mask (null if not finite)")
    low_res_logits: Optional[str] = None
    elapsed_ms: float


class EverythingRequest(BaseModel):
    points_per_side: conint(strict=True, ge=1, le=128) = 32
    points_per_batch: conint(strict=True, ge=1, le=256) = 64  # (a batch's masks are in memory at 1024x1024)
    pred_iou_thresh: Number = 0.88
    stability_score_thresh: Number = 0.95
    stability_score_offset: Number = 1.0
    box_nms_thresh: bounded(ge=0, le=1) = 0.7
    crop_n_layers: conint(strict=True, ge=0, le=3) = 0
    crop_nms_thresh: bounded(ge=0, le=1) = 0.7
    crop_overlap_ratio: bounded(ge=0, lt=1) = 512 / 1500
    crop_n_points_downscale_factor: conint(strict=True, ge=1, le=16) = 1
    min_mask_region_area: conint(strict=True, ge=0, le=2**31 - 1) = 0


class EverythingResponse(BaseModel):
    records: List[Dict[str, object]] = Field(description="upstream's records: segmentation as COCO RLE, area, bbox, "
                                                         "predicted_iou, point_coords, stability_score, crop_box")
    elapsed_ms: float


class ImageInfo(BaseModel):
    id: str
    width: int
    height: int
    cached: bool = Field(description="the embedding was already computed (no encoder pass)")
    elapsed_ms: float


class Base64Image(BaseModel):
    image_base64: StrictStr


class Error(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: List[Union[str, int]]
    msg: str
    type: str


class Rejected(BaseModel):
    """422: the server's own checks give a sentence, FastAPI's validation of the body a list."""
    detail: Union[str, List[FieldError]]


def errors(*codes):
    """The error answers an operation documents: {"detail": sentence}; a 422 may be FastAPI's list."""
    return {c: {"model": Rejected if c == 422 else Error} for c in codes}
