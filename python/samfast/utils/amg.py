"""The helpers of upstream's segment_anything.utils.amg that other code imports, computed by the
library (same results as upstream's; no torch, OpenCV or pycocotools needed)."""
from typing import Any, Dict, List, Tuple

import numpy as np

from .. import _samfast
from .._torch import is_tensor


def _mask_bytes(mask) -> np.ndarray:
    if is_tensor(mask):
        mask = mask.detach().to("cpu").numpy()
    return np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)


def mask_to_rle_pytorch(tensor) -> List[Dict[str, Any]]:
    """(B, H, W) masks (torch or numpy) -> uncompressed RLE dicts {"size": [h, w], "counts": [...]},
    runs over the column-major scan as pycocotools."""
    masks = _mask_bytes(tensor)
    if masks.ndim != 3:
        raise ValueError(f"mask_to_rle_pytorch expects (B, H, W) masks, got shape {masks.shape}")
    h, w = masks.shape[1:]
    return [{"size": [h, w], "counts": _samfast.mask_to_rle(m)} for m in masks]


def _counts(rle: Dict[str, Any]) -> List[int]:
    """An uncompressed RLE's counts as the engine takes them (32-bit), or a ValueError."""
    counts = [int(c) for c in rle["counts"]]
    bad = next((c for c in counts if not 0 <= c < 2**32), None)
    if bad is not None:
        raise ValueError(f"RLE count {bad} is outside 0..2^32-1")
    return counts


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE -> (h, w) bool mask."""
    h, w = rle["size"]
    return _samfast.rle_to_mask(_counts(rle), _c_int("height", h), _c_int("width", w))


def area_from_rle(rle: Dict[str, Any]) -> int:
    return sum(rle["counts"][1::2])


def coco_encode_rle(uncompressed_rle: Dict[str, Any]) -> Dict[str, Any]:
    """Uncompressed RLE -> COCO's compressed form {"size": [h, w], "counts": str}, as pycocotools."""
    h, w = uncompressed_rle["size"]
    counts = _samfast.rle_to_coco_string(_counts(uncompressed_rle), _c_int("height", h), _c_int("width", w))
    return {"size": [h, w], "counts": counts}


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> Tuple[np.ndarray, bool]:
    """Removes small disconnected regions ("islands") or fills small holes ("holes") in a mask.
    Returns the mask and an indicator of whether it was modified."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', not {mode!r}")
    out, changed = _samfast.remove_small_regions(_mask_bytes(mask), float(area_thresh), mode == "holes")
    return (out if changed else np.asarray(mask)), changed


def _c_int(name: str, value) -> int:
    """An integer option as the engine takes it (a C int), or a ValueError naming it."""
    number = int(value)
    if not -2**31 <= number < 2**31:
        raise ValueError(f"{name} {number} is out of range")
    return number


def build_point_grid(n_per_side: int) -> np.ndarray:
    """A 2D grid of points evenly spaced in [0, 1] x [0, 1]."""
    return _samfast.build_all_layer_point_grids(_c_int("n_per_side", n_per_side), 0, 1)[0]


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> List[np.ndarray]:
    """Point grids for all crop layers."""
    return _samfast.build_all_layer_point_grids(_c_int("n_per_side", n_per_side), _c_int("n_layers", n_layers),
                                                _c_int("scale_per_layer", scale_per_layer))
