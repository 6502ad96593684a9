"""samfast.SamPredictor against upstream's SamPredictor on the same synthetic checkpoint and images
(CPU, fp32): DESIGN.md's thresholds (masks equal but where upstream's logit is within 1e-3 of 0,
low-res logits within 1e-4 relative, scores within 1e-4), through the call patterns of the code that
uses it (samgeo, Grounded-SAM, autodistill)."""
import threading

import numpy as np
import pytest

from conftest import parity, rgb, rss_mb

CASES = {
    "point": dict(point_coords=[[400, 260]], point_labels=[1]),
    "points_single": dict(point_coords=[[400, 260], [100, 100]], point_labels=[1, 0], multimask_output=False),
    "box": dict(box=[100, 100, 500, 400]),
    "point_box_single": dict(point_coords=[[300, 200]], point_labels=[1], box=[50, 60, 700, 500], multimask_output=False),
    "logits": dict(point_coords=[[400, 260]], point_labels=[1], return_logits=True),
    # Upstream decodes an empty point array with its "not a point" token when there is no box, unlike
    # no points at all; with a box the two are the same.
    "empty_points": dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)),
    "empty_points_box": dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0), box=[100, 100, 500, 400]),
}


def as_arrays(kw):
    out = dict(kw)
    for k in ("point_coords", "point_labels", "box"):
        if k in out:
            out[k] = np.array(out[k])
    return out


def upstream_predict(pred, **kw):
    import torch
    with torch.no_grad():
        masks, scores, low = pred.predict(**kw)
        logits = pred.predict(**{**kw, "return_logits": True})[0]
    return masks, scores, low, logits


def assert_same(ours, theirs, what=""):
    masks, scores, low = ours
    t_masks, t_scores, t_low, t_logits = theirs
    assert masks.shape == t_masks.shape and masks.dtype == t_masks.dtype, f"{what}: {masks.shape} {masks.dtype}"
    assert scores.dtype == t_scores.dtype == np.float32 and low.dtype == t_low.dtype == np.float32, what
    assert np.abs(scores - t_scores).max() <= 1e-4, f"{what}: scores {scores} vs {t_scores}"
    assert parity.max_rel_err(low, t_low) <= 1e-4, f"{what}: low-res logits"
    if masks.dtype == bool:
        differ = masks != t_masks
        assert np.all(np.abs(t_logits[differ]) <= 1e-3), f"{what}: {differ.sum()} mask pixels differ"
    else:
        assert parity.max_rel_err(masks, t_masks) <= 1e-4, f"{what}: mask logits"


@pytest.fixture(scope="module")
def predictors(samfast_pkg, tiny_checkpoint, upstream):
    from segment_anything import SamPredictor as UpstreamPredictor
    image = rgb("dog.jpg")
    ours = samfast_pkg.SamPredictor(samfast_pkg.load(tiny_checkpoint, device="cpu"))
    ours.set_image(image)
    theirs = UpstreamPredictor(upstream)
    theirs.set_image(image)
    return ours, theirs, image


@pytest.mark.parametrize("case", CASES)
def test_predict_matches_upstream(predictors, case):
    ours, theirs, _ = predictors
    kw = as_arrays(CASES[case])
    assert_same(ours.predict(**kw), upstream_predict(theirs, **kw), case)


def test_mask_input_round_trip(predictors):
    """The best low-res mask fed back with a second point, as upstream's notebook does."""
    ours, theirs, _ = predictors
    kw = as_arrays(CASES["point"])
    _, scores, low = ours.predict(**kw)
    best = low[np.argmax(scores)][None]
    kw2 = dict(point_coords=np.array([[400, 260], [420, 300]]), point_labels=np.array([1, 1]), mask_input=best,
               multimask_output=False)
    assert_same(ours.predict(**kw2), upstream_predict(theirs, **kw2), "mask_input")


def test_state_matches_upstream(predictors):
    import torch
    ours, theirs, image = predictors
    assert ours.is_image_set and ours.original_size == theirs.original_size == image.shape[:2]
    assert ours.input_size == theirs.input_size
    emb = ours.get_image_embedding()
    assert isinstance(emb, torch.Tensor) and tuple(emb.shape) == (1, 256, 64, 64)
    assert parity.max_rel_err(emb.numpy(), theirs.get_image_embedding().numpy()) <= 1e-4
    assert ours.features.shape == theirs.features.shape


