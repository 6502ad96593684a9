"""Parity of the automatic mask generator's geometry helpers (src/pipeline/amg_utils.h, and
src/masks/stability.h) with
upstream segment_anything/utils/amg.py and torchvision.ops.batched_nms, on random inputs with fixed
seeds: point grids, crop boxes, uncropping and near-edge flags exactly, stability scores within 1e-6,
NMS kept indices exactly.

Needs the built helper: SAMFAST_BIN is the build directory, the helper is $SAMFAST_BIN/tests/amg_tool.
"""
import json
import subprocess

import numpy as np
import pytest

from conftest import require_upstream, built_tool  # noqa: E402


@pytest.fixture(scope="module")
def tool():
    path = built_tool("amg_tool")

    def call(fn, **args):
        p = subprocess.run([str(path)], input=json.dumps({"fn": fn, **args}), capture_output=True, text=True)
        assert p.returncode == 0, f"amg_tool {fn} failed ({p.returncode}): {p.stderr}"
        return json.loads(p.stdout)["result"]
    return call


@pytest.fixture(scope="module")
def amg():
    require_upstream()
    from segment_anything.utils import amg as upstream_amg
    return upstream_amg


@pytest.mark.parametrize("n_per_side,n_layers,scale", [(32, 0, 1), (32, 2, 2), (5, 2, 2), (17, 2, 3), (1, 0, 2), (64, 1, 2)])
def test_point_grids(tool, amg, n_per_side, n_layers, scale):
    ours = tool("point_grids", n_per_side=n_per_side, n_layers=n_layers, scale_per_layer=scale)
    theirs = amg.build_all_layer_point_grids(n_per_side, n_layers, scale)
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs):
        # Our float64 points (printed to round-trip) against numpy's, bit for bit.
        np.testing.assert_array_equal(np.asarray(o, np.float64).reshape(-1, 2), t)


def test_crop_boxes(tool, amg):
    rng = np.random.default_rng(0)
    cases = [(1500, 2250, 1, 512 / 1500), (1024, 1024, 3, 0.34), (7, 3, 2, 0.5), (480, 640, 0, 0.3)]
    cases += [(int(rng.integers(1, 4000)), int(rng.integers(1, 4000)), int(rng.integers(0, 4)),
               float(rng.uniform(0, 1))) for _ in range(50)]
    for h, w, n_layers, ratio in cases:
        ours = tool("crop_boxes", im_h=h, im_w=w, n_layers=n_layers, overlap_ratio=ratio)
        boxes, layers = amg.generate_crop_boxes((h, w), n_layers, ratio)
        assert ours["boxes"] == boxes, (h, w, n_layers, ratio)
        assert ours["layer_idxs"] == layers, (h, w, n_layers, ratio)


def _random_boxes(rng, n, extent):
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(0, extent / 3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def test_uncrop(tool, amg):
    import torch
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, 40, 500)
    points = rng.uniform(0, 500, size=(40, 2)).astype(np.float32)
    crop = [123, 45, 700, 600]
    ours = tool("uncrop_boxes", boxes=boxes.tolist(), crop_box=crop)
    np.testing.assert_array_equal(np.asarray(ours, np.float32), amg.uncrop_boxes_xyxy(torch.from_numpy(boxes), crop).numpy())
    ours = tool("uncrop_points", points=points.tolist(), crop_box=crop)
    np.testing.assert_array_equal(np.asarray(ours, np.float32), amg.uncrop_points(torch.from_numpy(points), crop).numpy())


def test_near_crop_edge(tool, amg):
    import torch
    rng = np.random.default_rng(2)
    orig = [0, 0, 1000, 800]
    for crop in ([0, 0, 1000, 800], [0, 0, 520, 420], [480, 380, 1000, 800], [250, 0, 760, 420]):
        cw, ch = crop[2] - crop[0], crop[3] - crop[1]
        # Integer boxes as the generator has them (batched_mask_to_box), plus fractional ones, many
        # of them within a few pixels of the 20-pixel tolerance.
        x0 = rng.integers(0, cw, 200)
        y0 = rng.integers(0, ch, 200)
        ints = np.stack([x0, y0, np.minimum(x0 + rng.integers(0, cw, 200), cw),
                         np.minimum(y0 + rng.integers(0, ch, 200), ch)], 1).astype(np.float32)
        fracs = ints + rng.uniform(-0.5, 0.5, ints.shape).astype(np.float32)
        for boxes in (ints, fracs):
            for atol in (20.0, 7.5):
                ours = tool("near_crop_edge", boxes=boxes.tolist(), crop_box=crop, orig_box=orig, atol=atol)
                theirs = amg.is_box_near_crop_edge(torch.from_numpy(boxes), crop, orig, atol=atol)
                assert ours == theirs.to(torch.uint8).tolist(), (crop, atol)


