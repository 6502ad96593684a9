"""Models: upstream's sam_model_registry and build_sam_* names over the library's Model, plus
samfast.load. A Sam here is a handle on weights held by the C++ engine (no torch module): it has what
code written for upstream touches (.to, .eval, .device, mask_threshold, image_format,
image_encoder.img_size, load_state_dict) and samfast's own device and precision options."""
import os
from types import SimpleNamespace
from typing import Any, Dict

import numpy as np

from . import _samfast
from ._torch import host_float32, torch_or_none


_MODEL_TYPES = ("vit_b", "vit_l", "vit_h", "tiny")  # (tiny: random weights only, for tests)


class Sam:
    """A SAM model. The weights are loaded on first use (so that .to(device) or load_state_dict
    right after building costs no second load) onto `device` ("auto": a CUDA GPU when there is one,
    else the CPU) in `precision` ("auto": bf16 on a GPU, fp32 on the CPU; or fp32, bf16, fp16, fp8 on a GPU, int8 on the CPU),
    the prompt encoder and mask decoder in `decoder_precision` ("auto": fp16 beside bf16 or fp8, else
    the same; or fp32, bf16, fp16 on a GPU)."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, checkpoint=None, model_type=None, device="auto", precision="auto", cuda_graphs=True, seed=0,
                 synthetic=None, decoder_precision="auto"):
        if checkpoint is not None:
            checkpoint = os.fspath(checkpoint)
            if not os.path.exists(checkpoint):
                raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
            if not os.path.isfile(checkpoint):
                raise ValueError(f"checkpoint {checkpoint} is not a regular file"
                                 + (" but a folder" if os.path.isdir(checkpoint) else ""))
        self._checkpoint, self._model_type, self._seed = checkpoint, model_type, seed
        self._synthetic = synthetic or model_type or "vit_h"  # what random weights to make without a checkpoint
        if checkpoint is None and self._synthetic not in _MODEL_TYPES:
            raise ValueError(f"unknown model type {self._synthetic!r}: expected one of {', '.join(_MODEL_TYPES)}")
        self._device, self._precision, self._cuda_graphs = _device_name(device), precision, cuda_graphs
        self._decoder_precision = decoder_precision
        for what, p in (("precision", precision), ("decoder precision", decoder_precision)):
            if str(p).lower() not in _samfast.precision_names():
                raise ValueError(f"unknown {what} {p!r}: expected one of {', '.join(_samfast.precision_names())}")
        self._native = None
        self.image_encoder = SimpleNamespace(img_size=1024)  # (the loaded model's own once it is loaded)

    # -- the engine's model, made on first use ----------------------------------------------------
    def _native_model(self):
        if self._native is None:
            if self._checkpoint is not None:
                native = _samfast.Model.load(self._checkpoint, self._device, self._precision, self._cuda_graphs,
                                             self._decoder_precision)
            else:  # upstream builds random weights when no checkpoint is given
                native = _samfast.Model.synthetic(self._synthetic, self._seed, self._device, self._precision,
                                                  self._cuda_graphs, self._decoder_precision)
            self._set_native(native)
        return self._native

    def _set_native(self, native):
        if self._model_type not in (None, native.model_type):
            raise RuntimeError(f"the checkpoint holds a {native.model_type} model, not {self._model_type}: "
                               f"use sam_model_registry[{native.model_type!r}] or samfast.load()")
        self._native = native
        self.image_encoder.img_size = native.img_size

    @property
    def device(self):
        """torch.device of where the model runs (a string when torch is not installed)."""
        name = self._native_model().device.split(" ")[0]
        torch = torch_or_none()
        return torch.device(name) if torch is not None else name

    @property
    def precision(self) -> str:
        return self._native_model().precision

    @property
    def decoder_precision(self) -> str:
        return self._native_model().decoder_precision

    @property
    def model_type(self) -> str:
        return self._native_model().model_type

    def to(self, *args, **kwargs):
        """Moves the model to a device ("cpu", "cuda", "cuda:1", a torch.device); other arguments
        (dtype, non_blocking) are accepted and ignored: samfast keeps its own precision."""
        device = kwargs.get("device", args[0] if args else None)
        if device is None or not isinstance(device, str) and type(device).__name__ != "device":
            return self
        device = _device_name(device)
        if self._native is None:
            self._device = device
        elif device != "auto" and self._native.device.split(" ")[0] != (device + ":0" if device == "cuda" else device):
            self._native = self._native.to_device(device, self._precision, self._cuda_graphs, self._decoder_precision)
            self._device = device
        return self

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{int(device)}")

    def cpu(self):
        return self.to("cpu")

    def eval(self):
        return self

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("samfast is an inference engine: its models cannot be trained")
        return self

    def requires_grad_(self, requires_grad: bool = True):
        return self

    def state_dict(self) -> Dict[str, np.ndarray]:
        """The weights as float32 numpy arrays (copies) under upstream's names."""
        return {name: np.array(a) for name, a in self._native_model().state_arrays()}

    def load_state_dict(self, state_dict: Dict[str, Any], strict: bool = True):
        """Replaces the weights with those of a state_dict (torch tensors or numpy arrays, upstream's
        names). strict=False keeps the current weights for keys the dict lacks and ignores keys the
        model has not. Returns (missing_keys, unexpected_keys) as torch does."""
        current = None if strict else dict(self._native_model().state_arrays())
        names, arrays = [], []
        unexpected = []
        for name, value in state_dict.items():
            if current is not None and name not in current:
                unexpected.append(name)
                continue
            names.append(name)
            arrays.append(host_float32(value))
        missing = [] if current is None else [n for n in current if n not in state_dict]
        for n in missing:
            names.append(n)
            arrays.append(np.ascontiguousarray(current[n]))
        self._set_native(_samfast.Model.from_arrays(names, arrays, self._device, self._precision, self._cuda_graphs,
                                                    self._decoder_precision))
        self._checkpoint = None
        return SimpleNamespace(missing_keys=missing, unexpected_keys=unexpected)

    def __repr__(self):
        if self._native is None:
            return f"Sam({self._model_type or 'model'}, not loaded yet, device={self._device}, precision={self._precision})"
        n = self._native
        return f"Sam({n.model_type}, {n.parameter_count:,} parameters, device={n.device}, precision={n.precision})"


def _device_name(device) -> str:
    name = str(device).strip().lower()
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N")
    return name


def load(checkpoint, device: str = "auto", precision: str = "auto", cuda_graphs: bool = True,
         decoder_precision: str = "auto") -> Sam:
    """A model from a .pth or .safetensors checkpoint of any SAM type (read off its shapes), loaded now."""
    sam = Sam(checkpoint, None, device, precision, cuda_graphs, decoder_precision=decoder_precision)
    sam._native_model()
    return sam


def synthetic(model_type: str = "vit_b", seed: int = 0, device: str = "auto", precision: str = "auto") -> Sam:
    """A model with random weights in upstream's layout (vit_b, vit_l, vit_h or tiny): for tests and
    benchmarks, its masks are meaningless."""
    return Sam(None, None, device, precision, seed=seed, synthetic=model_type)


def build_sam_vit_h(checkpoint=None, device="auto", precision="auto"):
    return Sam(checkpoint, "vit_h", device, precision)


build_sam = build_sam_vit_h


def build_sam_vit_l(checkpoint=None, device="auto", precision="auto"):
    return Sam(checkpoint, "vit_l", device, precision)


def build_sam_vit_b(checkpoint=None, device="auto", precision="auto"):
    return Sam(checkpoint, "vit_b", device, precision)


sam_model_registry = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
}
