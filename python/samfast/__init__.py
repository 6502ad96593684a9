"""samfast: Segment Anything (SAM v1) on a C++/CUDA engine, with segment_anything's Python API.

Change `from segment_anything import ...` to `from samfast import ...`; the names, arguments and
return types are upstream's. torch is optional: it is imported only by the calls that take or
return torch tensors (predict_torch, set_torch_image, the *_torch transforms)."""
from . import _samfast
from .automatic_mask_generator import SamAutomaticMaskGenerator
from .build_sam import Sam, build_sam, build_sam_vit_b, build_sam_vit_h, build_sam_vit_l, load, sam_model_registry, synthetic
from .predictor import SamPredictor

read_image = _samfast.read_image
ImageTooLarge = _samfast.ImageTooLarge

__all__ = [
    "ImageTooLarge", "Sam", "SamAutomaticMaskGenerator", "SamPredictor", "build_sam", "build_sam_vit_b", "build_sam_vit_h",
    "build_sam_vit_l", "load", "read_image", "sam_model_registry", "synthetic",
]
__version__ = "0.1.0"
