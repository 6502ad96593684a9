"""ResizeLongestSide, as upstream's segment_anything.utils.transforms: images and coordinates to the
encoder's input frame. apply_image is the library's PIL-exact resize (no PIL or torch needed); the
_torch forms work on torch tensors on any device."""
from copy import deepcopy
from typing import Tuple

import numpy as np

from .. import _samfast
from .._torch import require_torch


class ResizeLongestSide:
    """Resizes images to longest side 'target_length', as well as provides methods for resizing
    coordinates and boxes, for numpy arrays and batched torch tensors."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """Expects a numpy array with shape HxWxC in uint8 format (C = 3: RGB or BGR)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"apply_image expects an (H, W, 3) uint8 array, got {image.shape} of {image.dtype}")
        h, w = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return _samfast.resize_image(np.ascontiguousarray(image), h, w)

    def apply_coords(self, coords: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """Expects a numpy array of length 2 in the final dimension. Requires the original image
        size in (H, W) format. Returns float64, as upstream."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(original_size[0], original_size[1], self.target_length)
        coords = deepcopy(coords).astype(float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """Expects a numpy array shape Bx4. Requires the original image size in (H, W) format."""
        boxes = self.apply_coords(boxes.reshape(-1, 2, 2), original_size)
        return boxes.reshape(-1, 4)

    def apply_image_torch(self, image):
        """Expects batched images with shape BxCxHxW and float format; bilinear with antialiasing,
        which may not exactly match apply_image (the transformation the model expects). Unlike
        upstream, the target size is computed from H and W (upstream passes B and C)."""
        torch = require_torch("apply_image_torch")
        target_size = self.get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return torch.nn.functional.interpolate(image, target_size, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords, original_size: Tuple[int, ...]):
        """Expects a torch tensor with length 2 in the last dimension. Requires the original image
        size in (H, W) format."""
        torch = require_torch("apply_coords_torch")
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(original_size[0], original_size[1], self.target_length)
        coords = deepcopy(coords).to(torch.float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(self, boxes, original_size: Tuple[int, ...]):
        """Expects a torch tensor with shape Bx4. Requires the original image size in (H, W) format."""
        boxes = self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size)
        return boxes.reshape(-1, 4)

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        """Compute the output size given input size and target long side length."""
        return tuple(_samfast.preprocess_shape(int(oldh), int(oldw), int(long_side_length)))
