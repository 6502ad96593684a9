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


def test_models_drawn_are_those_the_results_hold(tmp_path):
    results = json.loads((SOURCE / "bench" / "results" / "h100.json").read_text())
    for d in [d for d in results["samfast"] if d["model"] == "vit_h"]:
        results["samfast"].append(dict(d, model="vit_l", img_per_s=d["img_per_s"] * 1.5))
    with_l = tmp_path / "with_vit_l.json"
    with_l.write_text(json.dumps(results))
    only_b = tmp_path / "only_vit_b.json"
    results["samfast"] = [d for d in results["samfast"] if d["model"] == "vit_b"]
    results["anchors"] = [a for a in results["anchors"] if a["model"] == "vit_b"]
    only_b.write_text(json.dumps(results))
    for path, width in ((with_l, 1325), (only_b, 675)):  # a group of bars a model beside the margins
        out = tmp_path / (path.stem + ".png")
        p = run(path, "-o", out)
        assert p.returncode == 0, p.stderr
        assert struct.unpack(">II", out.read_bytes()[16:24]) == (width, 450)
