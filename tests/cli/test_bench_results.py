"""bench/gpu/results.py: a run's output folder as the results file bench/chart.py draws."""
import json
import subprocess
import sys

from conftest import SOURCE

SCRIPT = SOURCE / "bench" / "gpu" / "results.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


def bench_line(model, precision, img_s, batch=8):
    return {"batch": batch, "cuda_graphs": True, "decode_prompts_ms": 0.53361, "encoder_img_per_s": 2 * img_s,
            "img_per_s": img_s, "img_per_s_ragged": img_s, "model": model, "peak_gib": 0.79348, "precision": precision,
            "prompts": 16, "runs": 5}


def anchor_line(impl, model, img_s):
    return {"impl": impl, "model": model, "dtype": "fp32" if impl == "orig" else "bf16", "bs": 8, "compile": "none",
            "prompts": 16, "img_s": img_s, "enc_img_s": 2 * img_s, "batch_ms": 100.0, "peak_GiB": 19.45,
            "warmup_s": 2.0, "gpu": "NVIDIA H200"}


def out_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "device.txt").write_text("NVIDIA H200, 143771 MiB, 580.159.04\n2026-12-06T20:31Z\n")
    mine = [bench_line("vit_b", "bf16", 409.8123), bench_line("vit_b", "fp32", 5.3912),
            bench_line("vit_b", "bf16", 90.0, batch=1)]
    theirs = [anchor_line("orig", "vit_b", 24.55), anchor_line("fast", "vit_b", 96.34)]
    (out / "samfast_bench.jsonl").write_text("".join(json.dumps(d) + "\n" for d in mine))
    # (a line of neither kind, as a failed anchor leaves, is skipped)
    failed = "Traceback (most recent call last):\n"
    (out / "anchors.jsonl").write_text("".join(json.dumps(a) + "\n" for a in theirs) + failed)
    return out


def test_run_folder_to_results(tmp_path):
    out = out_dir(tmp_path)
    p = run(out, "--commit", "abc1234", "-o", tmp_path / "results.json")
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["device"] == "NVIDIA H200 (143771 MiB, driver 580.159.04)"
    assert (r["date"], r["commit"]) == ("2026-12-06", "abc1234")
    assert r["samfast"] == [  # batch 8 only, the table's keys, rounded as the table gives them
        {"model": "vit_b", "precision": "bf16", "batch": 8, "prompts": 16, "runs": 5, "img_per_s": 409.8,
         "encoder_img_per_s": 819.6, "decode_prompts_ms": 0.534, "peak_gib": 0.79},
        {"model": "vit_b", "precision": "fp32", "batch": 8, "prompts": 16, "runs": 5, "img_per_s": 5.39,
         "encoder_img_per_s": 10.8, "decode_prompts_ms": 0.534, "peak_gib": 0.79}]
    assert [a["img_s"] for a in r["anchors"]] == [24.55, 96.34]
    assert "gpu" not in r["anchors"][0] and "warmup_s" not in r["anchors"][0]
    chart = SOURCE / "bench" / "chart.py"  # the chart draws it (where matplotlib is installed)
    p = subprocess.run([sys.executable, str(chart), str(tmp_path / "results.json"), "-o", str(tmp_path / "c.png")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 or "install matplotlib" in p.stderr, p.stderr


def test_missing_or_empty_figures_are_errors(tmp_path):
    out = out_dir(tmp_path)
    (out / "anchors.jsonl").write_text("")
    p = run(out, "--commit", "x")
    assert p.returncode == 1 and "no batch-8 figures" in p.stderr
    (out / "device.txt").unlink()
    p = run(out, "--commit", "x")
    assert p.returncode == 1 and "device.txt" in p.stderr
