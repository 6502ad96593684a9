"""Where samfast's bf16 masks part from upstream's fp32 ones: the embedding, the decoder, or the
upscaling to the image size. On one synthetic checkpoint (same weights in both), per image and
prompt (three points, multimask), each variant's masks against upstream fp32 on the GPU:

  samfast bf16                      the encoder in bf16, the decoder in fp16 (the default)
  samfast bf16, bf16 decoder        the whole path in bf16 (--decoder-precision bf16)
  upstream decoder, samfast emb     samfast's bf16 embedding through upstream's fp32 decoder
  samfast low-res, upstream resize  samfast bf16's low-res logits resized by upstream (fp32)
  upstream bf16 decoder             upstream fp32 embedding, decoder under torch.autocast(bf16)
  upstream bf16 encoder             encoder under autocast(bf16), decoder fp32
  upstream bf16 decoder, ...        as upstream bf16 decoder, one part otherwise (DECODER_VARIANTS)
  upstream tf32 decoder             upstream fp32 embedding, decoder in fp32 on TF32 tensor cores

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


# Variants of upstream's bf16 decoder: (submodule path, attribute, "fp32" or "bf16") to run otherwise.
DECODER_VARIANTS = {
    "transformer in fp32": [("mask_decoder.transformer", "forward", "fp32")],
    "output_upscaling in fp32": [("mask_decoder.output_upscaling", "forward", "fp32")],
    "output_hypernetworks_mlps in fp32": [(f"mask_decoder.output_hypernetworks_mlps.{i}", "forward", "fp32")
                                          for i in range(4)],
    "upsampling to the image in fp32": [("", "postprocess_masks", "fp32")],
    "only the transformer in bf16": [("mask_decoder", "predict_masks", "fp32"),
                                     ("mask_decoder.transformer", "forward", "bf16")],
}


def floats(x):
    if torch.is_tensor(x) and x.is_floating_point():
        return x.float()
    return type(x)(floats(v) for v in x) if isinstance(x, (tuple, list)) else x


@contextlib.contextmanager
def patched(obj, name, mode):
    """obj.name run in fp32 (autocast off, fp32 inputs) or under autocast(bf16) (fp32 outputs), while in the block."""
    original = getattr(obj, name)

    def run(*args, **kw):
        if mode == "fp32":
            args, kw = floats(args), {k: floats(v) for k, v in kw.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "bf16"):
            out = original(*args, **kw)
        return floats(out) if mode == "bf16" else out
    setattr(obj, name, run)
    try:
        yield
    finally:
        delattr(obj, name)  # (the class's method again)


def autocast_masks(predictor, pts, labels, device, variant=None):
    """Upstream's decoder under autocast(bf16) (parts of it otherwise: DECODER_VARIANTS), its masks
    (through predict_torch: predict() turns the bf16 scores to numpy, which numpy cannot hold)."""
    with contextlib.ExitStack() as stack, torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for path, name, mode in DECODER_VARIANTS.get(variant, []):  # (cpu: a check of the script)
            stack.enter_context(patched(predictor.model.get_submodule(path), name, mode))
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
    # fp32 as fp32 (as the GPU parity has it): torch lets cuDNN's convolutions (the patch embedding, the
    # neck, the decoder's upscaling) run on TF32 by default
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    rng = np.random.default_rng(0)
    native = samfast._samfast.Model.synthetic(a.model, 11, device="cpu")
    state = {k: torch.from_numpy(v.copy()) for k, v in native.state_arrays()}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "w.pth")
        torch.save(state, path)
        gpu = a.device == "cuda"
        ours = samfast.SamPredictor(samfast.load(path, device=a.device, precision="bf16" if gpu else "fp32"))
        ours_bf16 = samfast.SamPredictor(samfast.load(path, device=a.device, precision="bf16" if gpu else "fp32",
                                                      decoder_precision="bf16" if gpu else "fp32"))
    up = sam_model_registry[a.model]()
    up.load_state_dict(state)
    theirs = SamPredictor(up.to(a.device).eval())
    variants = ["samfast bf16", "samfast bf16, bf16 decoder", "upstream decoder, samfast emb", "samfast low-res, upstream resize",
                "upstream bf16 decoder", "upstream bf16 encoder", "upstream tf32 decoder"] + \
        [f"upstream bf16 decoder, {v}" for v in DECODER_VARIANTS]
    ious = {v: {} for v in variants}
    emb_err = {}
    for name, image in list(images(a.images).items())[:a.limit or None]:
        h, w = image.shape[:2]
        ours.set_image(image)
        ours_bf16.set_image(image)
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
            got["samfast bf16, bf16 decoder"] = ours_bf16.predict(**kw)[0]
            theirs.features = our_emb
            got["upstream decoder, samfast emb"] = theirs.predict(**kw)[0]
            low_t = torch.as_tensor(np.asarray(low), dtype=torch.float32).to(a.device)
            resized = up.postprocess_masks(low_t[None], theirs.input_size, theirs.original_size)[0]
            got["samfast low-res, upstream resize"] = (resized > up.mask_threshold).cpu().numpy()
            theirs.features = fp32_emb
            got["upstream bf16 decoder"] = autocast_masks(theirs, pts, kw["point_labels"], a.device)
            for v in DECODER_VARIANTS:
                got[f"upstream bf16 decoder, {v}"] = autocast_masks(theirs, pts, kw["point_labels"], a.device, v)
            theirs.features = bf16_enc_emb
            got["upstream bf16 encoder"] = theirs.predict(**kw)[0]
            theirs.features = fp32_emb
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            got["upstream tf32 decoder"] = theirs.predict(**kw)[0]
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
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
