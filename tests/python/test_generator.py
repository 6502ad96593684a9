"""samfast.SamAutomaticMaskGenerator against upstream's on the same synthetic checkpoint (CPU, fp32):
records with upstream's keys, types and values in every output mode, and upstream's scripts/amg.py
flow (registry, .to(device), options, cv2 image, json.dump / mask PNGs) run on both packages."""
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import IMAGES, rgb

_spec = importlib.util.spec_from_file_location("generator_parity", Path(__file__).parents[1] / "parity" /
                                               "test_generator_parity.py")
generator_parity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generator_parity)

SURVIVE = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


@pytest.fixture(scope="module")
def models(samfast_pkg, tiny_checkpoint, upstream):
    return samfast_pkg.load(tiny_checkpoint, device="cpu"), upstream


def upstream_generate(model, image, **kw):
    import torch
    from segment_anything import SamAutomaticMaskGenerator
    with torch.no_grad():
        return SamAutomaticMaskGenerator(model, **kw).generate(image)


def test_records_match_upstream_in_every_mode(samfast_pkg, models):
    ours_model, theirs_model = models
    image = rgb("truck.jpg")
    coco = samfast_pkg.SamAutomaticMaskGenerator(ours_model, output_mode="coco_rle", **SURVIVE).generate(image)
    theirs = upstream_generate(theirs_model, image, output_mode="coco_rle", **SURVIVE)
    assert len(theirs) > 10
    generator_parity.compare(coco, theirs)
    types = {k: type(v) for k, v in theirs[0].items() if k != "segmentation"}
    for mode in ("binary_mask", "uncompressed_rle"):
        ours = samfast_pkg.SamAutomaticMaskGenerator(ours_model, output_mode=mode, **SURVIVE).generate(image)
        assert len(ours) == len(coco)
        for o, c in zip(ours, coco):
            assert o.keys() == c.keys() and {k: type(v) for k, v in o.items() if k != "segmentation"} == types, mode
            assert {k: v for k, v in o.items() if k != "segmentation"} == {k: v for k, v in c.items() if k != "segmentation"}
            if mode == "binary_mask":
                seg = o["segmentation"]
                assert seg.dtype == bool and seg.shape == image.shape[:2]
                assert samfast_pkg.utils.amg.coco_encode_rle(
                    samfast_pkg.utils.amg.mask_to_rle_pytorch(seg[None])[0]) == c["segmentation"]
            else:
                assert o["segmentation"]["size"] == c["segmentation"]["size"]
                assert all(type(n) is int for n in o["segmentation"]["counts"])
                assert samfast_pkg.utils.amg.coco_encode_rle(o["segmentation"]) == c["segmentation"]
    upstream_binary = upstream_generate(theirs_model, image, output_mode="binary_mask", **SURVIVE)
    assert upstream_binary[0]["segmentation"].dtype == bool


def test_options_and_errors(samfast_pkg, models):
    ours_model, _ = models
    gen = samfast_pkg.SamAutomaticMaskGenerator
    with pytest.raises(ValueError, match="points_per_side or point_grid"):
        gen(ours_model, points_per_side=None)
    with pytest.raises(ValueError, match="output_mode"):
        gen(ours_model, output_mode="png")
    with pytest.raises(ValueError):
        gen(ours_model, points_per_batch=0)
    with pytest.raises(ValueError, match="n_per_side 1000000000000 is out of range"):
        gen(ours_model, points_per_side=10**12)
    assert gen(ours_model, min_mask_region_area=10**12).min_mask_region_area == 10**12  # (means: every region)
    with pytest.raises(ValueError, match="uint8"):
        gen(ours_model).generate(np.zeros((4, 4), np.float32))
    # point_grids instead of points_per_side; options changed on the object take effect, as upstream's.
    from segment_anything.utils.amg import build_all_layer_point_grids as upstream_grids
    g = gen(ours_model, points_per_side=None, point_grids=upstream_grids(3, 0, 1), pred_iou_thresh=0.0,
            stability_score_thresh=0.0, box_nms_thresh=1.0, output_mode="coco_rle")
    image = rgb("dog.jpg")
    first = g.generate(image)
    assert {tuple(r["point_coords"][0]) for r in first} <= {(x * 800, y * 534) for x, y in upstream_grids(3, 0, 1)[0]}
    g.box_nms_thresh = 0.5
    assert len(g.generate(image)) < len(first)
    calls = []
    g.generate(image, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]
    assert set(g.last_timings) >= {"encoder_ms", "decoder_ms", "candidates"}


