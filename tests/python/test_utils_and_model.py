"""samfast.utils (amg helpers, ResizeLongestSide) equal to upstream's; the model handle
(load_state_dict as samgeo loads weights, .to, state_dict); numpy use with torch absent."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import IMAGES, rgb


def test_amg_helpers_equal_upstream(samfast_pkg):
    import torch
    from segment_anything.utils import amg as up
    from samfast.utils import amg
    rng = np.random.default_rng(3)
    masks = rng.random((3, 37, 53)) > 0.6
    masks[1] = False
    ours = amg.mask_to_rle_pytorch(torch.from_numpy(masks))
    theirs = up.mask_to_rle_pytorch(torch.from_numpy(masks))
    assert ours == theirs
    for o in ours:
        assert np.array_equal(amg.rle_to_mask(o), up.rle_to_mask(o)) and amg.area_from_rle(o) == up.area_from_rle(o)
        assert amg.coco_encode_rle(o) == up.coco_encode_rle(o)
    for args in ((32, 0, 1), (16, 2, 2), (5, 1, 3)):
        for g, u in zip(amg.build_all_layer_point_grids(*args), up.build_all_layer_point_grids(*args), strict=True):
            assert g.dtype == u.dtype and np.array_equal(g, u)
    blob = np.zeros((40, 50), bool)
    blob[5:30, 5:30] = True
    blob[10:13, 10:13] = False  # a hole of 9
    blob[35:37, 40:42] = True   # an island of 4
    for mode in ("holes", "islands"):
        for thresh in (5, 10, 100):
            o_mask, o_changed = amg.remove_small_regions(blob, thresh, mode)
            u_mask, u_changed = up.remove_small_regions(blob, thresh, mode)
            assert o_changed == u_changed and np.array_equal(o_mask, u_mask), (mode, thresh)
    with pytest.raises(ValueError):
        amg.remove_small_regions(blob, 5, "everything")


def test_amg_helpers_on_empty_masks_and_bad_counts(samfast_pkg):
    """Masks with no pixels (a 0-row mask decoded with zero-length runs divided by its height once)
    give upstream's empty results; counts a 32-bit RLE cannot hold are a ValueError."""
    import torch
    from segment_anything.utils import amg as up
    from samfast.utils import amg
    for h, w in ((0, 5), (5, 0), (0, 0)):
        # (upstream's mask_to_rle_pytorch raises IndexError on such masks; ours gives counts [0])
        assert amg.mask_to_rle_pytorch(torch.zeros((1, h, w), dtype=torch.bool)) == [{"size": [h, w], "counts": [0]}]
        for rle in ({"size": [h, w], "counts": [0]}, {"size": [h, w], "counts": [0, 0]},
                    {"size": [h, w], "counts": [0, 0, 0]}):
            ours, theirs = amg.rle_to_mask(rle), up.rle_to_mask(rle)
            assert ours.shape == theirs.shape == (h, w), rle
            assert amg.coco_encode_rle(rle) == up.coco_encode_rle(rle), rle
    for counts in ([-1, 6], [2**32, 0]):
        with pytest.raises(ValueError, match="outside 0..2"):
            amg.rle_to_mask({"size": [1, 5], "counts": counts})
        with pytest.raises(ValueError, match="outside 0..2"):
            amg.coco_encode_rle({"size": [1, 5], "counts": counts})
    with pytest.raises(ValueError, match="RLE counts sum to 4 but the mask is 1x5 = 5 pixels"):  # (bad input)
        amg.rle_to_mask({"size": [1, 5], "counts": [1, 3]})


def test_resize_longest_side_equals_upstream(samfast_pkg):
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide as Up
    from samfast.utils.transforms import ResizeLongestSide
    ours, theirs = ResizeLongestSide(1024), Up(1024)
    image = rgb("groceries.jpg")
    assert np.array_equal(ours.apply_image(image), theirs.apply_image(image))
    coords = np.array([[10, 20], [333.3, 444.4]])
    boxes = np.array([[1, 2, 300, 400]])
    assert np.array_equal(ours.apply_coords(coords, (480, 640)), theirs.apply_coords(coords, (480, 640)))
    assert np.array_equal(ours.apply_boxes(boxes, (480, 640)), theirs.apply_boxes(boxes, (480, 640)))
    t = torch.tensor(boxes, dtype=torch.float)
    assert torch.equal(ours.apply_boxes_torch(t, (480, 640)), theirs.apply_boxes_torch(t, (480, 640)))
    for size in ((480, 640), (1, 5000), (1000, 999)):
        assert ours.get_preprocess_shape(*size, 1024) == theirs.get_preprocess_shape(*size, 1024)


