"""samfast inside Ray Data (https://docs.ray.io/en/latest/data/): the blocks of a batch-inference
pipeline over many images, on one machine or a cluster, unchanged.

    import ray, samfast.ray
    ds = ray.data.from_items([{"image_id": "dog", "path": "/data/dog.jpg"}, ...])
    ds = ds.map_batches(samfast.ray.decode_images)                      # CPU tasks
    ds = ds.map_batches(samfast.ray.SegmentEverything, batch_size=4,     # one model per actor
                        fn_constructor_kwargs={"checkpoint": "sam_vit_h_4b8939.pth"},
                        compute=ray.data.ActorPoolStrategy(size=2), num_gpus=1)
    ds.map_batches(samfast.ray.mask_rows, batch_format="pyarrow").write_parquet("/data/masks")

Rows carry an "image_id". decode_images turns a "path" or "bytes" column into an "image" column
(RGB (H, W, 3) uint8) in CPU tasks, so that the actors holding a GPU never wait on JPEG decoding; an
image that cannot be read gets an "error" message instead, and every later block passes that row on
without failing the job. SegmentEverything and SegmentPrompts load the model once per actor (on the
GPU Ray gives it, else the CPU) and return one row per image; `samfast-dataset everything`
(samfast.dataset) is the ready-made pipeline with resumable output."""
import json
import time
from typing import Any, Dict, List, Optional

import numpy as np

from . import _samfast
from .automatic_mask_generator import SamAutomaticMaskGenerator
from .build_sam import Sam, load, synthetic
from .decode import decode_image
from .predictor import SamPredictor

Batch = Dict[str, np.ndarray]
NO_IMAGE = np.zeros((0, 0, 3), np.uint8)  # (the "image" of a row whose image could not be read)


def _strings(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = [str(v) for v in values]
    return out


def _images(values: List[np.ndarray]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)  # (ragged: images differ in size)
    out[:] = values
    return out


def decode_images(batch: Batch, exif_orientation: bool = True) -> Batch:
    """For map_batches (a CPU task): each row's image file ("path", or its "bytes") decoded into
    "image", RGB (H, W, 3) uint8, as samfast.read_image decodes it. A row whose file cannot be read
    or decoded gets an empty image and the reason in "error" ("" when fine). Other columns pass on;
    "bytes" is dropped."""
    n = len(batch["image_id"])
    images, errors = [], []
    earlier = batch.get("error")
    for i in range(n):
        image, error = NO_IMAGE, str(earlier[i]) if earlier is not None else ""
        if not error:
            try:
                if "bytes" in batch:
                    image = decode_image(bytes(batch["bytes"][i]), exif_orientation, f"image {batch['image_id'][i]}")
                else:
                    image = _samfast.read_image(str(batch["path"][i]), exif_orientation)
            except (ValueError, OSError, RuntimeError) as e:
                error = str(e) or type(e).__name__
            except Exception as e:  # (anything else one image raises, e.g. a null "bytes": its row alone fails)
                error = f"{type(e).__name__}: {e}"
        images.append(image)
        errors.append(error)
    out = {k: v for k, v in batch.items() if k != "bytes"}
    out["image"], out["error"] = _images(images), _strings(errors)
    return out


def make_model(checkpoint: Optional[str] = None, model: str = "vit_b", device: str = "auto",
               precision: str = "auto", seed: int = 0) -> Sam:
    """A checkpoint's model (any type), or without one a synthetic `model` (random weights), loaded
    now on `device` ("auto": the GPU Ray gives the actor, else the CPU)."""
    sam = load(checkpoint, device, precision) if checkpoint else synthetic(model, seed, device, precision)
    sam._native_model()
    return sam


class SegmentEverything:
    """For map_batches with an actor pool: segment everything (SamAutomaticMaskGenerator, any of
    its options) on each row's "image". One row per image out: "error" ("" or why the image has no
    result), "width", "height", "num_masks", "seconds" (the image's time in the actor), "finished"
    (when it was done: Unix time, 0 for a row that came with an error) and
    "records": the image's masks as upstream's coco_rle records in JSON, exactly what
    `samfast everything --output-mode coco_rle` writes for it. Other columns pass on, "image" is
    dropped. The next image is resized on another thread while one computes."""

    def __init__(self, checkpoint: Optional[str] = None, model: str = "vit_b", device: str = "auto",
                 precision: str = "auto", seed: int = 0, **generator_options: Any):
        generator_options["output_mode"] = "coco_rle"
        self.sam = make_model(checkpoint, model, device, precision, seed)
        self.generator = SamAutomaticMaskGenerator(self.sam, **generator_options)

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["image_id"])
        errors = [str(e) for e in batch["error"]] if "error" in batch else [""] * n
        images = batch["image"]
        width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
        num_masks, seconds, finished = np.zeros(n, np.int32), np.zeros(n, np.float64), np.zeros(n, np.float64)
        records = [""] * n
        todo = [i for i in range(n) if not errors[i]]
        start = time.perf_counter()
        for i, (_, outcome) in zip(todo, self.generator.generate_each(images[i] for i in todo)):
            if isinstance(outcome, Exception):
                errors[i] = str(outcome) or type(outcome).__name__
            else:
                height[i], width[i] = images[i].shape[:2]
                num_masks[i] = len(outcome)
                records[i] = json.dumps(outcome, separators=(",", ":"))
            now = time.perf_counter()
            seconds[i], start, finished[i] = now - start, now, time.time()
        out = {k: v for k, v in batch.items() if k not in ("image", "error")}
        out.update(error=_strings(errors), width=width, height=height, num_masks=num_masks, seconds=seconds,
                   finished=finished, records=_strings(records))
        return out


