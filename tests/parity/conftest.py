"""Shared fixtures: the built tools, a synthetic checkpoint, upstream segment_anything as the oracle."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

SOURCE = Path(os.environ.get("SAMFAST_SOURCE_DIR", Path(__file__).resolve().parents[2]))
IMAGES = Path(os.environ.get("SAMFAST_TESTDATA", SOURCE.parent / "shared" / "testdata")) / "images"


def _bin():
    b = os.environ.get("SAMFAST_BIN")
    if not b:
        pytest.skip("SAMFAST_BIN is not set: run these tests through ctest (scripts/test.sh)")
    return Path(b)


def built_tool(name):
    """Path of a built test helper ($SAMFAST_BIN/tests/NAME); skips with a message when it is absent."""
    bin_dir = os.environ.get("SAMFAST_BIN")
    if not bin_dir:
        pytest.skip(f"SAMFAST_BIN is not set (it must name the build directory holding tests/{name})")
    path = Path(bin_dir) / "tests" / name
    if not path.exists():
        pytest.skip(f"{path} not built (cmake --build ... --target {name})")
    return str(path)


def require_upstream():
    """Imports upstream segment_anything; missing it is a failure when SAMFAST_REQUIRE_ORACLE=1 (CI)."""
    try:
        import segment_anything  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        if os.environ.get("SAMFAST_REQUIRE_ORACLE") == "1":
            raise
        pytest.skip(f"upstream oracle not installed ({e}); scripts/setup.sh installs it")


@pytest.fixture(scope="session")
def bin_dir():
    return _bin()


@pytest.fixture(scope="session")
def samfast(bin_dir):
    def run(*args, check=True):
        p = subprocess.run([str(bin_dir / "samfast"), *map(str, args)], capture_output=True, text=True)
        if check and p.returncode != 0:
            raise AssertionError(f"samfast {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}")
        return p
    return run


def make_checkpoint(tmp_path_factory, samfast, model, seed):
    """A synthetic checkpoint written by `samfast make-checkpoint` in a fresh temporary folder."""
    path = tmp_path_factory.mktemp("ckpt") / f"{model}.pth"
    samfast("make-checkpoint", "--model", model, "--seed", str(seed), "--out", path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, samfast):
    return make_checkpoint(tmp_path_factory, samfast, "tiny", 7)


def upstream_sam(checkpoint):
    """Upstream's Sam built for the checkpoint's (tiny) config, loaded through torch.load."""
    require_upstream()
    import torch
    from segment_anything.build_sam import _build_sam
    sd = torch.load(checkpoint, map_location="cpu")
    E = sd["image_encoder.patch_embed.proj.weight"].shape[0]
    hd = sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
    depth = len({k.split(".")[2] for k in sd if k.startswith("image_encoder.blocks.")})
    glob = [i for i in range(depth) if sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] == 127]
    return _build_sam(E, depth, E // hd, glob, checkpoint=str(checkpoint)).eval()


def max_rel_err(ours, ref):
    """max |ours - ref| / max |ref|: DESIGN.md's fp32 embedding metric."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} vs upstream {ref.shape}"
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def prompts_for(w, h, n=24, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 3 == 2:
            x0, y0 = rng.uniform(0, w * 0.6), rng.uniform(0, h * 0.6)
            out.append({"points": [], "labels": [], "box": [x0, y0, x0 + rng.uniform(20, w * 0.4), y0 + rng.uniform(20, h * 0.4)],
                        "multimask": False, "mask_input": None})
        else:
            out.append({"points": [[float(rng.uniform(0, w)), float(rng.uniform(0, h))]], "labels": [1], "box": None,
                        "multimask": i % 2 == 0, "mask_input": None})
    return out


def mask_ious(ours, ref):
    out = []
    for a, b in zip(ours > 0, ref > 0):
        union = np.logical_or(a, b).sum()
        out.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
    return out


def run_parity_tool(bin_dir, checkpoint, rgb, prompts, tmp_path, device, precision):
    """samfast's parity_tool on one picture and its prompts: embedding.npy, p{k}_masks.npy, p{k}_iou.npy in tmp_path."""
    import json
    from PIL import Image
    Image.fromarray(rgb).save(tmp_path / "image.png")
    (tmp_path / "prompts.json").write_text(json.dumps({"prompts": prompts}))
    subprocess.run([str(bin_dir / "tests" / "parity_tool"), checkpoint, tmp_path / "image.png", tmp_path / "prompts.json",
                    tmp_path, device, precision], check=True)


def upstream_predict(pred, p):
    """upstream SamPredictor.predict on one prompts_for() prompt, logits returned."""
    return pred.predict(point_coords=np.array(p["points"], np.float32) if p["points"] else None,
                        point_labels=np.array(p["labels"]) if p["points"] else None,
                        box=np.array(p["box"], np.float32) if p["box"] else None,
                        multimask_output=p["multimask"], return_logits=True)
