#!/usr/bin/env python3
"""Writes a few small, valid checkpoints into the folder given as argv[1] as a fuzz corpus.

safetensors seeds are built by hand, so they need nothing but Python; .pth seeds come from
torch.save when torch is importable (views, f16, bf16, a Parameter), since that is the format the
loader must accept.
"""
import json
import os
import struct
import sys
import zipfile


def safetensors(path, tensors):
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    safetensors(os.path.join(out, "f32.safetensors"),
                {"w": ("F32", [2, 3], struct.pack("<6f", *range(6))), "b": ("F32", [], struct.pack("<f", 1.5))})
    safetensors(os.path.join(out, "half.safetensors"),
                {"h": ("F16", [3], struct.pack("<3H", 0x3C00, 0x0001, 0x7C00)),
                 "bf": ("BF16", [1, 2], struct.pack("<2H", 0x3F80, 0xC0A0))})
    try:
        import torch
    except ImportError:
        print("make_seeds.py: no torch; writing safetensors seeds only", file=sys.stderr)
        return
    base = torch.arange(12, dtype=torch.float32)
    torch.save({"w": base.reshape(3, 4), "b": torch.ones(2)}, os.path.join(out, "plain.pth"))
    torch.save({"t": base.reshape(3, 4).t(), "s": base[5:9], "h": base[:3].half(), "bf": base[:2].bfloat16(),
                "p": torch.nn.Parameter(torch.zeros(1)), "scalar": torch.tensor(3.0)},
               os.path.join(out, "views.pth"))
    torch.save(torch.nn.Linear(2, 1).state_dict(), os.path.join(out, "module.pth"))
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, os.path.join(out, "wrapped.pth"))
    # The fuzz target also feeds inputs to the unpickler directly, over storages data/0..2.
    torch.save({"w": torch.ones(2, 2).t(), "h": torch.ones(3).half(), "s": torch.ones(12)[3:]},
               os.path.join(out, "small.pth"))
    for name in ("plain.pth", "module.pth", "wrapped.pth", "small.pth"):
        with zipfile.ZipFile(os.path.join(out, name)) as z:
            pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            with open(os.path.join(out, name[:-4] + ".pkl"), "wb") as f:
                f.write(z.read(pkl))


if __name__ == "__main__":
    main()
