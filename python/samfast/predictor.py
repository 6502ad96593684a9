"""SamPredictor with upstream's names, arguments and return types, over the library's Predictor."""
import operator
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import _samfast
from ._torch import host_float32, require_torch, torch_or_none
from .utils.transforms import ResizeLongestSide


class SamPredictor:
    """Calculates the image embedding of an image once, then predicts masks for prompts on it
    (ref: segment_anything.SamPredictor). Beyond upstream: set_images() and predict_batch() for many
    images and many prompts in one call. Predictors of one model may run on several threads: the
    model runs one computation at a time, with the GIL released."""

    def __init__(self, sam_model) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.reset_image()

    # The engine's predictor, made on first use for the model's current weights (subclasses that
    # set self.model without calling __init__, as samgeo's does, work too).
    def _predictor(self):
        native_model = self.model._native_model()
        if getattr(self, "_native", None) is None or self._native_model_of is not native_model:
            self._native = _samfast.Predictor(native_model)
            self._native_model_of = native_model
        return self._native

    def _require_image(self):
        if not getattr(self, "is_image_set", False):
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        if self._native_model_of is not self.model._native_model():  # (its embedding is of the old model)
            raise RuntimeError("The model's weights or device changed (load_state_dict, .to) since the image was "
                               "set: set it again with .set_image(...).")
        return self._native

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Calculates the image embedding of an (H, W, 3) uint8 image in RGB or BGR format."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be in ['RGB', 'BGR'], is {image_format}.")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"set_image expects an (H, W, 3) uint8 image, got {image.shape} of {image.dtype}")
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        self.reset_image()
        p = self._predictor()
        p.set_image(np.ascontiguousarray(image))
        self._image_set(p)

    def set_torch_image(self, transformed_image, original_image_size: Tuple[int, ...]) -> None:
        """Calculates the image embedding of an image already resized with transform.apply_image
        (1x3xHxW, values 0..255, long side img_size), as upstream."""
        shape = tuple(transformed_image.shape)
        size = self.model.image_encoder.img_size
        if len(shape) != 4 or shape[1] != 3 or max(*shape[2:]) != size:
            raise ValueError(f"set_torch_image input must be BCHW with long side {size}, got {shape}")
        self.reset_image()
        p = self._predictor()
        p.set_prepared_image(host_float32(transformed_image), tuple(int(v) for v in original_image_size))
        self._image_set(p)

    def set_images(self, images: Sequence[np.ndarray], image_format: str = "RGB") -> None:
        """Beyond upstream: several images through the encoder in one batch. predict(...,
        image=i) and predict_batch then name the image of each prompt."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be in ['RGB', 'BGR'], is {image_format}.")
        arrays = []
        for image in images:
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"set_images expects (H, W, 3) uint8 images, got {image.shape} of {image.dtype}")
            arrays.append(np.ascontiguousarray(image if image_format == self.model.image_format else image[..., ::-1]))
        self.reset_image()
        p = self._predictor()
        p.set_images(arrays)
        self._image_set(p)

    def _image_set(self, p) -> None:
        self.original_size = tuple(p.original_size(0))
        self.input_size = tuple(p.input_size(0))
        self.orig_h, self.orig_w = self.original_size
        self.input_h, self.input_w = self.input_size
        self.is_image_set = True

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        image: int = 0,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicts masks for prompts in original-image pixels: point_coords (N, 2) as (x, y),
        point_labels (N,) (1 foreground, 0 background), box (4,) XYXY, mask_input (1, 256, 256)
        low-res logits from an earlier call. Returns masks (C, H, W) bool (logits when return_logits),
        scores (C,) and low-res logits (C, 256, 256), as numpy arrays. `image`: which of set_images."""
        p = self._require_image()
        prompt = _prompt(point_coords, point_labels, box, mask_input)
        threshold = float(self.model.mask_threshold)
        masks, scores, low_res = p.predict(*prompt, multimask_output, return_logits or threshold != 0.0, image)
        if threshold != 0.0 and not return_logits:
            masks = masks > threshold
        return masks, scores, low_res

    def predict_batch(self, prompts: Sequence[dict], multimask_output: bool = True,
                      return_logits: bool = False) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Beyond upstream: many prompts, each a dict with predict's keyword arguments (point_coords,
        point_labels, box, mask_input) and 'image' (which of set_images; 0 by default), decoded
        together; a list of predict's results in the same order."""
        p = self._require_image()
        for i, d in enumerate(prompts):
            if not isinstance(d, dict):
                raise TypeError(f"prompt {i} is a {type(d).__name__}, not a dict of predict's keyword arguments")
            unknown = sorted(map(str, set(d) - _BATCH_KEYS))
            if unknown:
                raise ValueError(f"prompt {i} has unknown keys {unknown}: expected some of {sorted(_BATCH_KEYS)}")
        parts = [_prompt(d.get("point_coords"), d.get("point_labels"), d.get("box"), d.get("mask_input")) for d in prompts]
        images = [_image_index(i, d.get("image", 0)) for i, d in enumerate(prompts)]
        threshold = float(self.model.mask_threshold)
        results = p.predict_batch([q[0] for q in parts], [q[1] for q in parts], [q[2] for q in parts],
                                  [q[3] for q in parts], images, multimask_output, return_logits or threshold != 0.0)
        if threshold != 0.0 and not return_logits:
            results = [(m > threshold, s, lr) for m, s, lr in results]
        return results

    def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None,
                      multimask_output: bool = True, return_logits: bool = False):
        """Predicts masks for a batch of prompts already in the encoder's input frame (after
        transform.apply_coords_torch / apply_boxes_torch): point_coords BxNx2, point_labels BxN,
        boxes Bx4, mask_input Bx1x256x256. Returns torch tensors on the model's device: masks
        BxCxHxW (bool unless return_logits), iou_predictions BxC, low_res_masks BxCx256x256, made by
        the library in device memory and handed to torch without a copy."""
        torch = require_torch("predict_torch")
        p = self._require_image()
        if p.image_count > 1:
            raise ValueError(f"predict_torch decodes prompts on one image, and {p.image_count} are set: after "
                             "set_images, predict(..., image=i) or predict_batch name each prompt's image")
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_labels must be supplied with point_coords")
        points = None if point_coords is None else host_float32(point_coords)
        labels = None if point_labels is None else host_float32(point_labels)
        threshold = float(self.model.mask_threshold)
        masks, iou, low_res = p.decode_on_device(
            points, labels, None if boxes is None else host_float32(boxes),
            None if mask_input is None else host_float32(mask_input), multimask_output,
            not return_logits and threshold == 0.0)
        if threshold != 0.0 and not return_logits:
            masks = masks > threshold
        elif masks.dtype == torch.uint8:
            masks = masks.view(torch.bool)  # (0/1 bytes: the same memory, no copy)
        return masks, iou.float(), low_res.float()

    def get_image_embedding(self):
        """The (1, 256, 64, 64) image embedding: a torch tensor on the model's device when torch is
        installed (as upstream), else a numpy array."""
        p = self._require_image()
        embedding = p.image_embedding(0)
        torch = torch_or_none()
        return embedding if torch is None else torch.from_numpy(embedding).to(self.device)

    @property
    def features(self):
        return self.get_image_embedding() if getattr(self, "is_image_set", False) else None

    @property
    def device(self):
        return self.model.device

    def reset_image(self) -> None:
        """Resets the currently set image."""
        self.is_image_set = False
        self.orig_h = self.orig_w = self.input_h = self.input_w = None
        self.original_size = self.input_size = None


_BATCH_KEYS = {"point_coords", "point_labels", "box", "mask_input", "image"}


def _image_index(prompt: int, value) -> int:
    """A prompt's 'image' as an index: an integer (numpy's too), never 0.5 or "1" taken as one."""
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"prompt {prompt}: 'image' must be an integer index, not {value!r}") from None


def _prompt(point_coords, point_labels, box, mask_input):
    """predict's arguments as the engine takes them: float32 / int32 arrays or None."""
    if point_coords is not None:
        if point_labels is None:
            raise ValueError("point_labels must be supplied if point_coords is supplied.")
        coords = host_float32(point_coords)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"point_coords must be (N, 2), got shape {coords.shape}")
        labels = host_float32(point_labels).reshape(-1)
        bad = labels[~np.isin(labels, (-1, 0, 1))]
        if bad.size:
            raise ValueError(f"point label {bad[0]} is not 1 (foreground), 0 (background) or -1 (ignore)")
        labels = np.ascontiguousarray(labels, dtype=np.int32)
    else:
        coords = labels = None
    if box is not None:
        box = host_float32(box).reshape(-1)
    if mask_input is not None:
        mask_input = host_float32(mask_input)
    return coords, labels, box, mask_input
