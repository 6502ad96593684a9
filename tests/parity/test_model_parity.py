"""samfast (CPU, fp32) against upstream segment_anything on a synthetic tiny checkpoint: every
encoder block, the neck, the prompt encoder, the decoder and the predictor end to end, on the three
test images with points, boxes, mask inputs and multimask on and off."""
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, max_rel_err, upstream_sam

EMBED_TOL = 1e-4  # DESIGN.md: fp32 max relative error of the image embedding


def prompt_sets(w, h):
    c = [w * 0.5, h * 0.5]
    return [
        {"points": [c], "labels": [1], "box": None, "multimask": True},
        {"points": [c], "labels": [1], "box": None, "multimask": False},
        {"points": [[w * 0.3, h * 0.4], [w * 0.7, h * 0.6]], "labels": [1, 0], "box": None, "multimask": True},
        {"points": [], "labels": [], "box": [w * 0.2, h * 0.25, w * 0.8, h * 0.9], "multimask": False},
        {"points": [[w * 0.45, h * 0.5]], "labels": [1], "box": [w * 0.1, h * 0.1, w * 0.6, h * 0.7], "multimask": True},
        {"points": [[0, 0], [w, h]], "labels": [1, 1], "box": None, "multimask": True},
    ]


@pytest.mark.parametrize("name", ["dog.jpg", "groceries.jpg", "truck.jpg"])
def test_predictor_matches_upstream(name, tmp_path, tiny_checkpoint, bin_dir):
    import torch
    from segment_anything import SamPredictor

    sam = upstream_sam(tiny_checkpoint)
    rgb = np.array(Image.open(IMAGES / name).convert("RGB"))
    h, w = rgb.shape[:2]
    Image.fromarray(rgb).save(tmp_path / "image.png")

    # Upstream, with hooks on every encoder block.
    blocks = []
    hooks = [b.register_forward_hook(lambda m, i, o: blocks.append(o.detach().numpy())) for b in sam.image_encoder.blocks]
    pred = SamPredictor(sam)
    with torch.no_grad():
        pred.set_image(rgb)
    for hk in hooks:
        hk.remove()
    ref_input = sam.preprocess(torch.as_tensor(pred.transform.apply_image(rgb)).permute(2, 0, 1).contiguous()[None])

    prompts = prompt_sets(w, h)
    ref = []
    with torch.no_grad():
        for k, p in enumerate(prompts):
            args = dict(point_coords=np.array(p["points"], np.float32) if p["points"] else None,
                        point_labels=np.array(p["labels"]) if p["points"] else None,
                        box=np.array(p["box"], np.float32) if p["box"] else None,
                        multimask_output=p["multimask"], return_logits=True)
            masks, iou, low = pred.predict(**args)
            ref.append((masks, iou, low))
        # A mask prompt: the best low-res logits of the first prediction fed back with a point.
        best = ref[0][2][np.argmax(ref[0][1])][None]
        np.save(tmp_path / "mask_input.npy", best.astype(np.float32))
        prompts.append({"points": [[w * 0.5, h * 0.5]], "labels": [1], "box": None, "multimask": True,
                        "mask_input": str(tmp_path / "mask_input.npy")})
        masks, iou, low = pred.predict(point_coords=np.array([[w * 0.5, h * 0.5]], np.float32), point_labels=np.array([1]),
                                       mask_input=best, multimask_output=True, return_logits=True)
        ref.append((masks, iou, low))
    for p in prompts:
        p.setdefault("mask_input", None)
    (tmp_path / "prompts.json").write_text(json.dumps({"prompts": prompts}))
    subprocess.run([str(bin_dir / "tests" / "parity_tool"), tiny_checkpoint, tmp_path / "image.png",
                    tmp_path / "prompts.json", tmp_path], check=True)

    # Preprocessing (PIL-exact resize, normalize, pad), then every encoder block, then the neck output (the image embedding).
    assert max_rel_err(np.load(tmp_path / "input.npy"), ref_input.numpy()) <= 1e-6, "preprocessed input"
    for i, ref_block in enumerate(blocks):
        err = max_rel_err(np.load(tmp_path / f"block_{i}.npy"), ref_block)
        assert err <= EMBED_TOL, f"encoder block {i}: max relative error {err:.2e}"
    emb_err = max_rel_err(np.load(tmp_path / "embedding.npy"), pred.features.numpy())
    assert emb_err <= EMBED_TOL, f"image embedding: max relative error {emb_err:.2e}"
    assert max_rel_err(np.load(tmp_path / "dense_pe.npy"), sam.prompt_encoder.get_dense_pe().numpy()) <= 1e-5

    with torch.no_grad():
        for k, (p, (masks, iou, low)) in enumerate(zip(prompts, ref)):
            # Prompt encoder on upstream's own transformed coordinates.
            pts = None
            if p["points"]:
                c = pred.transform.apply_coords(np.array(p["points"], np.float32), pred.original_size)
                pts = (torch.as_tensor(c, dtype=torch.float)[None], torch.as_tensor(p["labels"], dtype=torch.int)[None])
            box = None
            if p["box"]:
                box = torch.as_tensor(pred.transform.apply_boxes(np.array(p["box"], np.float32), pred.original_size),
                                      dtype=torch.float)
            mask = torch.as_tensor(np.load(p["mask_input"]))[None] if p["mask_input"] else None
            sparse, dense = sam.prompt_encoder(points=pts, boxes=box, masks=mask)
            assert max_rel_err(np.load(tmp_path / f"p{k}_sparse.npy"), sparse.numpy()) <= 1e-5, f"prompt {k}: sparse"
            assert max_rel_err(np.load(tmp_path / f"p{k}_dense.npy"), dense.numpy()) <= 1e-5, f"prompt {k}: dense"

            # Decoder and post-processing.
            our_low = np.load(tmp_path / f"p{k}_low_res.npy")
            assert max_rel_err(our_low, low) <= 1e-4, f"prompt {k}: low-res logits"
            assert np.abs(np.load(tmp_path / f"p{k}_iou.npy") - iou).max() <= 1e-4, f"prompt {k}: iou"
            our_masks = np.load(tmp_path / f"p{k}_masks.npy")
            assert our_masks.shape == masks.shape == (3 if p["multimask"] else 1, h, w)
            differ = (our_masks > 0) != (masks > 0)
            # Only boundary pixels may differ: where upstream's logit is within 1e-3 of 0.
            assert np.all(np.abs(masks[differ]) <= 1e-3), \
                f"prompt {k}: {differ.sum()} mask pixels differ, upstream logits up to {np.abs(masks[differ]).max():.2e}"


