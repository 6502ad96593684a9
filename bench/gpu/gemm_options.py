"""What each GEMM option of the image encoder's Linear layers costs on this GPU, measured with
PyTorch's bindings of the same NVIDIA libraries samfast would call (cuBLASLt, cuSPARSELt): dense bf16,
fp8 with row/column scales, int8 (int32 out), and 2:4 sparse bf16 / int8 / fp8. The shapes are
vit_b's and vit_h's at batch 8: the MLP on the 4096 tokens an image; qkv and proj of the windowed
blocks as upstream runs them, on 25 padded windows of 196 tokens an image (samfast's qkv runs on the
4096 unpadded tokens; the ratios between options are what this script is for). Prints one JSON line per shape and option: median ms
and TFLOP/s (dense-equivalent).
Usage: python3 gemm_options.py [--runs 30]
"""
import argparse
import json

import torch

from cuda_timing import timed


def prune_2_4(w):
    """Keeps the 2 largest of every 4 weights along the input dimension."""
    g = w.reshape(w.shape[0], -1, 4)
    keep = g.abs().argsort(dim=-1)[..., 2:]
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, keep, True)
    return (g * mask).reshape(w.shape)


def options(M, N, K):
    dev = "cuda"
    x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) / K**0.5
    out = {}
    out["bf16"] = lambda: torch.mm(x, w.t())
    xs = torch.rand(M, 1, device=dev) + 0.5
    ws = torch.rand(1, N, device=dev) + 0.5
    x8 = x.to(torch.float8_e4m3fn)
    w8 = w.to(torch.float8_e4m3fn)
    out["fp8 rowwise"] = lambda: torch._scaled_mm(x8, w8.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16)
    xi = torch.randint(-127, 127, (M, K), device=dev, dtype=torch.int8)
    wi = torch.randint(-127, 127, (N, K), device=dev, dtype=torch.int8)
    out["int8 (int32 out)"] = lambda: torch._int_mm(xi, wi.t())
    # 2:4: the weight is the sparse operand (cuSPARSELt's first), so y^T = W_sparse x^T
    ws24 = prune_2_4(w)
    for name, sparse, dense, dtype in (("2:4 bf16", lambda: ws24, x, None),
                                       ("2:4 int8 (bf16 out)", lambda: prune_2_4(wi.float()).to(torch.int8), xi,
                                        torch.bfloat16),
                                       ("2:4 fp8 (bf16 out)", lambda: prune_2_4(w).to(torch.float8_e4m3fn), x8,
                                        torch.bfloat16)):
        try:
            wc = torch._cslt_compress(sparse())
            kw = {} if dtype is None else {"out_dtype": dtype}
            # cuSPARSELt's own search over its algorithms for this shape, as a tuned deployment would use
            alg = torch._cslt_sparse_mm_search(wc, dense.t(), **kw)
            out[name] = (lambda wc=wc, dense=dense, kw=kw, alg=alg:
                         torch._cslt_sparse_mm(wc, dense.t(), alg_id=alg, **kw))
        except Exception as e:  # noqa: BLE001 (report what this build lacks)
            out[name] = e
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    shapes = []
    for model, dim in (("vit_b", 768), ("vit_h", 1280)):
        win, glob = 8 * 25 * 196, 8 * 4096
        shapes += [(model, "qkv windowed", win, 3 * dim, dim), (model, "proj windowed", win, dim, dim),
                   (model, "mlp fc1", glob, 4 * dim, dim), (model, "mlp fc2", glob, dim, 4 * dim)]
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__}))
    for model, name, M, N, K in shapes:
        for opt, fn in options(M, N, K).items():
            row = {"model": model, "gemm": name, "M": M, "N": N, "K": K, "option": opt}
            if isinstance(fn, Exception):
                row["error"] = str(fn).splitlines()[0][:160]
            else:
                try:
                    ms = timed(fn, args.runs)
                    row.update(ms=round(ms, 4), tflops=round(2 * M * N * K / ms / 1e9, 1))
                except Exception as e:  # noqa: BLE001
                    row["error"] = str(e).splitlines()[0][:160]
            print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
