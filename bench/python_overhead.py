"""Python's cost over the library's, in one process on one model: SamPredictor.predict and
predict_torch against Predictor::predict timed in a C++ loop (samfast._samfast._time_predict), and
SamAutomaticMaskGenerator.generate against MaskGenerator::generate (_time_generate). Blocks of the
two alternate and the medians are compared. Prints one JSON line.
  python3 bench/python_overhead.py [--model vit_b] [--device cuda] [--precision auto] [--image PATH]"""
import argparse
import json
import statistics
import time

import numpy as np

import samfast
from samfast import _samfast


def median_us(fn, runs, blocks):
    out = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(runs):
            fn()
        out.append((time.perf_counter() - t0) / runs * 1e6)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--checkpoint")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--image", required=True)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--generate-runs", type=int, default=10)
    a = ap.parse_args()
    sam = (samfast.load(a.checkpoint, a.device, a.precision) if a.checkpoint else
           samfast.Sam(model_type=a.model, device=a.device, precision=a.precision))
    image = samfast.read_image(a.image)
    p = samfast.SamPredictor(sam)
    p.set_image(image)
    pts, labels = np.array([[image.shape[1] * 0.5, image.shape[0] * 0.5]], np.float32), np.array([1], np.int32)
    for _ in range(20):  # CUDA graphs recorded, caches warm
        p.predict(pts, labels)
    py, cpp = [], []
    for _ in range(a.blocks):
        py += median_us(lambda: p.predict(pts, labels), a.runs, 1)
        cpp.append(_samfast._time_predict(p._native, pts, labels, True, a.runs))
    result = dict(device=sam._native_model().device, model=sam.model_type, precision=sam.precision,
                  image=list(image.shape[:2]), predict_python_us=statistics.median(py),
                  predict_cpp_us=statistics.median(cpp))
    result["predict_overhead_us"] = result["predict_python_us"] - result["predict_cpp_us"]
    try:
        import torch
        coords = p.transform.apply_coords_torch(torch.from_numpy(pts[None]), image.shape[:2])
        lab = torch.from_numpy(labels[None]).float()

        def predict_torch():
            p.predict_torch(coords, lab)
        for _ in range(20):
            predict_torch()
        result["predict_torch_us"] = statistics.median(median_us(predict_torch, a.runs, a.blocks))
    except ImportError:
        pass
    gen = samfast.SamAutomaticMaskGenerator(sam)
    gen.generate(image)
    py_ms, cpp_ms = [], []
    for _ in range(a.generate_runs):
        t0 = time.perf_counter()
        gen.generate(image)
        py_ms.append((time.perf_counter() - t0) * 1e3)
        cpp_ms.append(_samfast._time_generate(gen._generator(), image, 1))
    result.update(generate_python_ms=statistics.median(py_ms), generate_cpp_ms=statistics.median(cpp_ms),
                  masks=len(gen.generate(image)))
    result["generate_overhead_pct"] = 100 * (result["generate_python_ms"] / result["generate_cpp_ms"] - 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