def amg_main(api, model_type, checkpoint, device, input_path, output, convert_to_rle, amg_kwargs):
    """upstream's scripts/amg.py main(), line for line, on the package `api`."""
    import cv2
    sam = api.sam_model_registry[model_type](checkpoint=checkpoint)
    _ = sam.to(device=device)
    output_mode = "coco_rle" if convert_to_rle else "binary_mask"
    amg_kwargs = {k: v for k, v in amg_kwargs.items() if v is not None}
    generator = api.SamAutomaticMaskGenerator(sam, output_mode=output_mode, **amg_kwargs)
    targets = [os.path.join(input_path, f) for f in sorted(os.listdir(input_path))]
    os.makedirs(output, exist_ok=True)
    for t in targets:
        image = cv2.imread(t)
        if image is None:
            continue
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        masks = generator.generate(image)
        save_base = os.path.join(output, os.path.splitext(os.path.basename(t))[0])
        if output_mode == "binary_mask":
            os.makedirs(save_base, exist_ok=False)
            rows = []
            for i, mask_data in enumerate(masks):
                cv2.imwrite(os.path.join(save_base, f"{i}.png"), mask_data["segmentation"].astype(np.uint8) * 255)
                rows.append(",".join([str(i), str(mask_data["area"]), *[str(x) for x in mask_data["bbox"]],
                                      *[str(x) for x in mask_data["point_coords"][0]], str(mask_data["predicted_iou"]),
                                      str(mask_data["stability_score"]), *[str(x) for x in mask_data["crop_box"]]]))
            Path(save_base, "metadata.csv").write_text("\n".join(rows))
        else:
            with open(save_base + ".json", "w") as f:
                json.dump(masks, f)