class SegmentPrompts:
    """For map_batches with an actor pool: masks for prompts on each row's "image" (SamPredictor:
    the image encoded once, then each prompt). Prompts per row, in image pixels: "boxes" (N, 4)
    XYXY, and/or "point_coords" (N, K, 2) with "point_labels" (N, K) (1 foreground, 0 background):
    N prompts, the i-th made of boxes[i] and/or the K points of point_coords[i]. One row per image
    out: "error", "width", "height" and "results": a JSON list with, per prompt, the best mask
    (or all three with multimask_output) as COCO RLE and its predicted IoU
    ({"segmentation": {"size", "counts"}, "predicted_iou"}, or lists of them). "image" is dropped."""

    def __init__(self, checkpoint: Optional[str] = None, model: str = "vit_b", device: str = "auto",
                 precision: str = "auto", seed: int = 0, multimask_output: bool = False):
        self.sam = make_model(checkpoint, model, device, precision, seed)
        self.predictor = SamPredictor(self.sam)
        self.multimask_output = multimask_output

    def _prompts(self, batch: Batch, i: int):
        boxes = np.asarray(batch["boxes"][i], np.float32).reshape(-1, 4) if "boxes" in batch else None
        points = labels = None
        if "point_coords" in batch:
            points = np.asarray(batch["point_coords"][i], np.float32)
            points = points.reshape(len(points), -1, 2)
            labels = np.asarray(batch["point_labels"][i], np.int32).reshape(len(points), -1)
        count = len(boxes) if boxes is not None else len(points) if points is not None else 0
        if boxes is not None and points is not None and len(points) != count:
            raise ValueError(f"{len(boxes)} boxes and {len(points)} point prompts: give one of each per prompt")
        for p in range(count):
            yield (points[p] if points is not None else None, labels[p] if labels is not None else None,
                   boxes[p] if boxes is not None else None)

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["image_id"])
        errors = [str(e) for e in batch["error"]] if "error" in batch else [""] * n
        width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
        results = [""] * n
        for i in range(n):
            if errors[i]:
                continue
            try:
                image = batch["image"][i]
                self.predictor.set_image(image)
                out = []
                for points, labels, box in self._prompts(batch, i):
                    masks, scores, _ = self.predictor.predict(points, labels, box, multimask_output=self.multimask_output)
                    found = [{"segmentation": {"size": [int(image.shape[0]), int(image.shape[1])], "counts": c},
                              "predicted_iou": float(s)}
                             for c, s in zip(_samfast.masks_to_coco_rle([np.ascontiguousarray(masks, np.uint8)])[0], scores)]
                    out.append(found if self.multimask_output else found[0])
                height[i], width[i] = image.shape[:2]
                results[i] = json.dumps(out, separators=(",", ":"))
            except (ValueError, RuntimeError) as e:
                errors[i] = str(e) or type(e).__name__
            except Exception as e:  # (a row's prompts of another form, e.g. labels of None: that row alone fails)
                errors[i] = f"{type(e).__name__}: {e}"
        out = {k: v for k, v in batch.items() if k not in ("image", "error")}
        out.update(error=_strings(errors), width=width, height=height, results=_strings(results))
        return out


def mask_rows(batch):
    """For map_batches(batch_format="pyarrow") after SegmentEverything: one row per mask (image_id,
    mask_index, height, width, counts (COCO RLE), area, bbox (XYWH), predicted_iou,
    stability_score, point_coords, crop_box) as a pyarrow Table, ready for write_parquet. Images
    without masks and error rows have no rows here."""
    import pyarrow as pa
    columns: Dict[str, list] = {k: [] for k in ("image_id", "mask_index", "height", "width", "counts", "area", "bbox",
                                                "predicted_iou", "stability_score", "point_coords", "crop_box")}
    table = batch if isinstance(batch, pa.Table) else pa.table(batch)
    for image_id, records in zip(table.column("image_id").to_pylist(), table.column("records").to_pylist()):
        for k, r in enumerate(json.loads(records) if records else []):
            columns["image_id"].append(image_id)
            columns["mask_index"].append(k)
            columns["height"].append(r["segmentation"]["size"][0])
            columns["width"].append(r["segmentation"]["size"][1])
            columns["counts"].append(r["segmentation"]["counts"])
            columns["point_coords"].append(r["point_coords"][0])
            for key in ("area", "bbox", "predicted_iou", "stability_score", "crop_box"):
                columns[key].append(r[key])
    return pa.table(columns, schema=mask_schema())


def mask_schema():
    """The columns of mask_rows (and of samfast-dataset's masks/ Parquet files)."""
    import pyarrow as pa
    return pa.schema([("image_id", pa.string()), ("mask_index", pa.int32()), ("height", pa.int32()),
                      ("width", pa.int32()), ("counts", pa.string()), ("area", pa.int64()),
                      ("bbox", pa.list_(pa.int32(), 4)), ("predicted_iou", pa.float64()),
                      ("stability_score", pa.float64()), ("point_coords", pa.list_(pa.float64(), 2)),
                      ("crop_box", pa.list_(pa.int32(), 4))])


def default_actor_options(gpus_per_actor: float, cpus_per_actor: float, max_restarts: int = -1) -> Dict[str, Any]:
    """map_batches' resources and fault tolerance for a samfast actor: an actor that dies (a crashed
    worker, a lost node) is restarted by Ray and its batch run again, max_restarts times (-1: no limit)."""
    return {"num_gpus": gpus_per_actor, "num_cpus": cpus_per_actor, "max_restarts": max_restarts,
            "max_task_retries": -1 if max_restarts != 0 else 0}


__all__ = ["SegmentEverything", "SegmentPrompts", "decode_images", "default_actor_options", "make_model", "mask_rows",
           "mask_schema"]
