"""samfast-server on loopback, measured from client processes: predict clicks per second and p50/p99
latency (end to end, HTTP included) with 1, 8 and 64 concurrent clients on a warm image; images per
second when 16 clients upload distinct images at once against one client uploading in a loop (the
gain of dynamic batching); segment-everything requests per second. Anchors from the same run, in
this process before the server starts: the encoder's img/s at batch 8 (as `samfast bench` reports
it) and one generate() through the module. Prints one JSON line per figure."""
import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np


def distinct_jpegs(path, n, seed0):
    from PIL import Image
    base = np.array(Image.open(path).convert("RGB"))
    out = []
    for k in range(n):
        buf = io.BytesIO()
        Image.fromarray(base ^ np.uint8(seed0 + k + 1)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def blocky_checkpoint(model, path):
    """Synthetic weights whose mask upscaling repeats each of the 64x64 embedding's cells over its
    4x4 low-res pixels (16x16 image pixels at 1024): masks in blocks of 16 pixels, ~10 KB of RLE each
    on an 800x534 image against ~65 KB for the random weights' noise (a real object's mask: a few KB).
    The model's work is unchanged; saved as a .pth (torch)."""
    import torch
    from samfast import _samfast
    state = {k: v.copy() for k, v in _samfast.Model.synthetic(model, 11, device="cpu").state_arrays()}
    for k in ("mask_decoder.output_upscaling.0.weight", "mask_decoder.output_upscaling.3.weight"):
        state[k] = np.repeat(np.repeat(state[k][:, :, :1, :1], 2, 2), 2, 3).copy()
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    return path


def anchors(a):
    import samfast
    from samfast import _samfast
    from PIL import Image
    sam = samfast.load(a.checkpoint, a.device, a.precision) if a.checkpoint else \
        samfast.synthetic(a.model, device=a.device, precision=a.precision)
    native = sam._native_model()
    image = np.array(Image.open(a.image).convert("RGB"))
    prepared = [_samfast.prepare_image(native, image) for _ in range(8)]
    p = _samfast.Predictor(native)
    for _ in range(3):
        p.set_prepared_images(prepared)
    native.synchronize()
    t0, runs = time.perf_counter(), 5
    for _ in range(runs):
        p.set_prepared_images(prepared)
    native.synchronize()
    encoder = 8 * runs / (time.perf_counter() - t0)
    # What answering a click costs on this host (RLE of 3 masks and the JSON body) for the random
    # weights' masks (noise: runs every few pixels) against one smooth disc as large as the image (a
    # real object's outline: a few hundred runs), to tell the server's own time from the masks'.
    p.set_prepared_images(prepared[:1])
    masks = p.predict(np.array([[image.shape[1] / 2, image.shape[0] / 2]], np.float32), np.array([1], np.int32),
                      None, None, True, False, 0)[0]
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    disc = (yy - image.shape[0] / 2) ** 2 + (xx - image.shape[1] / 2) ** 2 < (min(image.shape[:2]) / 3) ** 2
    answer_ms = {}
    for name, ms in (("random_weights", list(masks)), ("disc", [disc] * 3)):
        t0 = time.perf_counter()
        for _ in range(20):
            body = json.dumps({"masks": [{"rle": {"size": list(m.shape), "counts": _samfast.mask_to_coco_rle(
                m.view(np.uint8))}} for m in ms]})
        answer_ms[name] = {"ms": (time.perf_counter() - t0) / 20 * 1e3, "bytes": len(body)}
    generator = samfast.SamAutomaticMaskGenerator(sam, points_per_side=a.points_per_side)
    generator.generate(image)
    t0 = time.perf_counter()
    generator.generate(image)
    generate_ms = (time.perf_counter() - t0) * 1e3
    import importlib.util
    return {"encoder_img_s_batch8": encoder, "generate_ms": generate_ms, "click_answer": answer_ms,
            "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
            "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"}


async def clicks_client(url, image_id, size, stop_at, seed, latencies):
    import httpx
    rng = random.Random(seed)
    w, h = size
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        await c.get("/health")  # (connected before the start)
        await asyncio.sleep(max(0.0, stop_at[0] - time.monotonic()))
        while time.monotonic() < stop_at[1]:
            body = {"points": [[rng.uniform(0, w - 1), rng.uniform(0, h - 1)]], "labels": [1], "format": "rle"}
            t0 = time.perf_counter()
            r = await c.post(f"/v1/images/{image_id}/predict", json=body)
            assert r.status_code == 200, r.text
            latencies.append(time.perf_counter() - t0)


async def uploads_client(url, datas, begin, times):
    import httpx
    async with httpx.AsyncClient(base_url=url, timeout=300) as c:
        await c.get("/health")  # (connected before the start)
        await asyncio.sleep(max(0.0, begin - time.monotonic()))
        for d in datas:
            r = await c.post("/v1/images", files={"file": ("i.jpg", d)})
            assert r.status_code == 200 and not r.json()["cached"], r.text
            times.append(time.monotonic())


def client_process(kind, url, args, n_clients, seed, stop_at, queue):
    """n_clients concurrent loops in this process's event loop; their results to queue."""
    out = []

    async def main():
        if kind == "clicks":
            image_id, size = args
            await asyncio.gather(*(clicks_client(url, image_id, size, stop_at, seed * 1000 + k, out)
                                   for k in range(n_clients)))
        else:
            await asyncio.gather(*(uploads_client(url, datas, stop_at[0], out) for datas in args))
    try:
        asyncio.run(main())
        queue.put(out)
    except BaseException as e:  # (the parent reports it rather than waiting for results)
        queue.put(f"client process failed: {e!r}")
        raise


def in_processes(kind, url, per_process_args, clients_per_process, stop_at=(0.0, 0.0)):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=client_process, args=(kind, url, a, n, i, stop_at, queue))
             for i, (a, n) in enumerate(zip(per_process_args, clients_per_process))]
    for p in procs:
        p.start()
    results = []
    for _ in procs:
        got = queue.get(timeout=900)
        if isinstance(got, str):
            raise RuntimeError(got)
        results += got
    for p in procs:
        p.join(timeout=60)
    return results


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def stage_totals(url):
    """(sum, count) of each predict stage and pass-time series in /metrics: the server's own account of
    where a click's time goes (differences between two readings cover the requests in between)."""
    out = {}
    for line in urllib.request.urlopen(url + "/metrics", timeout=10).read().decode().splitlines():
        for series in ("samfast_predict_stage_seconds", "samfast_predict_respond_seconds",
                       "samfast_upload_stage_seconds", "samfast_pass_seconds", "samfast_request_seconds"):
            for part in ("_sum", "_count"):
                if line.startswith(series + part + "{") or line.startswith(series + part + " "):
                    key = series.replace("samfast_", "") + (line[line.index("{"):line.rindex("}") + 1]
                                                            if "{" in line else "")
                    out.setdefault(key, [0.0, 0.0])[part == "_count"] = float(line.rsplit(" ", 1)[1])
    return out