@pytest.mark.parametrize("convert_to_rle", [True, False])
def test_upstream_amg_script_flow(samfast_pkg, tiny_checkpoint, tmp_path, monkeypatch, convert_to_rle):
    """amg.py's flow on both packages; the tiny test model is registered under one more key on both."""
    import segment_anything
    import torch
    from conftest import parity
    monkeypatch.setitem(segment_anything.sam_model_registry, "tiny", lambda checkpoint=None: parity.upstream_sam(checkpoint))
    monkeypatch.setitem(samfast_pkg.sam_model_registry, "tiny", lambda checkpoint=None: samfast_pkg.Sam(checkpoint))
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("dog.jpg", "truck.jpg"):
        (folder / name).write_bytes((IMAGES / name).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    kwargs = dict(SURVIVE, points_per_batch=None, crop_n_layers=None, min_mask_region_area=None)
    with torch.no_grad():
        amg_main(segment_anything, "tiny", str(tiny_checkpoint), "cpu", folder, tmp_path / "upstream", convert_to_rle, kwargs)
    amg_main(samfast_pkg, "tiny", str(tiny_checkpoint), "cpu", folder, tmp_path / "ours", convert_to_rle, kwargs)
    for name in ("dog", "truck"):
        if convert_to_rle:
            generator_parity.compare(json.loads((tmp_path / "ours" / f"{name}.json").read_text()),
                                     json.loads((tmp_path / "upstream" / f"{name}.json").read_text()))
        else:
            ours = (tmp_path / "ours" / name / "metadata.csv").read_text().splitlines()
            theirs = (tmp_path / "upstream" / name / "metadata.csv").read_text().splitlines()
            assert len(ours) == len(theirs) > 5
            for o, t in zip(ours, theirs):  # id, area, bbox, point, iou, stability, crop box
                o, t = o.split(","), t.split(",")
                assert o[:1] + o[6:8] + o[10:] == t[:1] + t[6:8] + t[10:], "point and crop box, bit for bit"
                assert abs(float(o[8]) - float(t[8])) <= 1e-4 and abs(float(o[9]) - float(t[9])) <= 1e-3
                assert abs(int(o[1]) - int(t[1])) <= 0.005 * max(int(t[1]), 200)


def test_registry(samfast_pkg, tiny_checkpoint):
    reg = samfast_pkg.sam_model_registry
    assert set(reg) == {"default", "vit_h", "vit_l", "vit_b"} and reg["default"] is samfast_pkg.build_sam_vit_h
    sam = reg["vit_b"](checkpoint=str(tiny_checkpoint)).to(device="cpu").eval()
    assert sam.image_encoder.img_size == 1024 and sam.mask_threshold == 0.0 and sam.image_format == "RGB"
    with pytest.raises(RuntimeError, match="not vit_b"):
        sam.model_type
    with pytest.raises(FileNotFoundError):
        reg["vit_h"](checkpoint="/nonexistent/sam_vit_h_4b8939.pth")
    with pytest.raises(ValueError, match="not a regular file but a folder"):
        reg["vit_h"](checkpoint=str(tiny_checkpoint.parent))
    with pytest.raises(ValueError, match="unknown model type 'vit_x'"):
        samfast_pkg.synthetic("vit_x")


def test_generate_many_and_each(samfast_pkg, models, tmp_path):
    """generate_many over paths and arrays (the next image prepared on another thread) gives
    generate's records for each; generate_each reports a broken image and goes on past it."""
    ours_model, _ = models
    gen = samfast_pkg.SamAutomaticMaskGenerator(ours_model, output_mode="coco_rle", **SURVIVE)
    names = ["dog.jpg", "groceries.jpg", "truck.jpg"]
    one_by_one = [gen.generate(rgb(n)) for n in names]
    assert all(len(r) > 0 for r in one_by_one)
    seen = []
    many = list(gen.generate_many([str(IMAGES / names[0]), rgb(names[1]), IMAGES / names[2]],
                                  progress=lambda i, image: seen.append(i)))
    assert many == one_by_one and seen == [0, 1, 2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((IMAGES / "dog.jpg").read_bytes()[:4000])
    each = list(gen.generate_each([str(broken), rgb(names[1]), np.zeros((5, 5), np.uint8), rgb(names[2])]))
    assert [item for item, _ in each][0] == str(broken)
    assert isinstance(each[0][1], RuntimeError) and "Premature end of JPEG" in str(each[0][1])
    assert each[1][1] == one_by_one[1] and each[3][1] == one_by_one[2]
    assert isinstance(each[2][1], ValueError) and "(H, W, 3) uint8" in str(each[2][1])
    with pytest.raises(RuntimeError, match="Premature end"):
        list(gen.generate_many([rgb(names[0]), str(broken)]))


def test_mask_threshold_and_a_fractional_region_area_as_upstream(samfast_pkg, models):
    """The generator binarizes at the model's mask_threshold, as upstream's reads it at each
    generate, and removes regions of fewer pixels than min_mask_region_area, fractions included."""
    ours_model, theirs_model = models
    image = rgb("dog.jpg")

    def ours(**kw):
        return samfast_pkg.SamAutomaticMaskGenerator(ours_model, output_mode="coco_rle", **SURVIVE, **kw).generate(image)

    def areas(records):
        return [r["area"] for r in records]
    at_zero = ours()
    ours_model.mask_threshold = theirs_model.mask_threshold = -0.5
    try:
        lowered = ours()
        generator_parity.compare(lowered, upstream_generate(theirs_model, image, output_mode="coco_rle", **SURVIVE))
    finally:
        del theirs_model.mask_threshold  # (upstream's class attribute, 0.0, shows again)
        ours_model.mask_threshold = 0.0
    assert areas(lowered) != areas(at_zero)
    # Upstream keeps a region of `size < 1.5` out: 1.5 is 2, never 1 (regions of one pixel go).
    by_area = {area: areas(ours(min_mask_region_area=area)) for area in (1, 1.5, 2)}
    assert by_area[1.5] == by_area[2] != by_area[1]
    generator_parity.compare(ours(min_mask_region_area=1.5),
                             upstream_generate(theirs_model, image, output_mode="coco_rle", min_mask_region_area=1.5,
                                               **SURVIVE))
