"""Parity of the pre/post-processing transforms with what upstream SAM runs: PIL (through
torchvision) for the image resize, torch.nn.functional.interpolate for the masks.

Needs the built helper: SAMFAST_BIN is the build directory, the helper is
$SAMFAST_BIN/tests/transforms_tool.
"""
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

try:
    from segment_anything.utils.transforms import ResizeLongestSide
except ImportError:  # upstream not installed: use the operation it performs
    ResizeLongestSide = None

from conftest import IMAGES, built_tool  # noqa: E402


@pytest.fixture(scope="module")
def tool():
    return built_tool("transforms_tool")


def run(tool, *args):
    out = subprocess.run([tool, *map(str, args)], check=True, capture_output=True, text=True)
    return out.stdout


def ours_resize(tool, tmp_path, img, out_h, out_w):
    h, w, _ = img.shape
    src, dst = tmp_path / "in.rgb", tmp_path / "out.rgb"
    np.ascontiguousarray(img).tofile(src)
    run(tool, "resize", src, h, w, out_h, out_w, dst)
    return np.fromfile(dst, np.uint8).reshape(out_h, out_w, 3)


def pil_resize(img, out_h, out_w):
    return np.array(Image.fromarray(img).resize((out_w, out_h), Image.BILINEAR))


def upstream_apply_image(img):
    """ResizeLongestSide(1024).apply_image, or the PIL call it makes."""
    if ResizeLongestSide is not None:
        return ResizeLongestSide(1024).apply_image(img)
    h, w = img.shape[:2]
    scale = 1024 * 1.0 / max(h, w)
    return pil_resize(img, int(h * scale + 0.5), int(w * scale + 0.5))


RESIZE_CASES = [
    (3000, 2000, 1024, 683),  # strong downscale, the typical camera photo
    (2000, 3000, 683, 1024),
    (1200, 1800, 683, 1024),
    (534, 800, 684, 1024),  # upscale
    (1024, 1024, 1024, 1024),  # no-op
    (1024, 700, 1024, 333),  # one axis only (horizontal pass alone)
    (700, 1024, 333, 1024),  # vertical pass alone
    (1, 1, 1024, 1024),
    (1, 7, 3, 1024),
    (7, 1, 1024, 5),
    (1, 5000, 1, 1024),
    (17, 13, 1024, 783),
    (5, 9, 3, 9),
    (100, 100, 3, 2),
    (333, 777, 439, 1024),
    (4097, 31, 1024, 8),
]


@pytest.mark.parametrize("h,w,oh,ow", RESIZE_CASES)
def test_resize_bit_exact_with_pil(tool, tmp_path, h, w, oh, ow):
    rng = np.random.default_rng(h * 7919 + w * 31 + oh + ow)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ours_resize(tool, tmp_path, img, oh, ow), pil_resize(img, oh, ow))


def test_resize_bit_exact_random_sizes(tool, tmp_path):
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w, oh, ow = (int(v) for v in rng.integers(1, 700, 4))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = ours_resize(tool, tmp_path, img, oh, ow)
        assert np.array_equal(ours, pil_resize(img, oh, ow)), f"{h}x{w} -> {oh}x{ow}"


