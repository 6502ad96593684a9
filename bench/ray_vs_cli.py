"""Segment everything over one folder through `samfast everything` (the CLI: one process per GPU,
each on its share of the folder, CUDA_VISIBLE_DEVICES) and through `samfast-dataset everything`
(Ray Data, one GPU actor per GPU), one after the other on the same machine, for each GPU count asked:
images per second end to end and from the first image done to the last (model loads and Ray's start left out),
the scaling against N times the one-GPU rate, and over that span each GPU's busy fraction and
memory peak (nvidia-smi every 100 ms) and the host's CPU load (/proc/stat). One JSON line per run.

  python3 bench/ray_vs_cli.py --cli .devbin/samfast --make 1000 --folder /tmp/images --gpus 1,2,4,8
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
CLI_RESULT = r"\] img\d+\.jpg: \d+ masks in"
RAY_SUMMARY = r"([\d.]+) from the first image done to the last \(([\d.]+) s\)"


def make_one(args):
    from PIL import Image, ImageOps
    sources, k, folder = args
    image = Image.open(sources[k % len(sources)]).convert("RGB")
    w, h = SIZES[(k // len(sources)) % len(SIZES)]
    image = image.resize((w, h), Image.BILINEAR)
    if (k // (len(sources) * len(SIZES))) % 2:
        image = ImageOps.mirror(image)
    dx, dy = k % 17, (k // 17) % 13  # (a crop offset that differs per image, so no two files are the same)
    image.crop((dx, dy, w, h)).save(Path(folder) / f"img{k:06d}.jpg", quality=90)


def make_folder(folder: str, count: int, images: Path):
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    sources = sorted(str(p) for p in images.glob("*.jpg"))
    with ProcessPoolExecutor() as pool:
        list(pool.map(make_one, [(sources, k, folder) for k in range(count)], chunksize=16))


def shard(folder: str, n: int, work: str):
    """The folder's images split into n folders of links, one per CLI process."""
    names = sorted(p for p in os.listdir(folder) if p.endswith(".jpg"))
    out = []
    for i in range(n):
        d = f"{work}/shard{i}"
        os.makedirs(d)
        for name in names[i::n]:
            os.symlink(os.path.abspath(os.path.join(folder, name)), f"{d}/{name}")
        out.append(d)
    return out


class Sampler:
    """nvidia-smi's utilization and memory of every GPU every 100 ms, and the host's CPU jiffies
    every 250 ms, with the time of each sample."""

    def __init__(self):
        self.gpu, self.cpu, self.proc, self.stop = [], [], None, threading.Event()

    def __enter__(self):
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", "-lms", "100"], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_gpu, daemon=True).start()
        threading.Thread(target=self._read_cpu, daemon=True).start()
        return self

    def _read_gpu(self):
        for line in self.proc.stdout:
            try:
                index, busy, memory = (float(v) for v in line.split(","))
            except ValueError:
                continue
            self.gpu.append((time.perf_counter(), int(index), busy, memory))

    def _read_cpu(self):
        while not self.stop.is_set():
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            idle = fields[3] + fields[4]  # idle + iowait
            self.cpu.append((time.perf_counter(), sum(fields) - idle, sum(fields)))
            self.stop.wait(0.25)

    def __exit__(self, *exc):
        self.stop.set()
        self.proc.terminate()
        self.proc.wait()

    def window(self, t0, t1, gpus):
        """Per GPU (the first `gpus`): busy fraction and peak memory (GiB) within [t0, t1]; host CPU load."""
        busy, peak = [], []
        for g in range(gpus):
            inside = [(b, m) for t, i, b, m in self.gpu if i == g and t0 <= t <= t1]
            busy.append(round(sum(b for b, _ in inside) / len(inside) / 100, 3) if inside else None)
            peak.append(round(max(m for _, m in inside) / 1024, 2) if inside else None)
        cpu = [c for c in self.cpu if t0 <= c[0] <= t1]
        load = round((cpu[-1][1] - cpu[0][1]) / (cpu[-1][2] - cpu[0][2]), 3) if len(cpu) > 1 and cpu[-1][2] > cpu[0][2] else None
        return {"gpu_busy": busy, "gpu_peak_gib": peak, "host_cpu_load": load}