def test_load_state_dict_like_samgeo(samfast_pkg, tiny_checkpoint):
    """Weights loaded into a built model from torch.load's dict (strict) and from numpy arrays."""
    import torch
    sd = torch.load(tiny_checkpoint, map_location="cpu")
    reference = samfast_pkg.load(tiny_checkpoint, device="cpu")
    sam = samfast_pkg.Sam(model_type=None, device="cpu")
    result = sam.load_state_dict(sd, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    image = rgb("dog.jpg")
    kw = dict(point_coords=np.array([[400, 260]]), point_labels=np.array([1]))
    outputs = []
    for model in (reference, sam):
        p = samfast_pkg.SamPredictor(model)
        p.set_image(image)
        outputs.append(p.predict(**kw))
    assert all(np.array_equal(a, b) for a, b in zip(*outputs))
    # numpy arrays and strict=False: a missing key keeps its weights, an unknown one is reported
    arrays = {k: v.numpy() for k, v in sd.items()}
    kept = arrays.pop("mask_decoder.iou_token.weight")
    result = sam.load_state_dict({**arrays, "extra.weight": np.zeros(3)}, strict=False)
    assert result.missing_keys == ["mask_decoder.iou_token.weight"] and result.unexpected_keys == ["extra.weight"]
    assert np.array_equal(sam.state_dict()["mask_decoder.iou_token.weight"], kept)
    with pytest.raises(RuntimeError):  # strict: a missing tensor is refused, naming it
        sam.load_state_dict(arrays, strict=True)
    broken = {**arrays, "mask_decoder.iou_token.weight": np.full_like(kept, np.nan)}
    with pytest.raises(RuntimeError, match="tensor mask_decoder.iou_token.weight has 256 non-finite values"):
        sam.load_state_dict(broken, strict=True)
    assert np.array_equal(sam.state_dict()["mask_decoder.iou_token.weight"], kept)  # (the model is unchanged)


def test_numpy_use_without_torch(samfast_pkg, tiny_checkpoint):
    """import, load, predict and generate with torch made unimportable: torch is optional."""
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
import numpy as np, samfast
sam = samfast.sam_model_registry["vit_b"]  # (the registry needs no torch either)
sam = samfast.load({str(tiny_checkpoint)!r}, device="cpu")
assert sam.device == "cpu"
p = samfast.SamPredictor(sam)
image = samfast.read_image({str(IMAGES / "dog.jpg")!r})
p.set_image(image)
masks, scores, low = p.predict(point_coords=np.array([[400, 260]]), point_labels=np.array([1]))
assert masks.shape == (3,) + image.shape[:2] and masks.dtype == bool
assert p.get_image_embedding().shape == (1, 256, 64, 64)
records = samfast.SamAutomaticMaskGenerator(sam, points_per_side=2, pred_iou_thresh=0, stability_score_thresh=0).generate(image)
assert len(records) > 0
try:
    p.predict_torch(None, None)
except ImportError as e:
    assert "torch" in str(e)
else:
    raise AssertionError("predict_torch without torch should say torch is needed")
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(samfast_pkg.__file__)))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_to_device_and_help(samfast_pkg, tiny_checkpoint):
    sam = samfast_pkg.load(tiny_checkpoint, device="cpu")
    assert sam.to("cpu") is sam and sam.to(device="cpu").cpu() is sam and str(sam.device) == "cpu"
    with pytest.raises(ValueError, match="device"):
        sam.to("tpu")
    assert "Calculates" in samfast_pkg.SamPredictor.set_image.__doc__
    assert samfast_pkg._samfast.Predictor.predict.__doc__
    stub = os.path.join(os.path.dirname(samfast_pkg.__file__), "_samfast.pyi")
    assert "class Predictor" in open(stub).read()


