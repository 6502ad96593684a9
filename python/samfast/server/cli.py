"""samfast-server: serve a checkpoint over HTTP (loopback unless told otherwise)."""
import argparse
import os
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(prog="samfast-server", description=__doc__)
    ap.add_argument("--checkpoint", help=".pth or .safetensors SAM checkpoint (any type)")
    ap.add_argument("--model", default=None, choices=["vit_b", "vit_l", "vit_h", "tiny"],
                    help="without --checkpoint: a synthetic model of this type (random weights: meaningless masks)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16, fp8 (GPU) or int8 (CPU)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=1,
                    help="HTTP processes; with more than one, they hand the model's work to one model process "
                         "(for many concurrent clients: each click's HTTP work then runs beside the others')")
    ap.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on /v1 requests, and each annotation "
                                    "tool's form of it on its routes (README); /health and /metrics stay open")
    ap.add_argument("--cors-origin", action="append", default=[], help="allow this browser origin (repeatable)")
    ap.add_argument("--max-upload-mb", type=float, default=50.0)
    ap.add_argument("--max-pixels", type=int, default=100_000_000)
    ap.add_argument("--max-prompts", type=int, default=64, help="prompts per predict request")
    ap.add_argument("--max-everything-points", type=int, default=65536,
                    help="grid points over every crop of one segment-everything request")
    ap.add_argument("--max-pending", type=int, default=64, help="requests computing or waiting; more get 503")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait and compute; then 504")
    ap.add_argument("--cache-mb", type=float, default=2048.0, help="image embeddings kept in device memory")
    ap.add_argument("--host-cache-mb", type=float, default=4096.0,
                    help="images, and embeddings moved off the device, kept in host memory")
    ap.add_argument("--max-batch", type=int, default=8, help="images in one encoder pass (dynamic batching)")
    ap.add_argument("--batch-wait-ms", type=float, default=5.0,
                    help="how long an upload waits for others to join its encoder batch")
    ap.add_argument("--label-studio-url", default=os.environ.get("LABEL_STUDIO_URL"),
                    help="Label Studio's address, for its task images when it has not said it (its ML backend "
                         "setup does); default $LABEL_STUDIO_URL")
    ap.add_argument("--label-studio-api-key", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                    help="a Label Studio personal access token (or legacy token) for those images, used before "
                         "the one its setup gives (legacy, refused by Label Studio 1.20+ by default); default "
                         "$LABEL_STUDIO_API_KEY")
    a = ap.parse_args(argv)
    if not a.checkpoint and not a.model:
        ap.error("give --checkpoint (or --model for a synthetic model)")
    for flag, value, least in (("--workers", a.workers, 1), ("--max-pixels", a.max_pixels, 1),
                               ("--max-prompts", a.max_prompts, 1), ("--max-everything-points", a.max_everything_points, 1),
                               ("--max-pending", a.max_pending, 1), ("--max-batch", a.max_batch, 1),
                               ("--cache-mb", a.cache_mb, 0), ("--host-cache-mb", a.host_cache_mb, 0),
                               ("--batch-wait-ms", a.batch_wait_ms, 0), ("--port", a.port, 0)):
        if not value >= least:  # (NaN too)
            ap.error(f"{flag} is {least} or more, got {value}")
    for flag, value in (("--max-upload-mb", a.max_upload_mb), ("--timeout", a.timeout)):
        if not 0 < value < float("inf"):
            ap.error(f"{flag} is a number above 0, got {value}")
    if a.port > 65535:
        ap.error(f"--port is at most 65535, got {a.port}")

    import uvicorn

    import samfast
    from .app import ServerConfig, create_app

    sam = (samfast.load(a.checkpoint, a.device, a.precision) if a.checkpoint else
           samfast.synthetic(a.model, device=a.device, precision=a.precision))
    sam._native_model()  # (loaded before the first request)
    config = ServerConfig(token=a.token, cors_origins=a.cors_origin, max_upload_bytes=int(a.max_upload_mb * 2**20),
                          max_pixels=a.max_pixels, max_prompts=a.max_prompts, max_pending=a.max_pending,
                          max_everything_points=a.max_everything_points,
                          request_timeout_s=a.timeout, device_cache_bytes=int(a.cache_mb * 2**20),
                          host_cache_bytes=int(a.host_cache_mb * 2**20), max_encode_batch=a.max_batch,
                          max_batch_wait_ms=a.batch_wait_ms, label_studio_url=a.label_studio_url,
                          label_studio_api_key=a.label_studio_api_key)
    front_ends = f", {a.workers} HTTP processes" if a.workers > 1 else ""
    print(f"samfast-server: {sam} on http://{a.host}:{a.port} (docs at /docs{front_ends})", file=sys.stderr, flush=True)
    if a.workers > 1:
        from .remote import serve
        return serve(sam, config, a.host, a.port, a.workers)
    app = create_app(sam, config)
    # (keep-alive longer than clients' pools keep idle connections, so that a pooled connection is not
    # closed by the server just as a client sends on it: uvicorn's 5 s default races with that)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", timeout_keep_alive=75)


if __name__ == "__main__":
    main()
