"""Segment everything over one folder through `samfast everything` (the CLI, one process) and
through `samfast-dataset everything` (Ray Data, GPU actors), one after the other on the same
machine: images per second end to end and after the first results (model loads and Ray's start
left out), and the GPU's busy fraction (nvidia-smi's utilization, sampled every 100 ms, while
results came). One JSON line per run.

  python3 bench/ray_vs_cli.py --cli .devbin/samfast --make 1000 --folder /tmp/images --model vit_h
  (--make N first writes N JPEGs made from the test images at several sizes; extra arguments after
  -- go to both commands, e.g. -- --pred-iou-thresh 0 --stability-score-thresh 0)"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SIZES = [(1800, 1200), (1500, 1000), (1024, 768), (2048, 1365), (1200, 1800), (1280, 720)]


def make_one(args):
    from PIL import Image, ImageOps
    sources, k, folder = args
    image = Image.open(sources[k % len(sources)]).convert("RGB")
    w, h = SIZES[(k // len(sources)) % len(SIZES)]
    image = image.resize((w, h), Image.BILINEAR)
    if (k // (len(sources) * len(SIZES))) % 2:
        image = ImageOps.mirror(image)
    # (a crop offset that differs per image, so no two files are the same)
    dx, dy = k % 17, (k // 17) % 13
    image = image.crop((dx, dy, w, h))
    image.save(Path(folder) / f"img{k:06d}.jpg", quality=90)


def make_folder(folder: str, count: int, images: Path):
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    sources = sorted(str(p) for p in images.glob("*.jpg"))
    with ProcessPoolExecutor() as pool:
        list(pool.map(make_one, [(sources, k, folder) for k in range(count)], chunksize=16))


class GpuSampler:
    """nvidia-smi's utilization.gpu every 100 ms, with the time of each sample."""

    def __init__(self):
        self.samples, self.proc = [], None

    def __enter__(self):
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-lms", "100"], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            values = [float(v) for v in line.split(",") if v.strip()]
            self.samples.append((time.perf_counter(), values))

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()

    def busy(self, t0, t1):
        inside = [v[0] for t, v in self.samples if t0 <= t <= t1 and v]
        return round(sum(inside) / len(inside) / 100.0, 3) if inside else None


def timed_run(command, env, pattern):
    """Runs command; times each line of its output that matches pattern (a result)."""
    start = time.perf_counter()
    stamps, lines = [], []
    with GpuSampler() as gpu:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            lines.append(line)
            if re.search(pattern, line):
                stamps.append(time.perf_counter())
        rc = proc.wait()
        end = time.perf_counter()
    return rc, start, end, stamps, lines, gpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", required=True, help="the samfast command")
    ap.add_argument("--folder", required=True)
    ap.add_argument("--make", type=int, default=0, help="write this many images into --folder first")
    ap.add_argument("--images", default=os.environ.get("SAMFAST_TESTDATA", "../shared/testdata") + "/images")
    ap.add_argument("--model", default="vit_h")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--skip", default="", help="cli or ray: leave that run out")
    ap.add_argument("--work", default="/tmp/ray_vs_cli")
    ap.add_argument("extra", nargs="*", help="generator options for both (after --)")
    a = ap.parse_args()
    if a.make:
        t = time.perf_counter()
        make_folder(a.folder, a.make, Path(a.images))
        print(f"made {a.make} images in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    count = len([p for p in os.listdir(a.folder) if p.endswith(".jpg")])
    shutil.rmtree(a.work, ignore_errors=True)
    common = ["--model", a.model, "--precision", a.precision, *a.extra]
    runs = {
        "cli": ([a.cli, "everything", "--input", a.folder, "--output", f"{a.work}/cli", "--output-mode", "coco_rle",
                 *common], r"\] img\d+\.jpg: \d+ masks in"),
        "ray": ([sys.executable, "-m", "samfast.dataset", "everything", "--input", a.folder, "--output",
                 f"{a.work}/ray", "--format", "json", "--gpus", str(a.gpus), "--batch-size", str(a.batch_size),
                 *common], r"after the first results"),
    }
    for name, (command, pattern) in runs.items():
        if name in a.skip.split(","):
            continue
        rc, start, end, stamps, lines, gpu = timed_run(command, dict(os.environ), pattern)
        result = {"run": name, "model": a.model, "precision": a.precision, "images": count, "rc": rc,
                  "wall_s": round(end - start, 2), "end_to_end_img_s": round(count / (end - start), 2)}
        if name == "cli" and len(stamps) > 1:
            result["steady_img_s"] = round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 2)
            result["gpu_busy"] = gpu.busy(stamps[0], stamps[-1])
        if name == "ray" and stamps:
            summary = next(ln for ln in lines if re.search(pattern, ln))
            m = re.search(r"([\d.]+) after the first results \(the last ([\d.]+) s\)", summary)
            result["steady_img_s"] = float(m.group(1))
            result["gpu_busy"] = gpu.busy(stamps[0] - float(m.group(2)), stamps[0])
            result["summary"] = summary.strip()
        if rc != 0:
            result["tail"] = "".join(lines[-15:])
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