def test_example_script_runs(samfast_pkg):
    """examples/python_predict.py end to end on a synthetic vit_b (CPU)."""
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python_predict.py")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(samfast_pkg.__file__)))
    out = subprocess.run([sys.executable, example, "--device", "cpu", "--points-per-side", "4",
                          "--image", str(IMAGES / "dog.jpg")], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "point: (3, 534, 800)" in out.stdout and "everything:" in out.stdout and "crop 1/1" in out.stdout


def test_coco_rle_of_many_masks_equals_pycocotools(samfast_pkg):
    """masks_to_coco_rle (a server's decode pass answered, every mask on several threads at once) gives
    each mask's counts string as pycocotools encodes it: noise, empty, full, a disc; three sizes at once."""
    coco = pytest.importorskip("pycocotools.mask", reason="scripts/setup.sh installs pycocotools")
    rng, batches = np.random.default_rng(3), []
    for h, w in ((37, 53), (534, 800), (1, 9)):
        yy, xx = np.mgrid[:h, :w]
        masks = np.stack([rng.random((h, w)) < 0.5, np.zeros((h, w), bool), np.ones((h, w), bool),
                          (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 3) ** 2] * 3)
        batches.append(masks)
    got = samfast_pkg._samfast.masks_to_coco_rle([m.view(np.uint8) for m in batches])
    assert got == [[coco.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode() for m in masks]
                   for masks in batches]
    assert samfast_pkg._samfast.masks_to_coco_rle([np.zeros((0, 4, 4), np.uint8)]) == [[]]
    assert samfast_pkg._samfast.masks_to_coco_rle([]) == []


def test_read_image_pixel_limit(samfast_pkg):
    """An image past max_pixels is an ImageTooLarge (a ValueError) named by its size, from the header."""
    from samfast.decode import decode_image
    dog = str(IMAGES / "dog.jpg")
    assert samfast_pkg.read_image(dog, max_pixels=800 * 534).shape == (534, 800, 3)
    with pytest.raises(samfast_pkg.ImageTooLarge, match="800x534 = 427200 pixels, more than the limit of 427199"):
        samfast_pkg.read_image(dog, max_pixels=800 * 534 - 1)
    with pytest.raises(ValueError, match="max_pixels must be positive"):
        samfast_pkg.read_image(dog, max_pixels=0)
    with pytest.raises(samfast_pkg.ImageTooLarge, match="^the upload is 800x534"):
        decode_image((IMAGES / "dog.jpg").read_bytes(), name="the upload", max_pixels=1000)
    with pytest.raises(ValueError, match="^the upload is not a readable image") as e:
        decode_image(b"not an image", name="the upload", max_pixels=1000)
    assert not isinstance(e.value, samfast_pkg.ImageTooLarge)


@pytest.mark.parametrize("name,save", [
    ("lossless.webp", dict(lossless=True)), ("lossy.webp", dict(quality=80)), ("rgba.webp", dict(lossless=True)),
    ("plain.tif", {}), ("lzw.tif", dict(compression="tiff_lzw")), ("gray.tif", {}), ("jpeg.tiff", dict(compression="jpeg"))])
def test_webp_and_tiff_read_as_pil_reads_them(samfast_pkg, tmp_path, name, save):
    """WebP and TIFF, which OpenCV's imread reads (upstream's amg.py; X-AnyLabeling sends such files
    as they are), decode to PIL's pixels; their size is checked from the header, damage is an error."""
    from PIL import Image
    from samfast.decode import decode_image
    mode = {"rgba": "RGBA", "gray": "L"}.get(name.split(".")[0], "RGB")
    Image.fromarray(rgb("dog.jpg")).convert(mode).save(tmp_path / name, **save)
    want = np.array(Image.open(tmp_path / name).convert("RGB"))
    assert np.array_equal(samfast_pkg.read_image(str(tmp_path / name)), want)
    data = (tmp_path / name).read_bytes()
    assert np.array_equal(decode_image(data, name="the upload"), want)
    with pytest.raises(samfast_pkg.ImageTooLarge, match="^the upload is 800x534 = 427200 pixels"):
        decode_image(data, name="the upload", max_pixels=1000)
    with pytest.raises(ValueError, match="the upload is (corrupt or truncated|not a readable image)"):
        decode_image(data[: len(data) // 2], name="the upload")


def test_paths_that_are_not_utf8(samfast_pkg, tiny_checkpoint, tmp_path):
    """A Linux file name is bytes: one that is not UTF-8 (os.fsdecode keeps it as surrogates) is
    read, and named in errors with its bytes as \\xNN (they once raised TypeError, or lost the message)."""
    import shutil
    image = os.fsdecode(os.fsencode(str(tmp_path)) + b"/dog\xff.jpg")
    checkpoint = os.fsdecode(os.fsencode(str(tmp_path)) + b"/tiny\xfe.pth")
    shutil.copy(IMAGES / "dog.jpg", image)
    shutil.copy(tiny_checkpoint, checkpoint)
    assert np.array_equal(samfast_pkg.read_image(image), rgb("dog.jpg"))
    predictor = samfast_pkg.SamPredictor(samfast_pkg.load(checkpoint, device="cpu"))
    predictor.set_image(samfast_pkg.read_image(image))
    with pytest.raises(RuntimeError, match=r"dog\\xfe\.jpg does not exist"):
        samfast_pkg.read_image(os.fsdecode(os.fsencode(str(tmp_path)) + b"/dog\xfe.jpg"))
