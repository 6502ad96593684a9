"""Fixtures of the Ray Data tests: those of the Python package's tests (tests/python/conftest.py),
and the Python of build/ray-venv (Ray Data and pyarrow, apart from Debian's libraries), in which the
pipelines run as subprocesses."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("python_conftest", Path(__file__).parents[1] / "python" / "conftest.py")
python_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(python_conftest)
samfast_pkg, tiny_checkpoint, IMAGES = python_conftest.samfast_pkg, python_conftest.tiny_checkpoint, python_conftest.IMAGES


@pytest.fixture(scope="session")
def ray_python():
    return python_conftest.venv_command("ray-venv", "python", "SAMFAST_RAY_PYTHON")
