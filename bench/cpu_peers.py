"""samfast on the CPU beside its peers, on the same cores, checkpoint and picture: upstream
segment_anything (PyTorch) and ONNX Runtime running upstream's model as upstream's own export code
writes it (the encoder through torch.onnx.export of its image_encoder, the decoder through
segment_anything.utils.onnx.SamOnnxModel, as scripts/export_onnx_model.py does; exported at run time
into a temporary folder, never kept).

Steps timed, as a SAM user meets them: set_image (resize, normalize, pad, image encoder) and predict
(one point, multimask, masks at the picture's own size). Each implementation runs in a process of its
own per round, rounds interleaved; a round's figure is the median of its predicts (after one warm-up)
and its one set_image; the table gives the median over rounds.
With --everything: segment everything at default options instead (upstream's
SamAutomaticMaskGenerator.generate against `samfast bench --amg`), seconds per image.

Usage: python3 bench/cpu_peers.py --checkpoint vit_b.pth --model vit_b --samfast build/samfast
         [--image dog.jpg] [--threads 2] [--rounds 3] [--predicts 10] [--only upstream,onnxruntime,samfast]
         [--everything]
Needs Debian's python3-torch, segment_anything (scripts/setup.sh installs both) and onnxruntime
(pip install onnxruntime; in a venv made with --system-site-packages to reach torch).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

POINT = (400, 260)  # on dog.jpg's dog; any point inside the picture does


def upstream_model(args):
    """upstream's model on args.threads threads, and the picture as an RGB array."""
    import numpy as np
    import torch
    from PIL import Image
    from segment_anything import sam_model_registry

    torch.set_num_threads(args.threads)
    return sam_model_registry[args.model](checkpoint=args.checkpoint).eval(), np.asarray(Image.open(args.image).convert("RGB"))


def upstream(args):
    import numpy as np
    import torch
    from segment_anything import SamPredictor

    sam, img = upstream_model(args)
    pred = SamPredictor(sam)
    with torch.inference_mode():
        t0 = time.perf_counter()
        pred.set_image(img)
        set_image = time.perf_counter() - t0
        times = []
        for i in range(args.predicts + 1):
            t0 = time.perf_counter()
            pred.predict(point_coords=np.array([[POINT[0] + i, POINT[1]]], np.float32), point_labels=np.array([1]),
                         multimask_output=True)
            times.append(time.perf_counter() - t0)
    return set_image, times[1:], "torch %s" % torch.__version__


def export_onnx(args, folder):
    """upstream's model as ONNX: encoder.onnx (preprocessed 1x3x1024x1024 -> embedding) and
    decoder.onnx (SamOnnxModel, multimask, masks at orig_im_size)."""
    import torch
    from segment_anything import sam_model_registry
    from segment_anything.utils.onnx import SamOnnxModel

    sam = sam_model_registry[args.model](checkpoint=args.checkpoint).eval()
    enc, dec = os.path.join(folder, "encoder.onnx"), os.path.join(folder, "decoder.onnx")
    with torch.no_grad():
        torch.onnx.export(sam.image_encoder, torch.randn(1, 3, 1024, 1024), enc, input_names=["image"],
                          output_names=["image_embeddings"], opset_version=17)
        onnx_model = SamOnnxModel(sam, return_single_mask=False)
        embed_dim, size = sam.prompt_encoder.embed_dim, sam.prompt_encoder.image_embedding_size
        mask_size = [4 * x for x in size]
        dummy = {
            "image_embeddings": torch.randn(1, embed_dim, *size, dtype=torch.float),
            "point_coords": torch.randint(low=0, high=1024, size=(1, 5, 2), dtype=torch.float),
            "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float),
            "mask_input": torch.randn(1, 1, *mask_size, dtype=torch.float),
            "has_mask_input": torch.tensor([1], dtype=torch.float),
            "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
        }
        torch.onnx.export(onnx_model, tuple(dummy.values()), dec, input_names=list(dummy.keys()),
                          output_names=["masks", "iou_predictions", "low_res_masks"], opset_version=17,
                          dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}})
    return enc, dec


