"""Image files held in memory (an upload, a Parquet column) decoded as samfast.read_image decodes
files: same decoders, EXIF orientation, PNG checks and pixel limit."""
import os
import tempfile
from typing import Optional

import numpy as np

from . import _samfast


def decode_image(data: bytes, exif_orientation: bool = True, name: str = "the image",
                 max_pixels: Optional[int] = None) -> np.ndarray:
    """The bytes of an image file as RGB (H, W, 3) uint8 (a JPEG's EXIF orientation applied unless
    exif_orientation is False). Raises ValueError naming `name` when they are not a readable image,
    ImageTooLarge (a ValueError) when its header gives more than max_pixels pixels (default and at
    most 2^28), before any pixel is decoded."""
    if not data:
        raise ValueError(f"{name} is empty (0 bytes)")
    # The library's decoder reads files; a private temporary file keeps its checks in one place.
    with tempfile.TemporaryDirectory(prefix="samfast-decode-") as d:
        path = os.path.join(d, "image")
        with open(path, "wb") as f:
            f.write(data)
        try:
            if max_pixels is None:
                return _samfast.read_image(path, exif_orientation)
            return _samfast.read_image(path, exif_orientation, max_pixels)
        except _samfast.ImageTooLarge as e:
            raise _samfast.ImageTooLarge(str(e).replace("image " + path, name).replace(path, name)) from None
        except (RuntimeError, ValueError) as e:
            raise ValueError(str(e).replace(path, name)) from None
