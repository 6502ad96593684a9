"""bench/gpu/ratios.py: samfast's bench lines against anchor lines, as multiples per model and batch."""
import json
import subprocess
import sys

from conftest import SOURCE

SCRIPT = SOURCE / "bench" / "gpu" / "ratios.py"


def run(*paths):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)], capture_output=True, text=True, timeout=60)


def ours(model, precision, img_s, batch=8):
    return {"model": model, "precision": precision, "batch": batch, "img_per_s": img_s, "encoder_img_per_s": 2 * img_s,
            "peak_gib": 1.5}


def anchor(impl, model, img_s, compile_mode="none", bs=8):
    return {"impl": impl, "model": model, "dtype": "bf16" if impl == "fast" else "fp32", "bs": bs, "compile": compile_mode,
            "img_s": img_s, "enc_img_s": 2 * img_s, "peak_GiB": 4.0}


def write(path, rows, extra=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)
    return path


def test_multiples_per_model_and_batch(tmp_path):
    mine = write(tmp_path / "samfast_bench.jsonl",
                 [ours("vit_b", "bf16", 300.0), ours("vit_b", "fp16", 150.0), ours("vit_b", "bf16", 90.0, batch=1),
                  ours("vit_h", "bf16", 80.0)])
    theirs = write(tmp_path / "anchors.jsonl",
                   [anchor("orig", "vit_b", 25.0), anchor("fast", "vit_b", 100.0),
                    anchor("fast", "vit_b", 150.0, "max-autotune"), anchor("fast", "vit_h", 40.0)],
                   extra="Traceback (most recent call last):\n")
    p = run(mine, theirs)
    assert p.returncode == 0, p.stderr
    vit_b, vit_h = p.stdout.split("vit_h, batch 8:")
    assert "| samfast bf16 | 300.00 | 600.00 | 1.50 | 12.00x | 3.00x | 2.00x |" in vit_b
    assert "| samfast fp16 | 150.00 | 300.00 | 1.50 | 6.00x | 1.50x | 1.00x |" in vit_b
    assert "torch.compile max-autotune" in vit_b
    assert "| samfast bf16 | 80.00 | 160.00 | 1.50 | 2.00x |" in vit_h
    assert "batch 1" not in p.stdout  # no anchor at batch 1: no table for it
    assert "anchors.jsonl:5: not a samfast bench or anchor line" in p.stderr


def test_nothing_to_compare_is_an_error(tmp_path):
    mine = write(tmp_path / "samfast_bench.jsonl", [ours("vit_b", "bf16", 300.0)])
    theirs = write(tmp_path / "anchors.jsonl", [anchor("fast", "vit_h", 40.0)])
    p = run(mine, theirs)
    assert p.returncode == 1
    assert "no model and batch size has both" in p.stderr
    p = run(tmp_path / "missing.jsonl")
    assert p.returncode == 1 and "missing.jsonl" in p.stderr
    assert run().returncode == 2
