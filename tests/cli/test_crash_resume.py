"""Crash consistency of `samfast everything`: killed with SIGKILL at random moments (mid-image,
mid-write, mid-replacement under --overwrite) and resumed each time, the run ends with outputs
byte-identical to an uninterrupted run's, and no temporary file or lock left behind."""
import hashlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from PIL import Image

from conftest import IMAGES

OPTIONS = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--overlay"]
KILLS = 20  # kills that interrupt a running process


def contents(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(Path(root).rglob("*"))}


def test_sigkill_at_random_moments_then_resume_gives_identical_outputs(tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sources = ["dog.jpg", "truck.jpg", "groceries.jpg"]
    for i in range(8):
        Image.open(IMAGES / sources[i % 3]).resize((200 + 24 * i, 150)).save(data / f"img{i}.jpg", quality=90)
    exe = str(Path(os.environ["SAMFAST_BIN"]) / "samfast")

    def command(out, *extra):
        return [exe, "everything", "--checkpoint", str(tiny), "--device", "cpu", "--input", str(data), "--output",
                str(out), *OPTIONS, *extra]

    ref = tmp_path / "ref"
    t0 = time.monotonic()
    p = subprocess.run(command(ref), capture_output=True, text=True, timeout=600)
    full = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    expected = contents(ref)

    out = tmp_path / "out"
    rng = random.Random(20261203)
    kills_mid_run = runs = 0
    while kills_mid_run < KILLS:
        # Every other run redoes finished images (--overwrite), so kills also land while an earlier
        # output is being replaced, and there is always work left to interrupt.
        extra = ["--overwrite"] if runs % 2 else []
        proc = subprocess.Popen(command(out, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, full))
        if proc.poll() is None:
            kills_mid_run += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        runs += 1
        assert runs < 5 * KILLS, "the runs end before a kill too often to test anything"

    p = subprocess.run(command(out), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert contents(out) == expected
    assert not [n for n in os.listdir(out) if n.startswith(".samfast")]