def test_stability_score(tool, amg):
    import torch
    rng = np.random.default_rng(3)
    for n, h, w, thr, off in [(6, 64, 48, 0.0, 1.0), (3, 256, 256, 0.0, 1.0), (4, 17, 33, 0.3, 0.25)]:
        masks = rng.normal(0, 2, size=(n, h, w)).astype(np.float32)
        # Values exactly at and next to the thresholds, where float32 rounding of thr +- off matters.
        for t in (thr + off, thr - off):
            t32 = np.float32(t)
            masks.reshape(-1)[rng.integers(0, masks.size, 50)] = t32
            masks.reshape(-1)[rng.integers(0, masks.size, 50)] = np.nextafter(t32, np.float32(np.inf))
        masks[-1] = -100.0  # empty union: 0 / 0
        ours = tool("stability_score", masks=masks.reshape(-1).tolist(), n=n, h=h, w=w,
                    mask_threshold=thr, threshold_offset=off)
        theirs = amg.calculate_stability_score(torch.from_numpy(masks), thr, off).numpy()
        ours = np.array([np.nan if v is None else v for v in ours], np.float32)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6, equal_nan=True)


def _nms_case(rng, n, n_cats, tie_scores, zero_area):
    boxes = _random_boxes(rng, n, 200)
    if zero_area:
        z = rng.integers(0, n, n // 5)
        boxes[z, 2] = boxes[z, 0]
        boxes[z[: len(z) // 2], 3] = boxes[z[: len(z) // 2], 1]
        boxes[z[len(z) // 2 :], 2:] = boxes[z[len(z) // 2 :], :2]
        dup = rng.integers(0, n, n // 10)  # exact duplicates, including of empty boxes
        boxes[dup] = boxes[rng.integers(0, n, len(dup))]
    scores = (rng.integers(0, 5, n) / 4 if tie_scores else rng.uniform(0, 1, n)).astype(np.float32)
    cats = rng.integers(0, n_cats, n)
    return boxes, scores, cats


@pytest.mark.parametrize("n,n_cats,ties,zero", [(1, 1, False, False), (50, 1, False, False), (300, 4, False, False),
                                                (300, 1, True, False), (500, 5, True, True), (1000, 3, True, True),
                                                (1001, 3, False, True), (3072, 1, False, False), (2500, 6, False, True)])
def test_batched_nms(tool, amg, n, n_cats, ties, zero):
    require_upstream()
    import torch
    from torchvision.ops import batched_nms
    rng = np.random.default_rng(100 + n + n_cats)
    boxes, scores, cats = _nms_case(rng, n, n_cats, ties, zero)
    for thr in (0.7, 0.3, 0.0):
        ours = tool("batched_nms", boxes=boxes.tolist(), scores=scores.tolist(), idxs=cats.tolist(), iou_threshold=thr)
        theirs = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(cats), thr).tolist()
        assert ours == theirs, (n, n_cats, thr)


def test_batched_nms_ties_above_1000_boxes(tool, amg):
    """Above 1000 boxes torchvision's final sort by score is not stable, so among equal scores its
    order is torch's sort's; ours is index order. The kept set and the score order are the same."""
    require_upstream()
    import torch
    from torchvision.ops import batched_nms
    rng = np.random.default_rng(7)
    boxes, scores, cats = _nms_case(rng, 1500, 4, True, True)
    ours = tool("batched_nms", boxes=boxes.tolist(), scores=scores.tolist(), idxs=cats.tolist(), iou_threshold=0.5)
    theirs = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(cats), 0.5).tolist()
    assert sorted(ours) == sorted(theirs)
    assert scores[ours].tolist() == scores[theirs].tolist()
    assert ours == sorted(ours, key=lambda i: (-scores[i], i))


def blob_mask(rng, h, w):
    """Random blobs and specks with holes: many components of many sizes, 8-connected at corners."""
    m = np.zeros((h, w), bool)
    for _ in range(rng.integers(3, 12)):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 12)
        yy, xx = np.ogrid[:h, :w]
        m ^= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    m |= rng.random((h, w)) < 0.03  # specks: one-pixel islands, diagonal contacts
    return m


@pytest.mark.parametrize("seed", range(12))
def test_remove_small_regions(tool, amg, seed):
    try:
        import cv2  # noqa: F401  (upstream's remove_small_regions uses it)
    except ImportError:
        import os
        if os.environ.get("SAMFAST_REQUIRE_ORACLE") == "1":
            raise
        pytest.skip("upstream's remove_small_regions needs OpenCV; scripts/setup.sh installs it")
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
    mask = blob_mask(rng, h, w)
    for mode in ("holes", "islands"):
        for area in (1, 3, 20, 150, 10_000):
            theirs, changed = amg.remove_small_regions(mask, area, mode)
            ours = tool("small_regions", mask=mask.astype(int).ravel().tolist(), h=h, w=w, area_thresh=area, mode=mode)
            assert ours["changed"] == changed, (mode, area)
            np.testing.assert_array_equal(np.array(ours["mask"], bool).reshape(h, w), theirs, err_msg=f"{mode} {area}")
