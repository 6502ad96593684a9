"""Segment everything on the GPU machine, in one call: upstream SamAutomaticMaskGenerator (fp32) and
segment-anything-fast's generator (bf16) as anchors beside `samfast bench --amg`, and parity of
`samfast everything` (fp32 and bf16) against upstream fp32 on the same GPU and checkpoint.
Usage (from the repository root, .devbin and .whl carried):
  python3 bench/gpu/amg_bench.py prepare OUTDIR          # checkpoints and 1800x1200 test images
  python3 bench/gpu/amg_bench.py anchor IMPL MODEL VARIANT OUTDIR   # IMPL orig|fast, VARIANT default|low
  python3 bench/gpu/amg_bench.py parity MODEL OUTDIR [base|crops]
Prints one JSON line per measurement."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SAMFAST = ROOT / ".devbin" / "samfast"
IMAGES = Path(os.environ.get("SAMFAST_TESTDATA", ROOT / ".whl" / "testdata")) / "images"
NAMES = ["dog.jpg", "groceries.jpg", "truck.jpg"]
VARIANTS = {"default": {}, "low": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)}
PARITY = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
PARITY_VARIANTS = {"base": {}, "crops": dict(crop_n_layers=1, crop_nms_thresh=1.0)}  # (min_mask_region_area needs cv2 upstream)


def prepare(out):
    out = Path(out)
    (out / "photo").mkdir(parents=True, exist_ok=True)
    for m in ("vit_b", "vit_h"):
        ck = out / f"{m}.pth"
        if not ck.exists():
            subprocess.run([SAMFAST, "make-checkpoint", "--model", m, "--seed", "1", "--out", ck], check=True,
                           capture_output=True)
    for n in NAMES:  # typical photo size, landscape, from each test image
        Image.open(IMAGES / n).convert("RGB").resize((1800, 1200), Image.BICUBIC).save(out / "photo" / (n[:-4] + ".png"))


def patch_fast():
    """segment-anything-fast's generator on PyTorch 2.11 (its code predates it), two shims that keep its
    arithmetic: (1) its point embedding calls expand_as between two jagged NestedTensors, which
    NestedTensor no longer accepts ("NestedTensor expand_as_default(self: t, other: jt): expected self
    to be a tensor"), so nested points are embedded through its own non-nested code on the values and
    re-wrapped with the same offsets; (2) torchvision's NMS now wants scores of the boxes' dtype
    (fp32), and it passes bf16 IoU predictions. (Its nested decoder returns all 4 masks of a point,
    not the 3 of multimask output: 4096 candidates per image, not 3072. That is its behaviour, kept.)"""
    import torch
    from segment_anything_fast import automatic_mask_generator as amg
    from segment_anything_fast.modeling import prompt_encoder as pe
    embed = pe.PromptEncoder._embed_points

    def _embed_points(self, points, labels, pad):
        if not points.is_nested:
            return embed(self, points, labels, pad)
        # jagged (B, j, 1, 2) points and (B, j, 1) labels: values (N, 1, 2) and (N, 1)
        emb = embed(self, points.values(), labels.values(), pad)
        return torch.nested.nested_tensor_from_jagged(emb, offsets=points.offsets())

    pe.PromptEncoder._embed_points = _embed_points
    nms = amg.batched_nms
    amg.batched_nms = lambda boxes, scores, idxs, iou_threshold: nms(boxes, scores.float(), idxs, iou_threshold)


def build(impl, model, ckpt):
    import torch
    if impl == "orig":
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
    else:
        from segment_anything_fast import SamAutomaticMaskGenerator, sam_model_registry
        patch_fast()
    sam = sam_model_registry[model](checkpoint=str(ckpt)).cuda().eval()
    if impl == "fast":
        sam = sam.to(torch.bfloat16)
    return sam, SamAutomaticMaskGenerator


def anchor(impl, model, variant, out):
    import torch
    out = Path(out)
    sam, Gen = build(impl, model, out / f"{model}.pth")
    gen = Gen(sam, **VARIANTS[variant])
    imgs = [np.array(Image.open(p)) for p in sorted((out / "photo").glob("*.png"))]
    res = {"impl": impl, "model": model, "variant": variant, "device": torch.cuda.get_device_name()}
    try:
        with torch.inference_mode():
            gen.generate(imgs[0])  # warm-up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            secs, masks = [], []
            for im in imgs:
                t0 = time.time()
                masks.append(len(gen.generate(im)))
                torch.cuda.synchronize()
                secs.append(time.time() - t0)
        res.update(seconds_per_image=float(np.median(secs)), seconds=secs, masks=masks,
                   peak_gib=torch.cuda.max_memory_allocated() / 2**30)
    except Exception as e:  # e.g. out of memory: reported, not hidden
        res["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    print(json.dumps(res), flush=True)


def decode(seg):
    """Uncompressed RLE (column-major counts, starting with background) -> (h, w) bool."""
    h, w = seg["size"]
    vals = np.zeros(len(seg["counts"]), bool)
    vals[1::2] = True
    return np.repeat(vals, seg["counts"]).reshape(w, h).T


def match(ours, theirs):
    """Greedy one-to-one matching by mask IoU: the IoU of each of upstream's masks with its match (0
    when none overlaps). The IoU matrix comes from one fp32 product of the flattened masks on the GPU
    (exact: the counts stay below 2^24)."""
    import torch
    if not ours or not theirs:
        return [0.0] * len(theirs)
    def stack(recs):
        return torch.stack([torch.from_numpy(decode(r["segmentation"])) for r in recs]).flatten(1).cuda().float()
    mo, mt = stack(ours), stack(theirs)
    inter = mt @ mo.T
    union = mt.sum(1)[:, None] + mo.sum(1)[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).cpu().numpy()
    used, ious = set(), []
    for row in iou:
        best, bi = 0.0, -1
        for i, v in enumerate(row):
            if i not in used and v > best:
                best, bi = float(v), i
        if bi >= 0:
            used.add(bi)
        ious.append(best)
    return ious


def parity(model, out, variant="base"):
    import torch
    out = Path(out)
    sam, Gen = build("orig", model, out / f"{model}.pth")
    opts = {**PARITY, **PARITY_VARIANTS[variant]}
    gen = Gen(sam, output_mode="uncompressed_rle", **opts)  # no pycocotools on that machine
    flags = [x for k, v in opts.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    for n in NAMES:
        rgb = np.array(Image.open(IMAGES / n).convert("RGB"))
        with torch.inference_mode():
            theirs = gen.generate(rgb)
        for prec in ("fp32", "bf16"):
            d = out / f"ours_{model}_{prec}"
            subprocess.run([SAMFAST, "everything", "--checkpoint", out / f"{model}.pth", "--device", "cuda", "--precision",
                            prec, "--input", IMAGES / n, "--output", d, "--output-mode", "uncompressed_rle", "--overwrite", *flags],
                           check=True, capture_output=True)
            ours = json.loads((d / (n[:-4] + ".json")).read_text())
            ious = match(ours, theirs)
            same_order = sum(o["point_coords"] == t["point_coords"] for o, t in zip(ours, theirs))
            print(json.dumps({"parity": model, "variant": variant, "precision": prec, "image": n, "ours": len(ours), "upstream": len(theirs),
                              "mean_iou": float(np.mean(ious)) if ious else None,
                              "matched_ge_0.99": int(sum(i >= 0.99 for i in ious)),
                              "same_point_in_order": same_order}), flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "prepare":
        prepare(sys.argv[2])
    elif cmd == "anchor":
        anchor(*sys.argv[2:6])
    elif cmd == "parity":
        parity(*sys.argv[2:5])