def test_samgeo_pattern(samfast_pkg, predictors):
    """samgeo's SamGeoPredictor: a subclass that sets model and transform without calling
    SamPredictor.__init__, then calls predict with six positional arguments."""
    from samfast.utils.transforms import ResizeLongestSide
    ours, theirs, image = predictors

    class SamGeoPredictor(samfast_pkg.SamPredictor):
        def __init__(self, sam_model):
            self.model = sam_model
            self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)

        def set_image(self, image):
            super(SamGeoPredictor, self).set_image(image)

        def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True,
                    return_logits=False):
            return super(SamGeoPredictor, self).predict(point_coords, point_labels, box, mask_input, multimask_output,
                                                        return_logits)

    geo = SamGeoPredictor(ours.model)
    geo.set_image(image)
    box = np.array([100, 100, 500, 400])
    assert_same(geo.predict(None, None, box, None, True, False), upstream_predict(theirs, box=box), "samgeo")


def test_grounded_sam_pattern(predictors):
    """Grounded-SAM: boxes from a detector through transform.apply_boxes_torch, predict_torch with
    no points and multimask_output=False, results as torch tensors."""
    import torch
    ours, theirs, image = predictors
    boxes = torch.tensor([[100.0, 100.0, 500.0, 400.0], [300.0, 150.0, 700.0, 520.0]])
    ours_out = ours.predict_torch(point_coords=None, point_labels=None,
                                  boxes=ours.transform.apply_boxes_torch(boxes, image.shape[:2]).to(ours.device),
                                  multimask_output=False)
    with torch.no_grad():
        kw = dict(point_coords=None, point_labels=None, boxes=theirs.transform.apply_boxes_torch(boxes, image.shape[:2]),
                  multimask_output=False)
        t_masks, t_iou, t_low = theirs.predict_torch(**kw)
        t_logits = theirs.predict_torch(**kw, return_logits=True)[0]
    masks, iou, low = ours_out
    assert all(isinstance(t, torch.Tensor) for t in ours_out)
    assert masks.dtype == torch.bool and tuple(masks.shape) == (2, 1) + image.shape[:2]
    differ = (masks != t_masks).numpy()
    assert np.all(np.abs(t_logits.numpy()[differ]) <= 1e-3), f"{differ.sum()} mask pixels differ"
    assert torch.abs(iou - t_iou).max() <= 1e-4
    assert parity.max_rel_err(low.numpy(), t_low.numpy()) <= 1e-4


def test_predict_torch_points(predictors):
    """predict_torch with a batch of points (BxNx2 in the input frame) and labels."""
    import torch
    ours, theirs, image = predictors
    pts = torch.tensor([[[400.0, 260.0]], [[100.0, 300.0]], [[700.0, 50.0]]])
    labels = torch.ones(3, 1)
    kw = dict(point_coords=ours.transform.apply_coords_torch(pts, image.shape[:2]), point_labels=labels)
    masks, iou, low = ours.predict_torch(**kw)
    with torch.no_grad():
        t_masks, t_iou, t_low = theirs.predict_torch(**kw)
    assert tuple(masks.shape) == tuple(t_masks.shape) == (3, 3) + image.shape[:2]
    assert torch.abs(iou - t_iou).max() <= 1e-4
    assert parity.max_rel_err(low.numpy(), t_low.numpy()) <= 1e-4
    with pytest.raises(ValueError, match="at most 256 points, got 300"):
        ours.predict_torch(torch.ones(1, 300, 2), torch.ones(1, 300))


def test_autodistill_pattern(predictors):
    """autodistill: predict(box=..., multimask_output=False) (no points), the best mask by score."""
    ours, theirs, _ = predictors
    box = np.array([120, 80, 560, 450])
    masks, scores, _ = ours.predict(box=box, multimask_output=False)
    t = upstream_predict(theirs, box=box, multimask_output=False)
    assert masks.shape[0] == 1 and np.argmax(scores) == np.argmax(t[1])
    assert_same((masks, scores, _), t, "autodistill")


def test_set_torch_image_matches_set_image(samfast_pkg, predictors, upstream):
    """set_torch_image on transform.apply_image's output, as upstream's notebooks do."""
    import torch
    from segment_anything import SamPredictor as UpstreamPredictor
    ours, _, image = predictors
    other = samfast_pkg.SamPredictor(ours.model)
    resized = other.transform.apply_image(image)
    tensor = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None, :, :, :]
    other.set_torch_image(tensor, image.shape[:2])
    up = UpstreamPredictor(upstream)
    with torch.no_grad():
        up.set_torch_image(torch.as_tensor(up.transform.apply_image(image)).permute(2, 0, 1).contiguous()[None], image.shape[:2])
    assert np.array_equal(resized, up.transform.apply_image(image)), "apply_image: PIL's resize, bit for bit"
    kw = as_arrays(CASES["point"])
    assert_same(other.predict(**kw), upstream_predict(up, **kw), "set_torch_image")


