"""Fixtures of the Python package's tests: the package built in $SAMFAST_BIN/python, the parity
suite's synthetic checkpoint and upstream oracle, test images as RGB arrays."""
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("parity_conftest", Path(__file__).parents[1] / "parity" / "conftest.py")
parity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parity)
IMAGES, upstream_sam = parity.IMAGES, parity.upstream_sam  # (also for the parity modules imported here)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped with a message without one)")


@pytest.fixture(scope="session")
def samfast_pkg():
    """The samfast package built in the build tree ($SAMFAST_BIN/python, as ctest runs these tests),
    or the installed one when SAMFAST_BIN is not set (a wheel on the GPU machine)."""
    bin_dir = os.environ.get("SAMFAST_BIN")
    if bin_dir:
        package = Path(bin_dir) / "python"
        if not (package / "samfast").is_dir():
            pytest.skip(f"{package}/samfast not built (configure with -DSAMFAST_PYTHON_MODULE=ON)")
        sys.path.insert(0, str(package))
    try:
        import samfast
    except ImportError as e:
        pytest.skip(f"samfast is not importable ({e}): run these tests through ctest, or install the package")
    return samfast


@pytest.fixture(scope="session")
def tiny_checkpoint(samfast_pkg, tmp_path_factory):
    """A synthetic tiny checkpoint, saved by torch.save as upstream's official files are."""
    import torch
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    model = samfast_pkg._samfast.Model.synthetic("tiny", 7, device="cpu")
    torch.save({name: torch.from_numpy(a.copy()) for name, a in model.state_arrays()}, path)
    return path


@pytest.fixture(scope="session")
def upstream(tiny_checkpoint):
    """Upstream's Sam for the tiny checkpoint (fp32, CPU)."""
    return parity.upstream_sam(tiny_checkpoint)


def rgb(name):
    from PIL import Image
    return np.array(Image.open(IMAGES / name).convert("RGB"))


def rss_mb(pid="self"):
    """A process's resident memory in MB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def cuda_available():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def venv_command(venv: str, command: str, override: str) -> str:
    """A command of a virtual environment that scripts/setup.sh makes in the build tree for a test's
    client (its libraries would clash with Debian's beside fastapi): $override if set, else
    <venv>/bin/<command> in $SAMFAST_BIN, then in the source's build/; the test is skipped without it."""
    here = Path(__file__).resolve().parent
    candidates = [os.environ.get(override)]
    if os.environ.get("SAMFAST_BIN"):
        candidates.append(Path(os.environ["SAMFAST_BIN"]) / venv / "bin" / command)
    source = Path(os.environ.get("SAMFAST_SOURCE_DIR", here.parents[1]))
    candidates.append(source / "build" / venv / "bin" / command)
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return str(c)
    pytest.skip(f"{venv} is not installed: scripts/setup.sh puts it in build/{venv} (or set {override})")
