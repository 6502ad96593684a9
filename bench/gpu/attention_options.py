"""The image encoder's attention as NVIDIA's fused attention could run it: the decomposed relative
position folded into extra head dimensions, q' = [s q, rel_h(q), rel_w(q)] and
k' = [k, one-hot(key row), one-hot(key column)], so that q' . k' = s q . k + rel_h[q, key row] +
rel_w[q, key column] (s = 1/sqrt(head dim)), then PyTorch's scaled_dot_product_attention with scale 1
on the cuDNN backend (and any other backend that takes d_qk != d_v). Timed at batch 8 for vit_b and
vit_h, global (64 x 64 tokens) and windowed (25 windows of 14 x 14 an image), with and without the
cost of building q' and k'; flash attention on the plain shape (no relative position) as the floor.
Compare with samfast's own kernel in `bench/gpu/run.sh trace` of the same call. A small case checks
the fold against the explicit formula first.
Usage: python3 attention_options.py [--runs 20]
"""
import argparse
import json

import torch

from cuda_timing import timed
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def rel_terms(q, rh, rw, side):
    """upstream's add_decomposed_rel_pos terms: rel_h (B, H, N, side) and rel_w, for q (B, H, N, d)
    on a side x side grid; rh, rw (side, side, d) are the tables already gathered per (query, key) offset."""
    B, H, N, d = q.shape
    r = q.reshape(B, H, side, side, d)
    return (torch.einsum("bhyxc,ykc->bhyxk", r, rh).reshape(B, H, N, side),
            torch.einsum("bhyxc,xkc->bhyxk", r, rw).reshape(B, H, N, side))


def folded(q, k, rh, rw, side, pad_to=16):
    """q', k' of the fold, their last dim padded with zeros to a multiple of pad_to."""
    B, H, N, d = q.shape
    h, w = rel_terms(q, rh, rw, side)
    idx = torch.arange(N, device=q.device)
    onehot_h = F.one_hot(idx // side, side).to(q.dtype).expand(B, H, N, side)
    onehot_w = F.one_hot(idx % side, side).to(q.dtype).expand(B, H, N, side)
    qp = torch.cat([q * d ** -0.5, h, w], -1)
    kp = torch.cat([k, onehot_h, onehot_w], -1)
    extra = -qp.shape[-1] % pad_to
    if extra:
        qp, kp = F.pad(qp, (0, extra)), F.pad(kp, (0, extra))
    return qp.contiguous(), kp.contiguous()


def check_fold(dev):
    torch.manual_seed(0)
    B, H, side, d = 2, 3, 8, 16
    q, k, v = (torch.randn(B, H, side * side, d, device=dev) for _ in range(3))
    rh, rw = torch.randn(side, side, d, device=dev), torch.randn(side, side, d, device=dev)
    h, w = rel_terms(q, rh, rw, side)
    bias = (h[..., :, None] + w[..., None, :]).reshape(B, H, side * side, side * side)
    ref = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5 + bias, -1) @ v
    qp, kp = folded(q, k, rh, rw, side)
    out = F.scaled_dot_product_attention(qp, kp, v, scale=1.0)
    return float((out - ref).abs().max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    dev, dt = "cuda", torch.bfloat16
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "cudnn": torch.backends.cudnn.version(), "fold_max_abs_err_fp32": check_fold(dev)}))
    for model, heads, d in (("vit_b", 12, 64), ("vit_h", 16, 80)):
        for kind, batch, side in (("global", 8, 64), ("windowed", 8 * 25, 14)):
            N = side * side
            q, k, v = (torch.randn(batch, heads, N, d, device=dev, dtype=dt) for _ in range(3))
            rh = torch.randn(side, side, d, device=dev, dtype=dt) * 0.1
            rw = torch.randn(side, side, d, device=dev, dtype=dt) * 0.1
            qp, kp = folded(q, k, rh, rw, side)
            flops = 2 * batch * heads * N * N * (d + d)  # the plain attention's QK^T and PV
            row = {"model": model, "attention": kind, "batch": batch, "heads": heads, "tokens": N, "d": d,
                   "d_qk_folded": qp.shape[-1]}
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                row["flash_plain_ms"] = round(timed(lambda: F.scaled_dot_product_attention(q, k, v), args.runs), 4)
            for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
                try:
                    with sdpa_kernel(backend):
                        row[f"{name}_folded_ms"] = round(timed(
                            lambda: F.scaled_dot_product_attention(qp, kp, v, scale=1.0), args.runs), 4)
                        row[f"{name}_folded_with_fold_ms"] = round(timed(
                            lambda: F.scaled_dot_product_attention(*folded(q, k, rh, rw, side), v, scale=1.0),
                            args.runs), 4)
                except RuntimeError as e:
                    row[f"{name}_error"] = str(e).splitlines()[0][:160]
            row["plain_tflops_at_flash"] = round(flops / row["flash_plain_ms"] / 1e9, 1)
            print(json.dumps(row), flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