def test_bgr_and_mask_threshold(samfast_pkg, predictors):
    ours, _, image = predictors
    other = samfast_pkg.SamPredictor(ours.model)
    other.set_image(np.ascontiguousarray(image[..., ::-1]), image_format="BGR")
    kw = as_arrays(CASES["point"])
    masks, scores, low = other.predict(**kw)
    ref_masks, ref_scores, _ = ours.predict(**kw)
    assert np.array_equal(masks, ref_masks) and np.array_equal(scores, ref_scores)
    logits = ours.predict(**kw, return_logits=True)[0]
    ours.model.mask_threshold = 0.05
    try:
        assert np.array_equal(ours.predict(**kw)[0], logits > 0.05)
    finally:
        ours.model.mask_threshold = 0.0


def test_errors(samfast_pkg, predictors):
    ours, _, image = predictors
    fresh = samfast_pkg.SamPredictor(ours.model)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="outside"):
        ours.predict(point_coords=np.array([[5000, 1]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="point_labels"):
        ours.predict(point_coords=np.array([[1, 1]]))
    for shape in ((1, 64, 64), (4, 128, 128), (65536,), (1, 64, 1024)):  # (the last three: 256 * 256 values)
        with pytest.raises(ValueError, match="mask input must be"):
            ours.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]), mask_input=np.zeros(shape))
    with pytest.raises(ValueError, match="at most 256 points, got 257"):
        ours.predict(point_coords=np.ones((257, 2)), point_labels=np.ones(257))
    with pytest.raises(ValueError, match="point label 0.5 is not"):
        ours.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([0.5]))
    with pytest.raises(TypeError, match="prompt 1 is a tuple"):
        ours.predict_batch([dict(box=np.array([1, 2, 3, 4])), ([1, 1], [1])])
    for index in (0.5, "0"):  # (0.5 was taken as image 0)
        with pytest.raises(ValueError, match="'image' must be an integer index"):
            ours.predict_batch([dict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]), image=index)])
    assert len(ours.predict_batch([dict(box=np.array([1, 2, 3, 4]), image=np.int64(0))])) == 1
    with pytest.raises(ValueError, match=r"unknown keys \['point_coord'\]"):  # a typo would drop the points
        ours.predict_batch([dict(point_coord=np.array([[1, 1]]), point_labels=np.array([1]))])
    # NaN prompts and an empty batch: upstream gives NaN masks and fails inside its decoder.
    nan_mask = np.full((1, 256, 256), np.nan, np.float32)
    with pytest.raises(ValueError, match="mask input holds NaN or infinite"):
        ours.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]), mask_input=nan_mask)
    import torch
    with pytest.raises(ValueError, match="NaN or infinite"):
        ours.predict_torch(torch.full((1, 1, 2), float("nan")), torch.ones(1, 1))
    with pytest.raises(ValueError, match="NaN or infinite"):
        ours.predict_torch(None, None, boxes=torch.tensor([[0.0, 0.0, float("inf"), 5.0]]))
    # Batches that do not fit together are bad input too (ValueError, as the README promises).
    with pytest.raises(ValueError, match=r"labels \(B, N\); got points \(2, 3, 2\) and labels \(2, 2\)"):
        ours.predict_torch(torch.zeros(2, 3, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"boxes must be \(B, 4\) for B = 2; got \(3, 4\)"):
        ours.predict_torch(torch.zeros(2, 1, 2), torch.ones(2, 1), boxes=torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"for B = 2; got \(1, 1, 256, 256\)"):
        ours.predict_torch(torch.zeros(2, 1, 2), torch.ones(2, 1), mask_input=torch.zeros(1, 1, 256, 256))
    for empty in (dict(point_coords=torch.zeros(0, 1, 2), point_labels=torch.ones(0, 1)),
                  dict(point_coords=None, point_labels=None, boxes=torch.zeros(0, 4))):
        with pytest.raises(ValueError, match="the batch holds no prompts"):
            ours.predict_torch(**empty)
    with pytest.raises(ValueError, match="uint8"):
        fresh.set_image(image.astype(np.float32))
    with pytest.raises(ValueError, match="image_format"):
        fresh.set_image(image, image_format="RGBA")
    with pytest.raises(FileNotFoundError):
        samfast_pkg.load("/nonexistent/sam.pth")
    with pytest.raises(ValueError, match="precision"):
        samfast_pkg.load(ours.model._checkpoint or "x", precision="fp7")
    with pytest.raises(ValueError, match="decoder precision"):
        samfast_pkg.load(ours.model._checkpoint or "x", decoder_precision="fp7")
    with pytest.raises(RuntimeError, match="decoder precision fp16 needs a CUDA GPU"):
        samfast_pkg.load(ours.model._checkpoint, device="cpu", decoder_precision="fp16")
    assert samfast_pkg.load(ours.model._checkpoint, device="cpu").decoder_precision == "fp32"


def test_new_weights_after_set_image_ask_for_the_image_again(samfast_pkg, tiny_checkpoint):
    """An embedding belongs to the weights that made it: after load_state_dict a predict is refused
    with what to do, never answered from the old model."""
    sam = samfast_pkg.load(tiny_checkpoint, device="cpu")
    predictor = samfast_pkg.SamPredictor(sam)
    predictor.set_image(rgb("dog.jpg"))
    kw = as_arrays(CASES["point"])
    before = predictor.predict(**kw)[1]
    sam.load_state_dict({k: v * 1.5 for k, v in sam.state_dict().items()})
    with pytest.raises(RuntimeError, match=r"weights or device changed .* set it again"):
        predictor.predict(**kw)
    predictor.set_image(rgb("dog.jpg"))
    assert not np.allclose(predictor.predict(**kw)[1], before)


def test_batch_beyond_upstream(samfast_pkg, predictors):
    """set_images + predict_batch: each prompt's result is predict's on its image alone."""
    ours, _, dog = predictors
    truck = rgb("truck.jpg")
    many = samfast_pkg.SamPredictor(ours.model)
    many.set_images([dog, truck])
    prompts = [dict(point_coords=np.array([[400, 260]]), point_labels=np.array([1]), image=0),
               dict(box=np.array([100, 100, 600, 500]), image=1),
               dict(point_coords=np.array([[200, 100], [50, 50]]), point_labels=np.array([1, 0]), image=1)]
    results = many.predict_batch(prompts)
    single = samfast_pkg.SamPredictor(ours.model)
    for image, idx in ((dog, [0]), (truck, [1, 2])):
        single.set_image(image)
        for i in idx:
            kw = {k: v for k, v in prompts[i].items() if k != "image"}
            # (a batch of images runs the encoder's matrix products in another blocking: fp32 rounding)
            assert_same(results[i], single.predict(**kw) + (single.predict(**kw, return_logits=True)[0],), f"prompt {i}")
    import torch
    with pytest.raises(ValueError, match="predict_torch decodes prompts on one image, and 2 are set"):
        many.predict_torch(torch.tensor([[[10.0, 10.0]]]), torch.ones(1, 1))


def test_many_prompts_decode_a_bounded_batch_at_a_time(samfast_pkg, tiny_checkpoint):
    """predict_batch cuts many prompts into decoder batches of max_decode_batch() (8 on the CPU): a
    decode holds ~25 MB a prompt and the buffer pools keep each batch size's, so 64 prompts after 8
    keep nothing more (32 at a time kept ~0.9 GB more), and each result is the prompt's own."""
    # (the host buffer pool is the process's: run alone, the old limit of 32 fails here; after tests
    # that decoded 32 at once it might find their buffers)
    predictor = samfast_pkg.SamPredictor(samfast_pkg.load(tiny_checkpoint, device="cpu"))
    predictor.set_image(rgb("dog.jpg"))
    rng = np.random.default_rng(0)
    prompts = [dict(point_coords=rng.uniform(0, 500, (1, 2)), point_labels=np.array([1])) for _ in range(64)]
    predictor.predict_batch(prompts[:8])
    alone = [predictor.predict(**prompts[i]) + (predictor.predict(**prompts[i], return_logits=True)[0],)
             for i in (0, 8, 63)]  # (alone it decodes in another blocking: fp32 rounding)
    before = rss_mb()
    results = predictor.predict_batch(prompts)
    grown = rss_mb() - before  # (~110 MB: the results themselves)
    assert grown < 250, f"RSS {before:.0f} -> {before + grown:.0f} MB"
    for k, i in enumerate((0, 8, 63)):
        assert_same(results[i], alone[k], f"prompt {i}")


def check_threads(samfast_pkg, sam, images, kw, repeats):
    """Several threads, each with its own predictor on one model: each gets what it gets alone."""
    expected = []
    for image in images:
        alone = samfast_pkg.SamPredictor(sam)
        alone.set_image(image)
        expected.append(alone.predict(**kw))
    results, errors = [None] * len(images), []

    def work(i):
        try:
            p = samfast_pkg.SamPredictor(sam)
            for _ in range(repeats):
                p.set_image(images[i])
                results[i] = p.predict(**kw)
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads), errors
    for got, want in zip(results, expected):
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_threads_share_a_model(samfast_pkg, predictors):
    ours, _, dog = predictors
    check_threads(samfast_pkg, ours.model, [dog, rgb("truck.jpg"), rgb("groceries.jpg"), dog],
                  as_arrays(CASES["point_box_single"]), repeats=2)