def onnxruntime(args):
    import numpy as np
    import onnxruntime as ort
    import torch
    from PIL import Image
    from segment_anything import sam_model_registry
    from segment_anything.utils.transforms import ResizeLongestSide

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    enc, dec = (ort.InferenceSession(os.path.join(args.onnx_dir, f), opts, providers=["CPUExecutionProvider"])
                for f in ("encoder.onnx", "decoder.onnx"))
    # Preprocessing as upstream's SamPredictor.set_image does it (its transform, Sam.preprocess).
    sam = sam_model_registry[args.model]()
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    img = np.asarray(Image.open(args.image).convert("RGB"))
    h, w = img.shape[:2]
    t0 = time.perf_counter()
    x = torch.as_tensor(transform.apply_image(img)).permute(2, 0, 1).contiguous()[None].float()
    with torch.no_grad():
        x = sam.preprocess(x).numpy()
    emb = enc.run(None, {"image": x})[0]
    set_image = time.perf_counter() - t0
    times = []
    for i in range(args.predicts + 1):
        t0 = time.perf_counter()
        # one positive point plus the padding point upstream's ONNX example adds when there is no box
        coords = np.array([[[POINT[0] + i, POINT[1]], [0.0, 0.0]]], np.float32)
        coords = transform.apply_coords(coords, (h, w)).astype(np.float32)
        masks, scores, _ = dec.run(None, {
            "image_embeddings": emb, "point_coords": coords, "point_labels": np.array([[1, -1]], np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([h, w], np.float32)})
        masks = masks > 0.0
        times.append(time.perf_counter() - t0)
    return set_image, times[1:], "onnxruntime %s" % ort.__version__


def samfast(args):
    """The samfast command's own timing of the same two steps (`samfast bench --image`)."""
    out = subprocess.run([args.samfast, "bench", "--checkpoint", args.checkpoint, "--device", "cpu", "--image",
                          args.image, "--prompts", "1", "--runs", str(max(1, args.predicts // 5))],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["set_image_ms"] / 1000, [r["predict_1_prompt_ms"] / 1000], "samfast"


def upstream_everything(args):
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    sam, img = upstream_model(args)
    gen = SamAutomaticMaskGenerator(sam)
    with torch.inference_mode():
        t0 = time.perf_counter()
        masks = gen.generate(img)
    return time.perf_counter() - t0, len(masks), "torch %s" % torch.__version__


def samfast_everything(args):
    out = subprocess.run([args.samfast, "bench", "--amg", "--checkpoint", args.checkpoint, "--device", "cpu", "--image",
                          args.image, "--runs", "1"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["seconds_per_image"], r["per_image"][0]["masks"], "samfast"


IMPLS = {"upstream": upstream, "onnxruntime": onnxruntime, "samfast": samfast}
EVERYTHING = {"upstream": upstream_everything, "samfast": samfast_everything}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--samfast", default="build/samfast")
    ap.add_argument("--image", default=os.path.join(os.path.dirname(__file__), "../../shared/testdata/images/dog.jpg"))
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--predicts", type=int, default=10)
    ap.add_argument("--only", default=None, help="default: upstream,onnxruntime,samfast (--everything: upstream,samfast)")
    ap.add_argument("--everything", action="store_true", help="segment everything (default options) instead")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # (a child process: one implementation, one round)
    ap.add_argument("--onnx-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one and args.everything:
        seconds, masks, version = EVERYTHING[args.one](args)
        print(json.dumps({"impl": args.one, "version": version, "seconds": seconds, "masks": masks}))
        return
    if args.one:
        set_image, predicts, version = IMPLS[args.one](args)
        print(json.dumps({"impl": args.one, "version": version, "set_image_ms": 1000 * set_image,
                          "predict_ms": 1000 * statistics.median(predicts), "predict_min_ms": 1000 * min(predicts),
                          "predict_max_ms": 1000 * max(predicts)}))
        return
    impls = (args.only or ("upstream,samfast" if args.everything else "upstream,onnxruntime,samfast")).split(",")
    with tempfile.TemporaryDirectory(prefix="samfast-onnx-") as folder:
        if "onnxruntime" in impls:
            t0 = time.perf_counter()
            export_onnx(args, folder)
            print(f"exported upstream's {args.model} to ONNX in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rows = {i: [] for i in impls}
        for r in range(args.rounds):
            for impl in impls:
                cmd = [sys.executable, __file__, "--one", impl, "--onnx-dir", folder] + [
                    f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                    if k not in ("one", "onnx_dir", "only", "everything") and v is not None] + (
                    ["--everything"] if args.everything else [])
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"{impl} failed:\n{out.stderr[-2000:]}")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows[impl].append(row)
                print(f"round {r + 1} {impl}: " + (f"{row['seconds']:.1f} s, {row['masks']} masks" if args.everything else
                      f"set_image {row['set_image_ms']:.0f} ms, predict {row['predict_ms']:.1f} ms"), file=sys.stderr)
    for impl, rs in rows.items():
        if args.everything:
            print(json.dumps({"impl": impl, "version": rs[0]["version"], "model": args.model, "threads": args.threads,
                              "rounds": args.rounds, "everything_s": round(statistics.median(x["seconds"] for x in rs), 2),
                              "masks": rs[0]["masks"]}))
            continue
        med = lambda k: statistics.median(x[k] for x in rs)  # noqa: E731
        print(json.dumps({"impl": impl, "version": rs[0]["version"], "model": args.model, "threads": args.threads,
                          "rounds": args.rounds, "set_image_ms": round(med("set_image_ms"), 1),
                          "predict_ms": round(med("predict_ms"), 2),
                          "predict_min_ms": round(min(x["predict_min_ms"] for x in rs), 2),
                          "predict_max_ms": round(max(x["predict_max_ms"] for x in rs), 2)}))


if __name__ == "__main__":
    main()
