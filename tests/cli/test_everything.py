"""`samfast everything` over a folder as a user runs it: amg.py's output layout, atomic outputs,
resuming, a corrupt image reported and skipped, exit codes, and agreement between output modes."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1.0"]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.open(IMAGES / "dog.jpg").resize((200, 134)).save(d / "a_dog.png")
    (d / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    Image.open(IMAGES / "truck.jpg").resize((180, 120)).save(d / "c_truck.jpg")
    (d / "notes.txt").write_text("not an image: ignored")
    return d


def run(samfast, tiny, inp, out, *extra):
    return samfast("everything", "--checkpoint", tiny, "--device", "cpu", "--input", inp, "--output", out, *FAST, *extra)


def test_folder_run_layout_failure_and_resume(samfast, tiny, folder, tmp_path):
    out = tmp_path / "out"
    p = run(samfast, tiny, folder, out)
    assert p.returncode == 1, p.stderr  # one image failed
    assert "b_broken.jpg: FAILED" in p.stderr
    assert "2 done, 0 skipped (already done), 1 failed" in p.stdout
    assert sorted(os.listdir(out)) == ["a_dog", "c_truck"]  # no temporary leftovers, nothing for the broken one
    for name, (w, h) in (("a_dog", (200, 134)), ("c_truck", (180, 120))):
        rows = (out / name / "metadata.csv").read_text().split("\n")
        assert rows[0].startswith("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou")
        assert len(rows) - 1 == 12  # 4 points x 3 masks, nothing filtered
        for row in rows[1:]:
            f = row.split(",")
            m = np.array(Image.open(out / name / f"{f[0]}.png"))
            assert m.shape == (h, w) and set(np.unique(m)) <= {0, 255}
            assert int(f[1]) == (m > 0).sum()  # area
            assert [int(v) for v in f[10:14]] == [0, 0, w, h]  # crop box: the whole image
    stamp = (out / "a_dog" / "metadata.csv").stat().st_mtime_ns

    p = run(samfast, tiny, folder, out)  # re-run: finished images are skipped, the broken one fails again
    assert p.returncode == 1 and "0 done, 2 skipped (already done), 1 failed" in p.stdout
    assert (out / "a_dog" / "metadata.csv").stat().st_mtime_ns == stamp

    (folder / "b_broken.jpg").unlink()
    (out / ".samfast-tmp-99999999-c_truck").mkdir()  # as left by a killed run (no such pid)
    import shutil
    shutil.rmtree(out / "c_truck")
    p = run(samfast, tiny, folder, out)
    assert p.returncode == 0, p.stderr
    assert "1 done, 1 skipped (already done), 0 failed" in p.stdout
    assert sorted(os.listdir(out)) == ["a_dog", "c_truck"]


def test_json_modes_agree_with_pngs(samfast, tiny, folder, tmp_path):
    (folder / "b_broken.jpg").unlink()
    img = folder / "a_dog.png"
    run(samfast, tiny, img, tmp_path / "png", "--overlay")
    run(samfast, tiny, img, tmp_path / "rle", "--output-mode", "uncompressed_rle")
    run(samfast, tiny, img, tmp_path / "coco", "--output-mode", "coco_rle")
    assert Image.open(tmp_path / "png" / "a_dog.overlay.png").size == (200, 134)
    rle = json.loads((tmp_path / "rle" / "a_dog.json").read_text())
    coco = json.loads((tmp_path / "coco" / "a_dog.json").read_text())
    assert len(rle) == len(coco) == 12
    assert list(coco[0]) == ["segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"]
    for i, (r, c) in enumerate(zip(rle, coco)):
        h, w = r["segmentation"]["size"]
        vals = np.zeros(len(r["segmentation"]["counts"]), bool)
        vals[1::2] = True
        mask = np.repeat(vals, r["segmentation"]["counts"]).reshape(w, h).T
        png = np.array(Image.open(tmp_path / "png" / "a_dog" / f"{i}.png")) > 0
        np.testing.assert_array_equal(mask, png)
        assert r["area"] == c["area"] == png.sum()
        assert {k: v for k, v in r.items() if k != "segmentation"} == {k: v for k, v in c.items() if k != "segmentation"}
        try:
            from pycocotools import mask as mask_utils
        except ImportError:
            continue
        np.testing.assert_array_equal(mask_utils.decode({"size": [h, w], "counts": c["segmentation"]["counts"].encode()}), png)


@pytest.mark.parametrize("flags,expect", [
    (["--points-per-side", "0"], "exactly one of points_per_side"),
    (["--crop-overlap-ratio", "1.5"], "crop_overlap_ratio must be in [0, 1)"),
    (["--crop-n-layers", "2", "--points-per-side", "2", "--crop-n-points-downscale-factor", "4"], "would have no points"),
])
def test_bad_options_fail_before_any_image(samfast, tiny, flags, expect, tmp_path):
    p = samfast("everything", "--checkpoint", tiny, "--device", "cpu", "--input", IMAGES / "dog.jpg", "--output",
                tmp_path / "o", *flags)
    assert p.returncode == 1 and expect in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()  # a refused run creates no output folder


def test_missing_input_is_one_error_line(samfast, tiny, tmp_path):
    p = samfast("everything", "--checkpoint", tiny, "--input", tmp_path / "nope", "--output", tmp_path / "o")
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == 1 and len(lines) == 1 and "no such file or folder" in lines[0]
