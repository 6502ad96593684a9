"""samfast's CUDA backend against upstream segment_anything running on the same GPU (fp32, TF32 off),
on synthetic checkpoints and the three test images. fp32: DESIGN.md's fp32 thresholds. bf16 and
fp16: DESIGN.md's rule: the image embedding's relative L2 error against upstream fp32 at most 2x that of
PyTorch's own bf16 run (segment-anything-fast's encoder in bf16 on the same input), and the mean mask
IoU against upstream fp32 over many point and box prompts >= 0.99 for vit_b. The tiny random config
has many logits near 0, so its IoU is printed beside the IoU that the PyTorch bf16 encoder gives
(upstream's decoder on that embedding) rather than held to 0.99. Figures are printed for the record.
Skipped (with a message) where there is no CUDA GPU, e.g. on CI."""
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import (IMAGES, make_checkpoint, mask_ious, max_rel_err, prompts_for, run_parity_tool, upstream_predict,
                      upstream_sam)


def gpu_available():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU: GPU parity tests skipped")


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory, samfast):
    return make_checkpoint(tmp_path_factory, samfast, "vit_b", 11)


@pytest.fixture(scope="module")
def vit_h_checkpoint(tmp_path_factory, samfast):
    return make_checkpoint(tmp_path_factory, samfast, "vit_h", 11)


def pytorch_bf16_embedding(ckpt, sam, rgb, pred):
    """segment-anything-fast's image encoder in bf16 on upstream's preprocessed input (the PyTorch bf16
    reference of DESIGN.md), or None when that package is not importable."""
    import torch
    try:
        from segment_anything_fast.build_sam import _build_sam as build_fast
    except ImportError:
        return None
    cfg = sam.image_encoder
    glob = [i for i, b in enumerate(cfg.blocks) if b.window_size == 0]
    fast = build_fast(cfg.patch_embed.proj.out_channels, len(cfg.blocks), cfg.blocks[0].attn.num_heads, glob,
                      checkpoint=str(ckpt)).cuda().eval().to(torch.bfloat16)
    x = sam.preprocess(torch.as_tensor(pred.transform.apply_image(rgb), device="cuda").permute(2, 0, 1).contiguous()[None])
    with torch.no_grad():
        return fast.image_encoder(x.to(torch.bfloat16)).float()


# Every precision on tiny and vit_b; vit_h in fp8 alone (its fp8 GEMMs accumulate fast over K up to
# 5120; its other precisions run vit_b's kernels, and head dim 80 is in the op tests).
@pytest.mark.parametrize("model, precision", [(m, p) for m in ("tiny", "vit_b") for p in ("fp32", "bf16", "fp16", "fp8")]
                         + [("vit_h", "fp8")])
def test_cuda_matches_upstream_on_gpu(model, precision, tmp_path, request, bin_dir):
    import torch
    from segment_anything import SamPredictor
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ckpt = request.getfixturevalue(f"{model}_checkpoint")
    sam = upstream_sam(ckpt).cuda()
    pred = SamPredictor(sam)
    for name in ["dog.jpg", "groceries.jpg", "truck.jpg"]:
        rgb = np.array(Image.open(IMAGES / name).convert("RGB"))
        prompts = prompts_for(rgb.shape[1], rgb.shape[0])
        run_parity_tool(bin_dir, ckpt, rgb, prompts, tmp_path, "cuda", precision)
        with torch.no_grad():
            pred.set_image(rgb)
            ref_emb = pred.features.float().cpu().numpy()
            emb = np.load(tmp_path / "embedding.npy")
            rel_l2 = float(np.linalg.norm(emb - ref_emb) / np.linalg.norm(ref_emb))
            rel_max = max_rel_err(emb, ref_emb)
            base_emb = pytorch_bf16_embedding(ckpt, sam, rgb, pred) if precision != "fp32" else None
            base_l2 = None if base_emb is None else float(np.linalg.norm(base_emb.cpu().numpy() - ref_emb) / np.linalg.norm(ref_emb))
            ious, base_ious, iou_err = [], [], 0.0
            for k, p in enumerate(prompts):
                masks, iou, _ = upstream_predict(pred, p)
                ours = np.load(tmp_path / f"p{k}_masks.npy")
                iou_err = max(iou_err, float(np.abs(np.load(tmp_path / f"p{k}_iou.npy") - iou).max()))
                ious += mask_ious(ours, masks)
                if base_emb is not None:  # upstream's decoder on the PyTorch bf16 embedding
                    features = pred.features
                    pred.features = base_emb
                    base_masks, _, _ = upstream_predict(pred, p)
                    pred.features = features
                    base_ious += mask_ious(base_masks, masks)
                if precision == "fp32":
                    differ = (ours > 0) != (masks > 0)
                    assert np.all(np.abs(masks[differ]) <= 1e-3), f"{name} prompt {k}: {differ.sum()} pixels differ"
        baseline = "" if base_l2 is None else (f" [PyTorch bf16 encoder: rel L2 {base_l2:.2e}, "
                                                  f"mask IoU mean {np.mean(base_ious):.4f}]")
        print(f"[{model} {precision}] {name}: embedding max rel err {rel_max:.2e}, rel L2 {rel_l2:.2e}; "
              f"mask IoU mean {np.mean(ious):.4f} min {np.min(ious):.4f}; iou-score abs err {iou_err:.2e}{baseline}")
        if precision == "fp32":
            assert rel_max <= 1e-4, f"{name}: embedding max relative error {rel_max:.2e}"
            continue
        if precision == "fp8":  # quantised: DESIGN.md asks for its figures, measured and reported, not bf16's rule
            assert rel_l2 <= 0.1 and np.mean(ious) >= 0.9, f"{name}: fp8 far off (rel L2 {rel_l2:.2e})"
            continue
        if base_l2 is not None:
            assert rel_l2 <= 2 * base_l2, f"{name}: embedding rel L2 {rel_l2:.2e} > 2x PyTorch bf16's {base_l2:.2e}"
        if model != "tiny":
            assert np.mean(ious) >= 0.99, f"{name}: mean mask IoU {np.mean(ious):.4f} < 0.99"
