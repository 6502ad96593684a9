"""SamAutomaticMaskGenerator with upstream's options, defaults and records, over the library's
MaskGenerator (the whole pipeline, crops and filters included, runs in C++)."""
import math
import os
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from . import _samfast
from .predictor import SamPredictor
from .utils.amg import _c_int, build_all_layer_point_grids


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
        return (native_model, 0, _c_int("points_per_batch", self.points_per_batch), float(self.pred_iou_thresh),
                float(self.stability_score_thresh), float(self.stability_score_offset), float(self.box_nms_thresh),
                _c_int("crop_n_layers", self.crop_n_layers), float(self.crop_nms_thresh), float(self.crop_overlap_ratio),
                _c_int("crop_n_points_downscale_factor", self.crop_n_points_downscale_factor), grids,
                # Upstream removes regions of fewer pixels than the area: below 1.5 is below 2. (An area past
                # any image's pixel count removes every small region: the same as the largest int.)
                min(math.ceil(self.min_mask_region_area), 2**31 - 1), self.output_mode,
                float(self.predictor.model.mask_threshold))  # (upstream reads it at each generate, as here)

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
        image = np.ascontiguousarray(self._checked(image))
        records, self.last_timings = self._generator().generate(image, progress)
        return records

    def generate_many(self, images: Iterable[Any],
                      progress: Optional[Callable[[int, Any], None]] = None) -> Iterator[List[Dict[str, Any]]]:
        """Beyond upstream: records for each of many images (arrays, or paths to image files read as
        RGB), yielded one image at a time so that a folder's masks are never all held at once. The
        next image is read and resized on another thread while this one computes.
        progress, if given, is called with (index, image) before each image."""
        for i, (image, outcome) in enumerate(self.generate_each(images)):
            if progress is not None:
                progress(i, image)
            if isinstance(outcome, Exception):
                raise outcome
            yield outcome

    def generate_each(self, images: Iterable[Any]) -> Iterator[Tuple[Any, Union[List[Dict[str, Any]], Exception]]]:
        """Beyond upstream: (image, its records) for each of many images as generate_many makes them,
        or (image, the exception) where one image fails (unreadable, too small for the crops asked
        for, too large for the device's memory), so that a batch goes on past it. Ctrl-C and other
        interruptions are raised."""
        generator = self._generator()
        model = self.predictor.model._native_model()

        def load(image):
            if isinstance(image, (str, os.PathLike)):
                image = _samfast.read_image(os.fspath(image))
            image = np.ascontiguousarray(self._checked(image))
            return image, _samfast.prepare_image(model, image)

        with ThreadPoolExecutor(1, thread_name_prefix="samfast-prepare") as pool:
            for image, loading in _one_ahead(pool, images, load):
                try:
                    pixels, prepared = loading.result()
                    records, self.last_timings = generator.generate(pixels, None, prepared)
                    yield image, records
                except (RuntimeError, ValueError, OSError, MemoryError) as e:
                    yield image, e

    @staticmethod
    def _checked(image) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"generate expects an (H, W, 3) uint8 image, got {image.shape} of {image.dtype}")
        return image


def _one_ahead(pool: Executor, items: Iterable[Any], work: Callable[[Any], Any]) -> Iterator[Tuple[Any, Future]]:
    """(item, future of work(item)) for each item, with the next item's work already submitted to
    pool when one is handed out."""
    pending = None
    for item in items:
        future = pool.submit(work, item)
        if pending is not None:
            yield pending
        pending = (item, future)
    if pending is not None:
        yield pending