def run_all(commands, pattern):
    """Runs commands at once; times each line of their outputs that matches pattern (a result)."""
    start = time.perf_counter()
    stamps, lines, lock = [], [], threading.Lock()
    with Sampler() as sampler:
        procs = [subprocess.Popen(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for c, e in commands]

        def read(proc):
            for line in proc.stdout:
                with lock:
                    lines.append(line)
                    if re.search(pattern, line):
                        stamps.append(time.perf_counter())
        readers = [threading.Thread(target=read, args=(p,)) for p in procs]
        for r in readers:
            r.start()
        for r in readers:
            r.join()
        rcs = [p.wait() for p in procs]
        end = time.perf_counter()
    return max(rcs), start, end, sorted(stamps), lines, sampler


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", required=True, help="the samfast command")
    ap.add_argument("--folder", required=True)
    ap.add_argument("--make", type=int, default=0, help="write this many images into --folder first")
    ap.add_argument("--images", default=os.environ.get("SAMFAST_TESTDATA", "../shared/testdata") + "/images")
    ap.add_argument("--model", default="vit_h")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--gpus", default="1", help="GPU counts to run, e.g. 1,2,4,8")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--skip", default="", help="cli or ray: leave those runs out")
    ap.add_argument("--work", default="/tmp/ray_vs_cli")
    ap.add_argument("extra", nargs="*", help="generator options for both (after --)")
    a = ap.parse_args()
    if a.make:
        t = time.perf_counter()
        make_folder(a.folder, a.make, Path(a.images))
        print(f"made {a.make} images in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    count = len([p for p in os.listdir(a.folder) if p.endswith(".jpg")])
    common = ["--model", a.model, "--precision", a.precision, *a.extra]
    one_gpu = {}
    for n in (int(v) for v in a.gpus.split(",")):
        for name in ("cli", "ray"):
            if name in a.skip.split(","):
                continue
            shutil.rmtree(a.work, ignore_errors=True)
            os.makedirs(a.work)
            if name == "cli":
                commands = [([a.cli, "everything", "--input", d, "--output", f"{a.work}/out{i}", "--output-mode",
                              "coco_rle", *common], {**os.environ, "CUDA_VISIBLE_DEVICES": str(i)})
                            for i, d in enumerate(shard(a.folder, n, a.work))]
                pattern = CLI_RESULT
            else:
                commands = [([sys.executable, "-m", "samfast.dataset", "everything", "--input", a.folder, "--output",
                              f"{a.work}/ray", "--format", "json", "--gpus", str(n), "--batch-size", str(a.batch_size),
                              *common], dict(os.environ))]
                pattern = RAY_SUMMARY
            rc, start, end, stamps, lines, sampler = run_all(commands, pattern)
            result = {"run": name, "gpus": n, "model": a.model, "precision": a.precision, "images": count, "rc": rc,
                      "wall_s": round(end - start, 2), "end_to_end_img_s": round(count / (end - start), 2)}
            span = None
            if name == "cli" and len(stamps) > 1:
                result["steady_img_s"] = round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 2)
                span = (stamps[0], stamps[-1])
            if name == "ray" and stamps:
                summary = next(ln for ln in lines if re.search(pattern, ln))
                m = re.search(pattern, summary)
                result["steady_img_s"] = float(m.group(1))
                span = (stamps[0] - float(m.group(2)), stamps[0])
                result["summary"] = summary.strip()
            if span:
                result.update(sampler.window(*span, n))
                if n == 1:
                    one_gpu[name] = result["steady_img_s"]
                if name in one_gpu:
                    result["scaling"] = round(result["steady_img_s"] / (n * one_gpu[name]), 3)
            if rc != 0:
                result["tail"] = "".join(lines[-15:])
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
