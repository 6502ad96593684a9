"""The API's request and response bodies (pydantic: validated on the way in, described in /openapi.json)."""
from typing import Dict, List, Literal, Optional

from pydantic import BaseModel, Field


class PredictRequest(BaseModel):
    points: Optional[List[List[float]]] = Field(None, description="(x, y) in image pixels")
    labels: Optional[List[int]] = Field(None, description="1 foreground, 0 background, one per point")
    box: Optional[List[float]] = Field(None, description="x0, y0, x1, y1 in image pixels (4 numbers)")
    mask_input: Optional[str] = Field(None, description="base64 .npy of a (1, 256, 256) float32 low-res logits "
                                                        "array, as low_res_logits of an earlier response")
    multimask_output: bool = True
    format: Literal["png", "rle", "polygon"] = Field(
        "png", description="png: base64 PNG per mask; rle: COCO RLE; polygon: COCO polygons (outer contours, "
                           "[x0, y0, x1, y1, ...] each, as OpenCV's findContours traces them)")
    return_low_res_logits: bool = False


class PredictResponse(BaseModel):
    masks: List[Dict[str, object]]
    scores: List[float]
    low_res_logits: Optional[str] = None
    elapsed_ms: float


class EverythingRequest(BaseModel):
    points_per_side: int = Field(32, ge=1, le=128)
    points_per_batch: int = Field(64, ge=1, le=1024)
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = Field(0.7, ge=0, le=1)
    crop_n_layers: int = Field(0, ge=0, le=3)
    crop_nms_thresh: float = Field(0.7, ge=0, le=1)
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1)
    crop_n_points_downscale_factor: int = Field(1, ge=1, le=16)
    min_mask_region_area: int = Field(0, ge=0)


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
    image_base64: str