def stage_means_ms(before, after):
    return {k: round((v[0] - before.get(k, (0, 0))[0]) / (v[1] - before.get(k, (0, 0))[1]) * 1e3, 3)
            for k, v in after.items() if v[1] > before.get(k, (0, 0))[1]}


def memory_readings(url, pid):
    """The model's device memory kinds and cache bytes from /metrics, the GPU's used memory as
    nvidia-smi reports it, and the model process's RSS (MB)."""
    out = {}
    for line in urllib.request.urlopen(url + "/metrics", timeout=10).read().decode().splitlines():
        if line.startswith(("samfast_device_memory_bytes{", "samfast_embedding_cache_bytes{")):
            out[line.split("{")[1].split("}")[0].split('"')[1] + ("" if "device_memory" in line else "_cache")] = \
                round(float(line.rsplit(" ", 1)[1]) / 2**20, 1)
    try:
        used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True).stdout.split()
    except FileNotFoundError:  # (no GPU)
        used = []
    out["gpu_used"] = float(used[0]) if used else None
    with open(f"/proc/{pid}/status") as f:
        out["rss"] = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    return out


def memory_rounds(url, pid, image_path, sizes, rounds):
    """Rounds of the same uploads and clicks on images of `sizes` sizes (200 to 4000 pixels a side):
    the first round encodes them, the later ones find them cached and click again. What the model
    holds should not grow after the first round (buffers per size are bounded)."""
    from PIL import Image
    base = Image.open(image_path).convert("RGB")
    rng = random.Random(1)
    files = []
    for _ in range(sizes):
        w, h = rng.randint(200, 4000), rng.randint(200, 4000)
        buf = io.BytesIO()
        base.resize((w, h)).save(buf, "JPEG", quality=85)
        files.append((w, h, buf.getvalue()))
    readings = [memory_readings(url, pid)]
    for _ in range(rounds):
        for w, h, data in files:
            image_id = upload(url, data)["id"]
            for _ in range(2):
                post_json(url + f"/v1/images/{image_id}/predict",
                          {"points": [[rng.uniform(0, w - 1), rng.uniform(0, h - 1)]], "labels": [1], "format": "rle"})
        readings.append(memory_readings(url, pid))
    return readings


