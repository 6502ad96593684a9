"""torch, imported only where the API takes or returns torch tensors: samfast itself never needs it."""
import importlib


def torch_or_none():
    """The torch module when it is installed, else None (imported on first use, then cached)."""
    global _torch
    if _torch is False:
        try:
            _torch = importlib.import_module("torch")
        except ImportError:
            _torch = None
    return _torch


_torch = False


def require_torch(what):
    torch = torch_or_none()
    if torch is None:
        raise ImportError(f"{what} takes and returns torch tensors: install torch, or use the numpy form")
    return torch


def is_tensor(x):
    torch = torch_or_none() if type(x).__module__.startswith("torch") else None
    return torch is not None and isinstance(x, torch.Tensor)


def host_float32(x):
    """A torch tensor or array-like as a C-contiguous float32 numpy array (a copy from the GPU)."""
    import numpy as np

    if is_tensor(x):
        x = x.detach().to("cpu").float().contiguous().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