def test_decoder_with_a_two_layer_iou_head(tmp_path, tiny_checkpoint, bin_dir):
    """A checkpoint whose IoU head has 2 layers, not the 3 of the hypernetwork MLPs: samfast runs the
    hypernetworks as one block-diagonal MLP and the IoU head on its own; upstream built to match."""
    import torch
    from segment_anything import SamPredictor
    from segment_anything.modeling.mask_decoder import MLP

    sd = torch.load(tiny_checkpoint, map_location="cpu")
    head = "mask_decoder.iou_prediction_head.layers."
    for part in ("weight", "bias"):  # layers 0, 2 -> 0, 1
        del sd[f"{head}1.{part}"]
        sd[f"{head}1.{part}"] = sd.pop(f"{head}2.{part}")
    checkpoint = tmp_path / "iou2.pth"
    torch.save(sd, checkpoint)
    sam = upstream_sam(tiny_checkpoint)
    d = sd[f"{head}0.weight"]
    sam.mask_decoder.iou_prediction_head = MLP(d.shape[1], d.shape[0], sd[f"{head}1.weight"].shape[0], 2)
    sam.load_state_dict(sd)
    sam.eval()

    rgb = np.array(Image.open(IMAGES / "dog.jpg").convert("RGB"))
    h, w = rgb.shape[:2]
    Image.fromarray(rgb).save(tmp_path / "image.png")
    prompts = prompt_sets(w, h)[:4]
    for p in prompts:
        p["mask_input"] = None
    (tmp_path / "prompts.json").write_text(json.dumps({"prompts": prompts}))
    subprocess.run([str(bin_dir / "tests" / "parity_tool"), checkpoint, tmp_path / "image.png",
                    tmp_path / "prompts.json", tmp_path], check=True)
    pred = SamPredictor(sam)
    with torch.no_grad():
        pred.set_image(rgb)
        for k, p in enumerate(prompts):
            _, iou, low = pred.predict(point_coords=np.array(p["points"], np.float32) if p["points"] else None,
                                       point_labels=np.array(p["labels"]) if p["points"] else None,
                                       box=np.array(p["box"], np.float32) if p["box"] else None,
                                       multimask_output=p["multimask"], return_logits=True)
            assert max_rel_err(np.load(tmp_path / f"p{k}_low_res.npy"), low) <= 1e-4, f"prompt {k}: low-res logits"
            assert np.abs(np.load(tmp_path / f"p{k}_iou.npy") - iou).max() <= 1e-4, f"prompt {k}: iou"
