"""SamAutomaticMaskGenerator with upstream's options, defaults and records, over the library's
MaskGenerator (the whole pipeline, crops and filters included, runs in C++)."""
import os
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import numpy as np

from . import _samfast
from .predictor import SamPredictor
from .utils.amg import build_all_layer_point_grids


class SamAutomaticMaskGenerator:
    """Generates masks for an entire image from a grid of point prompts, then filters them
    (ref: segment_anything.SamAutomaticMaskGenerator; same arguments and defaults). The records of
    generate() have upstream's keys and types. Options may be changed on the object between calls,
    as upstream reads them at each generate()."""

    def __init__(
        self,
        model,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("Exactly one of points_per_side or point_grid must be provided.")
        if output_mode not in ("binary_mask", "uncompressed_rle", "coco_rle"):
            raise ValueError(f"Unknown output_mode {output_mode}.")
        if points_per_side is not None:
            point_grids = build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        self.predictor = SamPredictor(model)
        self.point_grids = point_grids
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.last_timings: Dict[str, float] = {}
        self._native, self._native_key = None, None
        _samfast.MaskGenerator.validate(*self._options(None)[1:])  # refuse bad options now, as upstream's asserts do

    def _options(self, native_model):
        grids = [np.ascontiguousarray(g, dtype=np.float64) for g in self.point_grids]
        return (native_model, 0, int(self.points_per_batch), float(self.pred_iou_thresh),
                float(self.stability_score_thresh), float(self.stability_score_offset), float(self.box_nms_thresh),
                int(self.crop_n_layers), float(self.crop_nms_thresh), float(self.crop_overlap_ratio),
                int(self.crop_n_points_downscale_factor), grids, int(self.min_mask_region_area), self.output_mode)

    def _generator(self):
        options = self._options(self.predictor.model._native_model())
        key = options[:11] + (tuple(g.tobytes() for g in options[11]),) + options[12:]  # (arrays by value)
        if self._native is None or key != self._native_key:
            self._native, self._native_key = _samfast.MaskGenerator(*options), key
        return self._native

    def generate(self, image: np.ndarray, progress: Optional[Callable[[int, int], None]] = None) -> List[Dict[str, Any]]:
        """Masks for an (H, W, 3) uint8 RGB image: a list of records with segmentation (bool (H, W)
        array, or an RLE dict per output_mode), area, bbox (XYWH), predicted_iou, point_coords,
        stability_score and crop_box. progress, if given, is called with (crops done, crops) after
        each crop; Ctrl-C stops the image between crops."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"generate expects an (H, W, 3) uint8 image, got {image.shape} of {image.dtype}")
        records, self.last_timings = self._generator().generate(np.ascontiguousarray(image), progress)
        return records

    def generate_many(self, images: Iterable[Any],
                      progress: Optional[Callable[[int, Any], None]] = None) -> Iterator[List[Dict[str, Any]]]:
        """Beyond upstream: records for each of many images (arrays, or paths to image files read as
        RGB), yielded one image at a time so that a folder's masks are never all held at once.
        progress, if given, is called with (index, image) before each image."""
        for i, image in enumerate(images):
            if progress is not None:
                progress(i, image)
            if isinstance(image, (str, os.PathLike)):
                image = _samfast.read_image(os.fspath(image))
            yield self.generate(image)
