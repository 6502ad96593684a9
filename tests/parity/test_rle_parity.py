"""Parity of the RLE utilities (include/samfast/rle.h, src/masks/rle.cpp) with what upstream's
automatic mask generator runs: amg.mask_to_rle_pytorch (uncompressed counts), amg.area_from_rle,
amg.batched_mask_to_box through amg.box_xyxy_to_xywh (the record's bbox), and
pycocotools.mask.encode for the compressed counts string, which must match byte for byte.

Needs the built helper: SAMFAST_BIN is the build directory, the helper is $SAMFAST_BIN/tests/rle_tool.
"""
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import require_upstream, built_tool  # noqa: E402


@pytest.fixture(scope="module")
def tool():
    return built_tool("rle_tool")


@pytest.fixture(scope="module")
def coco():
    """pycocotools.mask; missing it is a failure when SAMFAST_REQUIRE_ORACLE=1 (CI)."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:
        if os.environ.get("SAMFAST_REQUIRE_ORACLE") == "1":
            raise
        pytest.skip(f"pycocotools not installed ({e}); scripts/setup.sh installs it")
    return mask_utils


@pytest.fixture(scope="module")
def amg():
    require_upstream()
    from segment_anything.utils import amg as upstream_amg
    return upstream_amg


def blobs(rng, h, w, n):
    """Union of n random filled ellipses and rectangles: masks shaped like SAM's."""
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w), bool)
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(1, h / 2), rng.uniform(1, w / 2)
        if rng.random() < 0.5:
            m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            m |= (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
    return m


def cases():
    rng = np.random.default_rng(20240611)
    out = []
    for h, w in [(1, 1), (7, 5), (600, 800)]:
        out.append((f"empty_{h}x{w}", np.zeros((h, w), np.uint8)))
        out.append((f"full_{h}x{w}", np.ones((h, w), np.uint8)))
    for h, w in [(2, 2), (6, 9), (600, 800)]:
        for y, x in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]:
            m = np.zeros((h, w), np.uint8)
            m[y, x] = 1
            out.append((f"corner_{h}x{w}_{y}_{x}", m))
    m = np.zeros((600, 800), np.uint8)
    m[300, 400] = 1  # long runs on both sides: counts of several 5-bit groups
    out.append(("center_pixel_600x800", m))
    for n in [1, 2, 3, 8, 9, 17, 800]:
        out.append((f"row_1x{n}", (rng.random((1, n)) < 0.5).astype(np.uint8)))
        out.append((f"col_{n}x1", (rng.random((n, 1)) < 0.5).astype(np.uint8)))
    out.append(("checker_37x41", (np.indices((37, 41)).sum(0) % 2).astype(np.uint8)))
    out.append(("row_stripes_20x30", (np.arange(20)[:, None] % 2 * np.ones((1, 30))).astype(np.uint8)))
    out.append(("col_stripes_20x30", (np.arange(30)[None, :] % 3 == 0).repeat(20, 0).astype(np.uint8)))
    for i, p in enumerate([0.001, 0.05, 0.5, 0.95, 0.999]):
        h, w = int(rng.integers(1, 120)), int(rng.integers(1, 120))
        out.append((f"random_p{p}_{h}x{w}", (rng.random((h, w)) < p).astype(np.uint8)))
    for i in range(12):
        h, w = int(rng.integers(16, 601)), int(rng.integers(16, 801))
        out.append((f"blobs{i}_{h}x{w}", blobs(rng, h, w, int(rng.integers(1, 6))).astype(np.uint8)))
    out.append(("blobs_600x800", blobs(rng, 600, 800, 4).astype(np.uint8)))
    # Inside is any non-zero byte, as for a thresholded mask stored as 0/255.
    out.append(("blobs_255_300x200", blobs(rng, 300, 200, 3).astype(np.uint8) * 255))
    return out


CASES = cases()


def ours(tool, tmp_path, mask):
    h, w = mask.shape
    path = tmp_path / "mask.u8"
    np.ascontiguousarray(mask, np.uint8).tofile(path)
    p = subprocess.run([tool, path, str(h), str(w)], capture_output=True, text=True)
    assert p.returncode == 0, f"rle_tool failed ({p.returncode}): {p.stderr}"
    return json.loads(p.stdout)


@pytest.mark.parametrize("name,mask", CASES, ids=[c[0] for c in CASES])
def test_coco_string_matches_pycocotools(tool, coco, tmp_path, name, mask):
    got = ours(tool, tmp_path, mask)
    ref = coco.encode(np.asfortranarray((mask != 0).astype(np.uint8)))
    assert got["coco"]["size"] == list(ref["size"])
    assert got["coco"]["counts"] == ref["counts"].decode("ascii")
    assert got["area"] == int(coco.area(ref))
    # And the decoder side: pycocotools reads our string back to the mask.
    dec = coco.decode({"size": got["coco"]["size"], "counts": got["coco"]["counts"].encode("ascii")})
    np.testing.assert_array_equal(dec, mask != 0)


@pytest.mark.parametrize("name,mask", CASES, ids=[c[0] for c in CASES])
def test_matches_upstream_amg(tool, amg, tmp_path, name, mask):
    import torch
    got = ours(tool, tmp_path, mask)
    t = torch.from_numpy(mask != 0)
    ref_rle = amg.mask_to_rle_pytorch(t[None])[0]
    assert got["uncompressed"] == ref_rle
    assert got["area"] == amg.area_from_rle(ref_rle)
    np.testing.assert_array_equal(amg.rle_to_mask(got["uncompressed"]), mask != 0)
    box = amg.box_xyxy_to_xywh(amg.batched_mask_to_box(t[None])[0])
    assert got["bbox"] == [int(v) for v in box.tolist()]


@pytest.mark.parametrize("name,mask", CASES[::4], ids=[c[0] for c in CASES[::4]])
def test_coco_string_matches_upstream_coco_encode(tool, amg, coco, tmp_path, name, mask):
    """The string upstream's generator writes for output_mode="coco_rle": coco_encode_rle(uncompressed)."""
    import torch
    got = ours(tool, tmp_path, mask)
    ref = amg.coco_encode_rle(amg.mask_to_rle_pytorch(torch.from_numpy(mask != 0)[None])[0])
    assert got["coco"] == {"size": list(ref["size"]), "counts": ref["counts"]}
