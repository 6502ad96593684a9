#!/usr/bin/env python3
"""Writes a few small, valid inputs into the folder given as argv[1], one corpus per fuzz target:
checkpoint/ (whole .pth and .safetensors files, and bare data.pkl pickles), npy/ (.npy files),
safetensors/ (a safetensors header, a NUL byte, then the data, as fuzz_safetensors.cpp reads it),
image/ (small JPEG, PNG, BMP, GIF, PNM, WebP and TIFF files, JPEGs with EXIF orientations, made with
PIL when it is importable) and rle/ (a height byte, a width byte, then a COCO counts string).

safetensors and .npy seeds are built by hand, so they need nothing but Python; .pth seeds come
from torch.save when torch is importable (views, f16, bf16, a Parameter), since that is the format
the loader must accept.
"""
import json
import os
import struct
import sys
import zipfile


def safetensors(tensors):
    """The header text (padded to 8 bytes, as the format asks) and the data."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    return text + b" " * (-len(text) % 8), data


def npy(shape, descr, raw, version=1):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, repr(tuple(shape)))
    prefix = 10 if version == 1 else 12
    header += " " * (-(prefix + len(header) + 1) % 64) + "\n"
    length = struct.pack("<H" if version == 1 else "<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header.encode() + raw


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def write_image_seeds(folder):
    try:
        from PIL import Image
    except ImportError:
        print("make_seeds.py: no PIL; writing no image seeds", file=sys.stderr)
        return
    os.makedirs(folder, exist_ok=True)
    im = Image.new("RGB", (7, 5))
    im.putdata([(x * 30, y * 50, (x + y) * 20) for y in range(5) for x in range(7)])
    im.save(os.path.join(folder, "rgb.png"))
    im.convert("L").save(os.path.join(folder, "gray.png"))
    im.convert("RGBA").save(os.path.join(folder, "rgba.png"))
    im.save(os.path.join(folder, "rgb.bmp"))
    im.convert("P").save(os.path.join(folder, "palette.gif"))
    im.save(os.path.join(folder, "rgb.ppm"))
    im.convert("L").save(os.path.join(folder, "gray.pgm"))
    write(os.path.join(folder, "pnm_overflow.pgm"), b"P55551555515" + b"\xff" * 40)  # (a header stb overflowed on)
    # 16-bit samples: stb wrote past its buffer converting a 16-bit P5 to RGB
    write(os.path.join(folder, "pnm_16bit.pgm"), b"P5\n7555\n2 \n7555\n2 \n\xff\xff\x00\x1f\"\xc2")
    write(os.path.join(folder, "pnm_16bit.ppm"), b"P6\n2 1\n65535\n" + bytes(range(12)))
    im.save(os.path.join(folder, "lossless.webp"), lossless=True)  # (libwebp)
    im.save(os.path.join(folder, "lossy.webp"), quality=80)
    im.save(os.path.join(folder, "rgb.tif"))  # (libtiff)
    im.convert("L").save(os.path.join(folder, "lzw.tif"), compression="tiff_lzw")
    im.save(os.path.join(folder, "plain.jpg"), quality=80)
    im.convert("CMYK").save(os.path.join(folder, "cmyk.jpg"))
    im.save(os.path.join(folder, "progressive.jpg"), progressive=True)
    for o in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = o
        im.save(os.path.join(folder, f"exif{o}.jpg"), exif=exif.tobytes())


def main():
    out = sys.argv[1]
    checkpoints, arrays, headers = (os.path.join(out, d) for d in ("checkpoint", "npy", "safetensors"))
    for d in (checkpoints, arrays, headers):
        os.makedirs(d, exist_ok=True)
    seeds = {
        "f32": {"w": ("F32", [2, 3], struct.pack("<6f", *range(6))), "b": ("F32", [], struct.pack("<f", 1.5))},
        "half": {"h": ("F16", [3], struct.pack("<3H", 0x3C00, 0x0001, 0x7BFF)),
                 "bf": ("BF16", [1, 2], struct.pack("<2H", 0x3F80, 0xC0A0)),
                 "e": ("F32", [0, 4], b"")},
    }
    for name, tensors in seeds.items():
        text, data = safetensors(tensors)
        write(os.path.join(checkpoints, name + ".safetensors"), struct.pack("<Q", len(text)) + text + data)
        write(os.path.join(headers, name), text + b"\0" + data)
    write(os.path.join(arrays, "mask.npy"), npy([1, 4, 4], "<f4", struct.pack("<16f", *range(16))))
    write(os.path.join(arrays, "vector.npy"), npy([3], "<f8", struct.pack("<3d", 0.5, -1, 2)))
    write(os.path.join(arrays, "scalar_v2.npy"), npy([], "<f4", struct.pack("<f", 7), version=2))
    write(os.path.join(arrays, "empty.npy"), npy([0, 5], "<f4", b""))
    write_image_seeds(os.path.join(out, "image"))
    rles = os.path.join(out, "rle")
    os.makedirs(rles, exist_ok=True)
    # (strings from tests/unit/test_rle.cpp's pycocotools cases, sizes taken modulo 64 by the target)
    for name, (h, w, s) in {"4x4": (4, 4, "31141O"), "whole": (8, 8, "0P2"), "empty": (0, 5, "00")}.items():
        write(os.path.join(rles, name), bytes([h, w]) + s.encode())
    try:
        import torch
    except ImportError:
        print("make_seeds.py: no torch; writing no .pth seeds", file=sys.stderr)
        return
    base = torch.arange(12, dtype=torch.float32)
    torch.save({"w": base.reshape(3, 4), "b": torch.ones(2)}, os.path.join(checkpoints, "plain.pth"))
    torch.save({"t": base.reshape(3, 4).t(), "s": base[5:9], "h": base[:3].half(), "bf": base[:2].bfloat16(),
                "p": torch.nn.Parameter(torch.zeros(1)), "scalar": torch.tensor(3.0)},
               os.path.join(checkpoints, "views.pth"))
    torch.save(torch.nn.Linear(2, 1).state_dict(), os.path.join(checkpoints, "module.pth"))
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, os.path.join(checkpoints, "wrapped.pth"))
    # The fuzz target also feeds inputs to the unpickler directly, over storages data/0..2.
    torch.save({"w": torch.ones(2, 2).t(), "h": torch.ones(3).half(), "s": torch.ones(12)[3:]},
               os.path.join(checkpoints, "small.pth"))
    for name in ("plain.pth", "module.pth", "wrapped.pth", "small.pth"):
        with zipfile.ZipFile(os.path.join(checkpoints, name)) as z:
            pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            with open(os.path.join(checkpoints, name[:-4] + ".pkl"), "wb") as f:
                f.write(z.read(pkl))


if __name__ == "__main__":
    main()
