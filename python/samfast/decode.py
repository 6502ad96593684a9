"""Image files held in memory (an upload, a Parquet column) decoded as samfast.read_image decodes
files: same decoders, EXIF orientation, PNG checks and pixel limit."""
import os
import tempfile

import numpy as np

from . import _samfast


def decode_image(data: bytes, exif_orientation: bool = True, name: str = "the image") -> np.ndarray:
    """The bytes of an image file as RGB (H, W, 3) uint8 (a JPEG's EXIF orientation applied unless
    exif_orientation is False). Raises ValueError naming `name` when they are not a readable image."""
    if not data:
        raise ValueError(f"{name} is empty (0 bytes)")
    # The library's decoder reads files; a private temporary file keeps its checks in one place.
    with tempfile.TemporaryDirectory(prefix="samfast-decode-") as d:
        path = os.path.join(d, "image")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return _samfast.read_image(path, exif_orientation)
        except RuntimeError as e:
            raise ValueError(str(e).replace(path, name)) from None