def test_resize_smooth_image_bit_exact(tool, tmp_path):
    # Gradients hit the rounding boundaries of the fixed-point weights far more often than noise.
    y, x = np.mgrid[0:1500, 0:2250]
    img = np.stack([(x * 255 // 2249), (y * 255 // 1499), ((x + y) % 256)], -1).astype(np.uint8)
    np.testing.assert_array_equal(ours_resize(tool, tmp_path, img, 683, 1024), pil_resize(img, 683, 1024))


@pytest.mark.parametrize("name", ["dog.jpg", "groceries.jpg", "truck.jpg"])
def test_resize_test_images_as_upstream(tool, tmp_path, name):
    path = IMAGES / name
    if not path.exists():
        pytest.skip(f"{path} not found (set SAMFAST_TESTDATA)")
    raw = tmp_path / "decoded.rgb"
    h, w = map(int, run(tool, "decode", path, raw).split())
    img = np.fromfile(raw, np.uint8).reshape(h, w, 3)
    ref = upstream_apply_image(img)
    oh, ow = map(int, run(tool, "shape", h, w, 1024).split())
    assert (oh, ow) == ref.shape[:2]
    np.testing.assert_array_equal(ours_resize(tool, tmp_path, img, oh, ow), ref)


def ours_decode(tool, tmp_path, path):
    raw = tmp_path / "decoded.rgb"
    h, w = map(int, run(tool, "decode", path, raw).split())
    return np.fromfile(raw, np.uint8).reshape(h, w, 3)


def pil_decode(path):
    # What upstream SAM users run before SamPredictor.set_image.
    return np.array(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("name", ["dog.jpg", "groceries.jpg", "truck.jpg"])
def test_decode_test_images_bit_exact_with_pil(tool, tmp_path, name):
    path = IMAGES / name
    if not path.exists():
        pytest.skip(f"{path} not found (set SAMFAST_TESTDATA)")
    np.testing.assert_array_equal(ours_decode(tool, tmp_path, path), pil_decode(path))


JPEG_VARIANTS = {
    "rgb_444": dict(mode="RGB", subsampling=0, quality=92),
    "rgb_422": dict(mode="RGB", subsampling=1, quality=85),
    "rgb_420_progressive": dict(mode="RGB", subsampling=2, quality=75, progressive=True),
    "gray": dict(mode="L", quality=90),
    "gray_progressive": dict(mode="L", quality=60, progressive=True),
    "cmyk": dict(mode="CMYK", quality=90),  # PIL writes Adobe-inverted CMYK, with an Adobe marker
    "odd_size": dict(mode="RGB", subsampling=2, quality=80, size=(37, 53)),
}


@pytest.mark.parametrize("variant", sorted(JPEG_VARIANTS))
def test_decode_jpeg_variants_bit_exact_with_pil(tool, tmp_path, variant):
    opts = dict(JPEG_VARIANTS[variant])
    mode, size = opts.pop("mode"), opts.pop("size", (301, 203))  # odd sizes: partial MCUs
    y, x = np.mgrid[0 : size[0], 0 : size[1]]
    rng = np.random.default_rng(len(variant))
    img = np.stack([x * 255 // size[1], y * 255 // size[0], (x * y) % 256], -1)
    img = np.clip(img + rng.integers(-40, 41, img.shape), 0, 255).astype(np.uint8)
    path = tmp_path / f"{variant}.jpg"
    if mode == "CMYK":  # RGB.convert("CMYK") leaves K at 0: give K its own content
        pil = Image.fromarray(np.concatenate([img, img[..., :1] // 2 + img[..., 1:2] // 2], -1), "CMYK")
    else:
        pil = Image.fromarray(img).convert(mode)
    pil.save(path, **opts)
    assert Image.open(path).mode == mode
    np.testing.assert_array_equal(ours_decode(tool, tmp_path, path), pil_decode(path))


@pytest.mark.parametrize("cut", [2, 10, 0.5])
def test_decode_truncated_jpeg_fails_like_pil(tool, tmp_path, cut):
    data = (IMAGES / "dog.jpg").read_bytes() if (IMAGES / "dog.jpg").exists() else None
    if data is None:
        pytest.skip("dog.jpg not found (set SAMFAST_TESTDATA)")
    data = data[: int(len(data) * cut)] if isinstance(cut, float) else data[:-cut]
    path = tmp_path / "cut.jpg"
    path.write_bytes(data)
    with pytest.raises(OSError, match="truncated"):
        Image.open(path).convert("RGB")
    out = subprocess.run([tool, "decode", path, tmp_path / "x.rgb"], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr == f"transforms_tool: {path} is not a readable image: Premature end of JPEG file\n"


@pytest.mark.parametrize("h,w", [(534, 800), (1200, 1800), (1, 5000), (3000, 2000), (333, 777), (999, 1000)])
def test_preprocess_shape_and_coords(tool, h, w):
    scale = 1024 * 1.0 / max(h, w)
    expect = (int(h * scale + 0.5), int(w * scale + 0.5))
    assert tuple(map(int, run(tool, "shape", h, w, 1024).split())) == expect
    xy = np.array([[w * 0.37, h - 0.5]], dtype=np.float32)
    if ResizeLongestSide is not None:
        ref = ResizeLongestSide(1024).apply_coords(xy, (h, w))
    else:
        ref = xy.astype(float) * np.array([expect[1] / w, expect[0] / h])
    ref = ref.astype(np.float32)[0]
    ours = np.array(run(tool, "coords", h, w, 1024, repr(float(xy[0, 0])), repr(float(xy[0, 1]))).split(),
                    dtype=np.float32)
    np.testing.assert_array_equal(ours, ref)


def test_normalize_and_pad_matches_sam_preprocess(tool, tmp_path):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (683, 1024, 3), dtype=np.uint8)
    src, dst = tmp_path / "in.rgb", tmp_path / "out.f32"
    img.tofile(src)
    run(tool, "normalize", src, 683, 1024, 1024, dst)
    ours = np.fromfile(dst, np.float32).reshape(1, 3, 1024, 1024)
    # ref: modeling/sam.py Sam.preprocess on the tensor SamPredictor.set_image builds.
    x = torch.as_tensor(img).permute(2, 0, 1).contiguous()[None]
    mean = torch.Tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.Tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    x = (x - mean) / std
    ref = F.pad(x, (0, 0, 0, 1024 - 683)).numpy()
    np.testing.assert_array_equal(ours, ref)


def ours_f32(tool, tmp_path, cmd, x, *args):
    src, dst = tmp_path / "in.f32", tmp_path / "out.f32"
    np.ascontiguousarray(x, dtype=np.float32).tofile(src)
    run(tool, cmd, src, *x.shape, *args, dst)
    return np.fromfile(dst, np.float32)


@pytest.mark.parametrize("shape,out", [
    ((1, 3, 256, 256), (1024, 1024)),
    ((2, 3, 7, 5), (13, 29)),
    ((1, 1, 1024, 683), (534, 800)),  # downscale in one axis
    ((1, 2, 5, 5), (3, 2)),
    ((1, 1, 1, 1), (4, 4)),
    ((1, 3, 100, 77), (1500, 2250)),
    ((1, 1, 9, 9), (9, 9)),
])
def test_interpolate_matches_torch(tool, tmp_path, shape, out):
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x), out, mode="bilinear", align_corners=False).numpy()
    ours = ours_f32(tool, tmp_path, "interpolate", x, *out).reshape(ref.shape)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-5)


def upstream_postprocess(masks, img_size, input_size, original_size):
    # ref: modeling/sam.py Sam.postprocess_masks (the method only reads image_encoder.img_size).
    masks = F.interpolate(masks, (img_size, img_size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)


def test_postprocess_upstream_formula_is_sam_method():
    # Guard the copy above against upstream: call the real method on a stand-in module.
    try:
        from segment_anything.modeling.sam import Sam
    except ImportError:
        pytest.skip("segment_anything not installed")

    class Encoder:
        img_size = 64

    class Stub:
        image_encoder = Encoder()

    x = torch.randn(1, 3, 16, 16)
    np.testing.assert_array_equal(Sam.postprocess_masks(Stub(), x, (43, 64), (67, 100)).numpy(),
                                  upstream_postprocess(x, 64, (43, 64), (67, 100)).numpy())


@pytest.mark.parametrize("n,input_size,original_size", [
    (3, (684, 1024), (534, 800)),
    (1, (683, 1024), (1200, 1800)),
    (4, (1024, 683), (3000, 2000)),
    (2, (1024, 1024), (1024, 1024)),
    (1, (1024, 1), (5000, 1)),
])
def test_postprocess_masks_matches_upstream(tool, tmp_path, n, input_size, original_size):
    x = (np.random.default_rng(n).standard_normal((n, 3, 256, 256)) * 10).astype(np.float32)
    ref = upstream_postprocess(torch.from_numpy(x), 1024, input_size, original_size).numpy()
    ours = ours_f32(tool, tmp_path, "postprocess", x, 1024, *input_size, *original_size).reshape(ref.shape)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-4)
    # The masks are thresholded at 0: signs must agree except where torch's logit is ~0.
    differ = (ours > 0) != (ref > 0)
    assert np.all(np.abs(ref[differ]) < 1e-4)
