"""The samfast command line as a user meets it: outputs, formats, and one clear error line for bad input."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES

DOG = IMAGES / "dog.jpg"  # 800 x 534


def one_error_line(p):
    assert p.returncode != 0
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_info_prints_inferred_config(samfast, tiny):
    p = samfast("info", tiny)
    assert p.returncode == 0, p.stderr
    assert "embed_dim 64, depth 4, heads 2 (head dim 32)" in p.stdout
    assert "global blocks [1,3]" in p.stdout and "window 14" in p.stdout
    assert "parameters:" in p.stdout


def test_info_plans_memory_only_where_it_is_tracked(samfast, tiny):
    # On the CPU the plan runs the model (on zeros) and says device memory is not tracked there.
    p = samfast("info", tiny, "--plan-batch", "1", "--plan-prompts", "2", "--device", "cpu")
    assert p.returncode == 0, p.stderr
    assert "parameters:" in p.stdout and "device memory: not tracked on the CPU" in p.stdout
    assert "--plan-batch" in one_error_line(samfast("info", tiny, "--plan-batch", "0"))


def test_make_checkpoint_presets_and_no_clobber(samfast, tmp_path):
    out = tmp_path / "b.safetensors"
    assert samfast("make-checkpoint", "--model", "tiny", "--out", out).returncode == 0
    assert "model: custom" in samfast("info", out).stdout
    before = out.read_bytes()
    line = one_error_line(samfast("make-checkpoint", "--model", "tiny", "--seed", "5", "--out", out))
    assert "already exists" in line and out.read_bytes() == before
    # The format by the name's extension, in any case (a zip was written under B.SAFETENSORS).
    upper = tmp_path / "B.SAFETENSORS"
    assert samfast("make-checkpoint", "--model", "tiny", "--out", upper).returncode == 0
    assert upper.read_bytes() == before
    assert "--out is empty" in one_error_line(samfast("make-checkpoint", "--model", "tiny", "--out", ""))


def test_segment_point_writes_masks_overlay_json(samfast, tiny, tmp_path):
    out = tmp_path / "out"
    p = samfast("segment", "--checkpoint", tiny, "--image", DOG, "--point", "400,260", "--out", out)
    assert p.returncode == 0, p.stderr
    mask = np.array(Image.open(out / "mask_0.png"))
    assert mask.shape == (534, 800) and set(np.unique(mask)) <= {0, 255}
    overlay = np.array(Image.open(out / "overlay.png"))
    assert overlay.shape == (534, 800, 3)
    assert not np.array_equal(overlay, np.array(Image.open(DOG).convert("RGB")))
    result = json.loads((out / "result.json").read_text())
    assert result["width"] == 800 and result["height"] == 534 and len(result["masks"]) == 1
    assert result["masks"][0]["area"] == int((mask > 0).sum())
    assert set(result["timings_ms"]) == {"load", "set_image", "predict"}
    assert np.load(out / "low_res_logits.npy").shape == (1, 256, 256)


def test_segment_multimask_box_and_mask_input(samfast, tiny, tmp_path):
    first = tmp_path / "first"
    p = samfast("segment", "--checkpoint", tiny, "--image", DOG, "--box", "100,50,600,500", "--multimask", "--out", first)
    assert p.returncode == 0, p.stderr
    assert len(json.loads((first / "result.json").read_text())["masks"]) == 3
    assert all((first / f"mask_{i}.png").exists() for i in range(3))
    second = tmp_path / "second"
    p = samfast("segment", "--checkpoint", tiny, "--image", DOG, "--point", "300,200,1", "--point", "500,300,0",
                "--mask-input", first / "low_res_logits.npy", "--out", second)
    assert p.returncode == 0, p.stderr


def test_segment_without_checkpoint_warns_loudly(samfast, tmp_path):
    p = samfast("segment", "--model", "tiny", "--image", DOG, "--point", "10,10", "--out", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    assert "SYNTHETIC" in p.stderr and "MEANINGLESS" in p.stderr


def test_existing_outputs_are_not_clobbered(samfast, tiny, tmp_path):
    out = tmp_path / "out"
    args = ["segment", "--checkpoint", tiny, "--image", DOG, "--point", "400,260", "--out", out]
    assert samfast(*args).returncode == 0
    before = (out / "mask_0.png").read_bytes()
    assert "already exists" in one_error_line(samfast(*args[:-2], "--point", "10,10", "--out", out))
    assert (out / "mask_0.png").read_bytes() == before
    assert samfast(*args, "--overwrite").returncode == 0


def test_a_single_mask_run_leaves_no_earlier_masks_beside_it(samfast, tiny, tmp_path):
    out = tmp_path / "out"
    args = ["segment", "--checkpoint", tiny, "--image", DOG, "--point", "400,260", "--out", out]
    assert samfast(*args, "--multimask").returncode == 0
    assert "already exists" in one_error_line(samfast(*args))
    assert samfast(*args, "--overwrite").returncode == 0
    assert sorted(os.listdir(out)) == ["low_res_logits.npy", "mask_0.png", "overlay.png", "result.json"]


@pytest.mark.parametrize("args, message", [
    (["--point", "900,100"], "outside the 800x534 image"),
    (["--point", "10,10,7"], "label must be 1"),
    (["--point", "10,abc"], "is not a number"),
    (["--point", "10"], "comma-separated"),
    (["--point", "10,10,"], "'' is not a number"),  # (a trailing comma was dropped)
    (["--point", "0x10,10"], "'0x10' is not a number"),  # (read as 16)
    (["--point", "10,1e39"], "out of range"),
    (["--point", "1,1", "--box", ""], "--box '': '' is not a number"),  # (was taken as no box)
    (["--box", "500,10,100,300"], "x0 <= x1"),
    ([], "at least one --point"),
    (["--point", "1,1", "--frobnicate"], "frobnicate"),
])
def test_bad_prompts_give_one_clear_line(samfast, tiny, tmp_path, args, message):
    line = one_error_line(samfast("segment", "--checkpoint", tiny, "--image", DOG, "--out", tmp_path / "o", *args))
    assert message in line
    assert not (tmp_path / "o" / "mask_0.png").exists()


def test_numbers_are_read_as_pythons_float_reads_them(samfast, tiny, tmp_path):
    p = samfast("segment", "--checkpoint", tiny, "--image", DOG, "--out", tmp_path / "o", "--point", "+1e-40,2.5E2,1",
                "--box", " 1,2,3.,4")  # (1e-40 was refused as out of range)
    assert p.returncode == 0, p.stderr


def test_bad_files_give_one_clear_line(samfast, tiny, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    line = one_error_line(samfast("segment", "--checkpoint", tiny, "--image", text, "--point", "1,1", "--out", tmp_path / "o"))
    assert "notes.jpg" in line and "image" in line
    line = one_error_line(samfast("segment", "--checkpoint", tiny, "--image", tmp_path / "missing.png", "--point", "1,1",
                                  "--out", tmp_path / "o"))
    assert "missing.png" in line
    broken = tmp_path / "broken.pth"
    broken.write_bytes(tiny.read_bytes()[: 100000])
    line = one_error_line(samfast("info", broken))
    assert "broken.pth" in line
    thin = tmp_path / "thin.png"
    Image.fromarray(np.full((1, 3000, 3), 128, np.uint8)).save(thin)
    line = one_error_line(samfast("segment", "--checkpoint", tiny, "--image", thin, "--point", "1,0", "--out", tmp_path / "o"))
    assert "too thin" in line
    bad_mask = tmp_path / "m.npy"
    np.save(bad_mask, np.zeros((1, 64, 64), np.float32))
    line = one_error_line(samfast("segment", "--checkpoint", tiny, "--image", DOG, "--point", "1,1", "--mask-input", bad_mask,
                                  "--out", tmp_path / "o"))
    assert "mask input must be (1, 256, 256)" in line


def test_device_choice_is_explicit_and_reported(samfast, tiny, tmp_path):
    out = tmp_path / "auto"
    p = samfast("segment", "--checkpoint", tiny, "--image", DOG, "--point", "400,260", "--out", out)
    assert p.returncode == 0, p.stderr
    device = json.loads((out / "result.json").read_text())["device"]
    assert device == "cpu" or device.startswith("cuda:")
    assert device.split(" ")[0] in p.stderr.splitlines()[-1]  # the closing line names the device
    p = samfast("segment", "--checkpoint", tiny, "--image", DOG, "--point", "400,260", "--device", "cuda", "--out", tmp_path / "c")
    if device == "cpu":  # no GPU here: asking for one is an error, not a silent fallback
        assert "device cuda requested" in one_error_line(p)
    else:
        assert p.returncode == 0, p.stderr
    assert "precision bf16 needs a CUDA GPU" in one_error_line(samfast(
        "segment", "--checkpoint", tiny, "--image", DOG, "--point", "1,1", "--device", "cpu", "--precision", "bf16",
        "--out", tmp_path / "b"))
    # int8 is the CPU's quantised mode (tests/parity/test_cpu_int8_parity.py measures it)
    p = samfast("segment", "--checkpoint", tiny, "--image", DOG, "--point", "400,260", "--device", "cpu",
                "--precision", "int8", "--out", tmp_path / "i")
    assert p.returncode == 0, p.stderr
    # The decoder's own precision: fp32 (or auto) on the CPU, reported; 16-bit ones need a GPU.
    p = samfast("segment", "--checkpoint", tiny, "--image", DOG, "--point", "400,260", "--device", "cpu",
                "--decoder-precision", "fp32", "--out", tmp_path / "d")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "d" / "result.json").read_text())["decoder_precision"] == "fp32"
    assert "decoder precision fp16 needs a CUDA GPU" in one_error_line(samfast(
        "segment", "--checkpoint", tiny, "--image", DOG, "--point", "1,1", "--device", "cpu", "--decoder-precision", "fp16",
        "--out", tmp_path / "f"))


def test_bench_graphs_and_trace_options(samfast, tiny, tmp_path):
    # --no-graphs is accepted everywhere the model runs and reported by bench; --trace on the CPU is a
    # clear error (it records GPU work), and an existing trace file is never overwritten.
    p = samfast("bench", "--checkpoint", tiny, "--device", "cpu", "--runs", "1", "--prompts", "2", "--no-graphs")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["cuda_graphs"] is False
    p = samfast("segment", "--checkpoint", tiny, "--image", DOG, "--point", "400,260", "--no-graphs", "--out", tmp_path / "s")
    assert p.returncode == 0, p.stderr
    assert "records GPU work" in one_error_line(samfast(
        "bench", "--checkpoint", tiny, "--device", "cpu", "--runs", "1", "--trace", tmp_path / "t.json"))
    existing = tmp_path / "old.json"
    existing.write_text("keep me")
    assert "exists" in one_error_line(samfast("bench", "--checkpoint", tiny, "--device", "cpu", "--trace", existing))
    assert existing.read_text() == "keep me"


def test_everything_lists_and_reads_webp_and_tiff(samfast, tiny, tmp_path):
    """A folder's .webp and .tif images are segmented (amg.py reads them with OpenCV), as their PNG would be."""
    data = tmp_path / "data"
    data.mkdir()
    small = Image.open(DOG).convert("RGB").resize((96, 64))
    for name in ("a.webp", "b.tif", "c.png"):
        small.save(data / name, **({"lossless": True} if name.endswith("webp") else {}))
    fast = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    p = samfast("everything", "--checkpoint", tiny, "--device", "cpu", "--input", data, "--output", tmp_path / "o", *fast)
    assert p.returncode == 0 and "3 done" in p.stdout, p.stdout + p.stderr
    csv = {n: (tmp_path / "o" / n / "metadata.csv").read_text() for n in "abc"}
    assert csv["a"] == csv["b"] == csv["c"]
