import os
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(os.environ.get("SAMFAST_SOURCE_DIR", Path(__file__).resolve().parents[2]))
IMAGES = Path(os.environ.get("SAMFAST_TESTDATA", SOURCE.parent / "shared" / "testdata")) / "images"


@pytest.fixture(scope="session")
def samfast():
    b = os.environ.get("SAMFAST_BIN")
    if not b:
        pytest.skip("SAMFAST_BIN is not set: run these tests through ctest (scripts/test.sh)")

    def run(*args):
        return subprocess.run([str(Path(b) / "samfast"), *map(str, args)], capture_output=True, text=True, timeout=600)
    return run


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, samfast):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    p = samfast("make-checkpoint", "--model", "tiny", "--seed", "3", "--out", path)
    assert p.returncode == 0, p.stderr
    return path
