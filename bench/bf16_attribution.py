"""Where samfast's bf16 masks part from upstream's fp32 ones: the embedding, the decoder, or the
upscaling to the image size. On one synthetic checkpoint (same weights in both), per image and
prompt (three points, multimask), each variant's masks against upstream fp32 on the GPU:

  samfast bf16                      the whole path in bf16
  upstream decoder, samfast emb     samfast's bf16 embedding through upstream's fp32 decoder
  samfast low-res, upstream resize  samfast bf16's low-res logits resized by upstream (fp32)
  upstream bf16 decoder             upstream fp32 embedding, decoder under torch.autocast(bf16)
  upstream bf16 encoder             encoder under autocast(bf16), decoder fp32
  upstream bf16 decoder, P in fp32  as upstream bf16 decoder, but its part P (the two-way transformer,
                                    the output upscaling, the hypernetwork MLPs) in fp32

Prints one JSON line per variant: mean and minimum mask IoU over all masks, and per image.
Needs a CUDA GPU, torch and upstream segment_anything beside samfast."""
import argparse
import contextlib
import json
import os
import tempfile

import numpy as np
import torch
from PIL import Image

import samfast
from segment_anything import SamPredictor, sam_model_registry


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def images(folder):
    """The test images, and others made from them (other sizes, crops, flips): outside the test set."""
    out = {}
    for name in sorted(os.listdir(folder)):
        im = Image.open(os.path.join(folder, name)).convert("RGB")
        out[name] = np.array(im)
        w, h = im.size
        out[name + ":crop"] = np.array(im.crop((w // 5, h // 7, w - w // 9, h - h // 11)).resize((913, 677)))
        out[name + ":flip-small"] = np.array(im.transpose(Image.FLIP_LEFT_RIGHT).resize((w * 2 // 5, h * 2 // 5)))
        out[name + ":tall"] = np.array(im.rotate(90, expand=True).resize((h, int(w * 1.3))))
    return out


DECODER_PARTS = ("transformer", "output_upscaling", "output_hypernetworks_mlps")


@contextlib.contextmanager
def in_fp32(module):
    """module's forward out of autocast, on fp32 inputs, while in the block."""
    forward = module.forward

    def fp32_forward(*args, **kw):
        with torch.autocast("cuda", enabled=False):
            return forward(*[x.float() if torch.is_tensor(x) and x.is_floating_point() else x for x in args], **kw)
    module.forward = fp32_forward
    try:
        yield
    finally:
        module.forward = forward


def autocast_masks(predictor, pts, labels, device, fp32_part=None):
    """Upstream's decoder under autocast(bf16) (fp32_part of it in fp32), its masks (through
    predict_torch: predict() turns the bf16 scores to numpy, which numpy cannot hold)."""
    decoder = predictor.model.mask_decoder
    part = [] if fp32_part is None else getattr(decoder, fp32_part)
    modules = list(part) if isinstance(part, torch.nn.ModuleList) else [part] if fp32_part else []
    with contextlib.ExitStack() as stack, torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for m in modules:  # (cpu: a check of the script)
            stack.enter_context(in_fp32(m))
        coords = torch.as_tensor(predictor.transform.apply_coords(pts, predictor.original_size), dtype=torch.float,
                                 device=device)[None]
        return predictor.predict_torch(coords, torch.as_tensor(labels, dtype=torch.int, device=device)[None])[0][0] \
            .cpu().numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--images", default=os.path.join(os.environ.get("SAMFAST_TESTDATA", "../shared/testdata"), "images"))
    ap.add_argument("--prompts", type=int, default=8, help="prompts of three points per image")
    ap.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
    ap.add_argument("--device", default="cuda", help="cuda; cpu (samfast fp32) only checks the script")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    native = samfast._samfast.Model.synthetic(a.model, 11, device="cpu")
    state = {k: torch.from_numpy(v.copy()) for k, v in native.state_arrays()}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "w.pth")
        torch.save(state, path)
        ours = samfast.SamPredictor(samfast.load(path, device=a.device,
                                                 precision="bf16" if a.device == "cuda" else "fp32"))
    up = sam_model_registry[a.model]()
    up.load_state_dict(state)
    theirs = SamPredictor(up.to(a.device).eval())
    variants = ["samfast bf16", "upstream decoder, samfast emb", "samfast low-res, upstream resize",
                "upstream bf16 decoder", "upstream bf16 encoder"] + \
        [f"upstream bf16 decoder, {part} in fp32" for part in DECODER_PARTS]
    ious = {v: {} for v in variants}
    emb_err = {}
    for name, image in list(images(a.images).items())[:a.limit or None]:
        h, w = image.shape[:2]
        ours.set_image(image)
        theirs.set_image(image)
        fp32_emb = theirs.features.clone()
        e = ours.get_image_embedding()
        our_emb = (e if isinstance(e, torch.Tensor) else torch.from_numpy(np.asarray(e))).float().to(a.device)
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.device == "cuda"):  # (cpu: a check of the script)
            theirs.set_image(image)
        bf16_enc_emb = theirs.features.float().clone()
        ref = lambda e: np.linalg.norm((e - fp32_emb).cpu().numpy()) / np.linalg.norm(fp32_emb.cpu().numpy())  # noqa: E731
        emb_err[name] = {"samfast bf16": ref(our_emb), "upstream bf16 encoder": ref(bf16_enc_emb)}
        for _ in range(a.prompts):
            pts = np.stack([rng.uniform(0, w, 3), rng.uniform(0, h, 3)], axis=1)
            kw = dict(point_coords=pts, point_labels=np.array([1, 1, 0]), multimask_output=True)
            theirs.features = fp32_emb
            want, _, _ = theirs.predict(**kw)
            got = {}
            got["samfast bf16"], _, low = ours.predict(**kw)
            theirs.features = our_emb
            got["upstream decoder, samfast emb"] = theirs.predict(**kw)[0]
            low_t = torch.as_tensor(np.asarray(low), dtype=torch.float32).to(a.device)
            resized = up.postprocess_masks(low_t[None], theirs.input_size, theirs.original_size)[0]
            got["samfast low-res, upstream resize"] = (resized > up.mask_threshold).cpu().numpy()
            theirs.features = fp32_emb
            got["upstream bf16 decoder"] = autocast_masks(theirs, pts, kw["point_labels"], a.device)
            for part in DECODER_PARTS:
                got[f"upstream bf16 decoder, {part} in fp32"] = autocast_masks(theirs, pts, kw["point_labels"],
                                                                                a.device, part)
            theirs.features = bf16_enc_emb
            got["upstream bf16 encoder"] = theirs.predict(**kw)[0]
            for v in variants:
                ious[v].setdefault(name, []).extend(iou(x, y) for x, y in zip(got[v], want))
    for v in variants:
        every = [x for per in ious[v].values() for x in per]
        print(json.dumps({"variant": v, "model": a.model, "masks": len(every), "mean_iou": round(float(np.mean(every)), 4),
                          "min_iou": round(float(np.min(every)), 4),
                          "per_image": {k: [round(float(np.mean(x)), 4), round(float(np.min(x)), 4)]
                                        for k, x in ious[v].items()}}))
    print(json.dumps({"embedding_rel_l2": {k: {v: round(float(e), 5) for v, e in d.items()} for k, d in emb_err.items()}}))


if __name__ == "__main__":
    main()