def upload(url, data):
    import httpx
    return httpx.post(url + "/v1/images", files={"file": ("i.jpg", data)}, timeout=300).json()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="vit_h")
    ap.add_argument("--checkpoint", help="a SAM checkpoint (default: synthetic weights of --model: same timings)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--image", required=True)
    ap.add_argument("--seconds", type=float, default=6.0, help="per click measurement")
    ap.add_argument("--points-per-side", type=int, default=32, help="of the segment-everything requests")
    ap.add_argument("--log", default=os.devnull, help="the server's stderr")
    ap.add_argument("--workers", type=int, default=1, help="the server's HTTP processes (samfast-server --workers)")
    ap.add_argument("--blocky-masks", action="store_true",
                    help="synthetic weights with masks in 16-pixel blocks, not noise (see blocky_checkpoint)")
    ap.add_argument("--clicks-only", action="store_true", help="no uploads or segment-everything figures")
    ap.add_argument("--memory-sizes", type=int, default=0,
                    help="then rounds of uploads and clicks on images of this many sizes, with the memory after each")
    a = ap.parse_args()
    mask_kind = "blocky" if a.blocky_masks else ("noise" if not a.checkpoint else "checkpoint")
    emit = lambda **kv: print(json.dumps({"model": a.model, "precision": a.precision, "workers": a.workers,
                                          "mask_kind": mask_kind, **kv}), flush=True)
    if a.blocky_masks:
        import tempfile
        a.checkpoint = blocky_checkpoint(a.model, os.path.join(tempfile.mkdtemp(), f"{a.model}-blocky.pth"))
    anchor = anchors(a)
    emit(figure="anchors", **anchor)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    source = ["--checkpoint", a.checkpoint] if a.checkpoint else ["--model", a.model]
    server = subprocess.Popen([sys.executable, "-m", "samfast.server", *source, "--device", a.device,
                               "--precision", a.precision, "--port", str(port), "--max-pending", "1024",
                               "--cache-mb", "16384", "--max-batch", "8", "--timeout", "600", "--workers", str(a.workers)],
                              stderr=open(a.log, "a"))
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the server did not start"
                time.sleep(0.5)
        from PIL import Image
        w, h = Image.open(a.image).size
        warm = upload(url, open(a.image, "rb").read())["id"]
        # (the warm-up round records the CUDA graphs of each batch size)
        for label, clients, seconds in (("warm-up", 64, 3.0), ("", 1, a.seconds), ("", 8, a.seconds),
                                        ("", 64, a.seconds)):
            processes = min(clients, 8)
            split = [clients // processes + (i < clients % processes) for i in range(processes)]
            begin = time.monotonic() + 8  # (the client processes start within it; CLOCK_MONOTONIC is system-wide)
            stop = begin + seconds
            before = stage_totals(url)
            lat = np.array(in_processes("clicks", url, [(warm, (w, h))] * processes, split, (begin, stop))) * 1e3
            if label != "warm-up":
                emit(figure="predict", clients=clients, clicks_per_s=len(lat) / seconds,
                     p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)), requests=len(lat),
                     server_means_ms=stage_means_ms(before, stage_totals(url)))

        seed0 = 0  # (every image uploaded is new: 32 + 24 + 192 distinct images of 255)
        for label, clients, per_client in (() if a.clicks_only else
                                           (("warm-up", 16, 2), ("one client", 1, 24), ("16 clients", 16, 12))):
            datas = distinct_jpegs(a.image, clients * per_client, seed0=seed0)
            seed0 += len(datas)
            chunks = [datas[i * per_client:(i + 1) * per_client] for i in range(clients)]
            processes = min(clients, 8)
            per_process = [chunks[i::processes] for i in range(processes)]
            before = stage_totals(url)
            t0 = time.monotonic() + 8  # (all start at once, the client processes started and connected)
            times = in_processes("uploads", url, per_process, [len(x) for x in per_process], (t0, t0))
            elapsed = max(times) - t0
            if label != "warm-up":
                rate = len(times) / elapsed
                emit(figure="uploads", clients=clients, images=len(times), img_s=rate,
                     vs_encoder_batch8=rate / anchor["encoder_img_s_batch8"],
                     server_means_ms=stage_means_ms(before, stage_totals(url)))

        if a.memory_sizes:
            emit(figure="memory_mb", sizes=a.memory_sizes,
                 after_each_round=memory_rounds(url, server.pid, a.image, a.memory_sizes, 4))
        if a.clicks_only:
            return
        options = {"points_per_side": a.points_per_side}
        post_json(url + f"/v1/images/{warm}/everything", options)
        t0, n = time.perf_counter(), 3
        for _ in range(n):
            records = post_json(url + f"/v1/images/{warm}/everything", options)["records"]
        per = (time.perf_counter() - t0) / n
        emit(figure="everything", req_s=1 / per, ms=per * 1e3, masks=len(records),
             vs_generate=anchor["generate_ms"] / (per * 1e3))
        metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        emit(figure="batch_sizes", lines=[l for l in metrics.splitlines()
                                          if l.startswith("samfast_batch_size_") and ("_sum" in l or "_count" in l)])
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
