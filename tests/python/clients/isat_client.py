"""ISAT's own remote-SAM client code (isat-sam's SegAnyThread.sam_encoder, ISAT/widgets/mainwindow.py)
against a server, headless: argv: host, port, image (any file PIL opens), output .npz. The main
window it reads its settings from is a stand-in; the request and the decoding of the answer are
ISAT's. Saves the features it got (as the tensor ISAT's decoder takes) and the two sizes."""
import sys
import types

import numpy as np
import torch
from PIL import Image

import ISAT.widgets.mainwindow as mw

host, port, image_path, out = sys.argv[1:5]
text = lambda s: types.SimpleNamespace(text=lambda: s)  # noqa: E731 (a QLineEdit's text())
window = types.SimpleNamespace(
    use_remote_sam=True,
    remote_sam_dialog=types.SimpleNamespace(lineEdit_host=text(host), lineEdit_port=text(port)),
    segany=types.SimpleNamespace(model_dtype=torch.float32, device="cpu", model_source="sam"))
image = np.array(Image.open(image_path).convert("RGB"))  # (as ISAT opens an image: mainwindow.py)
features, original_size, input_size = mw.SegAnyThread.sam_encoder(types.SimpleNamespace(mainwindow=window), image)
np.savez(out, features=features.numpy(), original_size=np.array(original_size), input_size=np.array(input_size))
