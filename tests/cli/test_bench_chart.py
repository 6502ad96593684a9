"""bench/chart.py: the committed benchmark figures drawn as a PNG (skipped without matplotlib)."""
import json
import struct
import subprocess
import sys

import pytest

from conftest import SOURCE

pytest.importorskip("matplotlib", reason="matplotlib missing (Debian: python3-matplotlib): bench/chart.py not tested")

SCRIPT = SOURCE / "bench" / "chart.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("results", ["h100.json", "h200.json"])
def test_committed_results_drawn(tmp_path, results):
    out = tmp_path / "chart.png"
    p = run(SOURCE / "bench" / "results" / results, "-o", out)
    assert p.returncode == 0, p.stderr
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1000, 450)  # IHDR width, height
    assert len(png) < 100_000


def test_bad_input_is_an_error(tmp_path):
    p = run(tmp_path / "missing.json", "-o", tmp_path / "chart.png")
    assert p.returncode == 1 and "missing.json" in p.stderr
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"device": "d", "date": "t", "commit": "c", "command": "x", "samfast": [], "anchors": []}))
    p = run(empty, "-o", tmp_path / "chart.png")
    assert p.returncode == 1 and "no batch-8 figures" in p.stderr
    assert not (tmp_path / "chart.png").exists()
