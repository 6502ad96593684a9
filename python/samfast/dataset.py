"""samfast-dataset: segment everything over many images with Ray Data, on this machine (a local Ray
started here) or a Ray cluster (--address, or RAY_ADDRESS), with the same command.

Output folder:
  images/part-K.parquet  one row per image: image_id, path, error ("" when fine), width, height,
                         num_masks, seconds (its time in the actor), finished (when, Unix time).
                         An image listed here is done.
  masks/part-K.parquet   one row per mask (--format parquet or both): image_id, mask_index,
                         height, width, counts (COCO RLE), area, bbox, predicted_iou,
                         stability_score, point_coords, crop_box (samfast.ray.mask_rows)
  json/ID.json           the image's records (--format json or both), as
                         `samfast everything --output-mode coco_rle` writes them
  options.json           what the results were made with; a later run must ask for the same
Each batch's files are written under temporary names and renamed into place, the images part last:
a run that dies leaves whole batches, and the next run skips the images listed and redoes the rest.
An image that cannot be read or written (its file, its id: empty, a path, a name too long, another
image's) is an error row, never a failed job; the next run drops the error rows from their parts and
redoes those images, so that an image is listed once. A crashed actor is restarted by Ray and its
batch run again, which rewrites the same files (named after the batch's images)."""
import argparse
import fcntl
import glob
import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from typing import Dict, Iterable, List, Optional

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tga", ".pgm", ".ppm", ".pnm",  # (as the CLI's)
                    ".webp", ".tif", ".tiff"}
TEMP_PREFIX = ".samfast-tmp-"
# Images a Parquet part holds: parts of a few images would make a million-image run a folder of
# 10^5 small files; more images a part are more to redo after a crash (~10 s of one GPU at 256).
WRITE_BATCH = 256
LOCK_NAME = ".samfast-dataset.lock"
NAME_MAX = 255  # bytes in a file name (ext4, XFS, Btrfs, NFS, ...)
SUBFOLDERS = ("images", "masks", "json")
GENERATOR_FLAGS = {  # samfast everything's (amg.py's) flags: name -> type
    "points_per_side": int, "points_per_batch": int, "pred_iou_thresh": float, "stability_score_thresh": float,
    "stability_score_offset": float, "box_nms_thresh": float, "crop_n_layers": int, "crop_nms_thresh": float,
    "crop_overlap_ratio": float, "crop_n_points_downscale_factor": int, "min_mask_region_area": int,
}
GENERATOR_DEFAULTS = {"points_per_side": 32, "points_per_batch": 64, "pred_iou_thresh": 0.88,
                      "stability_score_thresh": 0.95, "stability_score_offset": 1.0, "box_nms_thresh": 0.7,
                      "crop_n_layers": 0, "crop_nms_thresh": 0.7, "crop_overlap_ratio": 512 / 1500,
                      "crop_n_points_downscale_factor": 1, "min_mask_region_area": 0}


class UsageError(Exception):
    """A request refused before any work, with the reason for the user."""


class RunFailed(Exception):
    """A run that Ray could not finish, with the reason for the user."""


def root_cause(err: Exception) -> str:
    """The last line of a Ray error that names an exception ("RuntimeError: checkpoint ... is neither a
    PyTorch .pth (zip) nor a safetensors file"): the error of the actor, after Ray's traceback of it."""
    lines = [line.strip() for line in str(err).splitlines()]
    named = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b:?", line)]
    return (named or [line for line in lines if line] or [type(err).__name__])[-1]


# -- inputs ----------------------------------------------------------------------------------------
def output_name(path: str) -> str:
    """An image's id from its file name, as `samfast everything` (amg.py) names its outputs."""
    return os.path.splitext(os.path.basename(path))[0]


def list_images(spec: str) -> List[str]:
    """A folder's image files (by extension, not recursive), a glob's matches, or one file; sorted."""
    if os.path.isdir(spec):
        found = [os.path.join(spec, n) for n in os.listdir(spec)
                 if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS and not os.path.isdir(os.path.join(spec, n))]
        if not found:
            raise UsageError(f"--input {spec}: the folder holds no image files (.jpg, .png, ...)")
    elif any(c in spec for c in "*?[") and not os.path.lexists(spec):
        found = [p for p in glob.glob(spec) if not os.path.isdir(p)]
        if not found:
            raise UsageError(f"--input {spec}: no files match the pattern")
    elif os.path.lexists(spec):
        found = [spec]
    else:
        raise UsageError(f"--input {spec}: no such file or folder")
    return sorted(found)


def is_parquet(paths: List[str]) -> bool:
    return all(p.endswith(".parquet") for p in paths)


def unsafe_id(image_id: str, json_files: bool) -> str:
    """Why image_id cannot name its outputs ("" if it can): with JSON files, json/ID.json must be
    one file name inside json/ (every input's ids are checked here, the Parquet's too)."""
    if not image_id:
        return "its id is empty"
    if not json_files:
        return ""
    if image_id in (".", "..") or "/" in image_id or "\0" in image_id or image_id.startswith(TEMP_PREFIX):
        return f"its id {image_id!r} cannot name a JSON file (rename it, or --format parquet)"
    size = len((image_id + ".json").encode("utf-8", "surrogatepass"))
    if size > NAME_MAX:
        return (f"its id is too long to name a JSON file ({size} bytes with .json, the limit is {NAME_MAX}): "
                "rename it, or --format parquet")
    return ""


def as_text(path: str) -> str:
    """path as valid UTF-8 text (Parquet's strings are): the bytes of a name that is not UTF-8,
    which os.fsdecode keeps as surrogates, written as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def path_rows(paths: List[str], done: set, json_files: bool) -> List[Dict[str, str]]:
    """The rows to compute: an id per file (an error where it cannot name outputs, is another
    file's, or the path is not UTF-8), the images done left out."""
    rows, seen = [], {}
    for p in paths:
        path = os.path.abspath(p)
        shown = as_text(path)
        image_id = output_name(shown)
        if shown != path:  # (the rows travel as Parquet, whose strings are UTF-8: the path could not)
            error = "its path is not valid UTF-8 (rename the file)"
        else:
            error = unsafe_id(image_id, json_files)
        if not error and image_id in seen:
            error = f"its id {image_id!r} is taken by {seen[image_id]} (rename one)"
        seen.setdefault(image_id, as_text(p))
        if error or image_id not in done:  # (a known error is reported by each run, as a failed image is redone)
            rows.append({"image_id": image_id, "path": shown, "error": error})
    return rows


# -- the output folder -----------------------------------------------------------------------------
PART = re.compile(r"part-[0-9a-f]{24}\.parquet")


def part_name(image_ids: Iterable[str]) -> str:
    """A batch's file name: the same for the same images, so a retried batch rewrites its files."""
    h = hashlib.sha256()
    for i in image_ids:
        h.update(i.encode("utf-8", "surrogatepass") + b"\0")
    return "part-" + h.hexdigest()[:24] + ".parquet"


def write_atomically(path: str, write) -> None:
    # A short random temporary name: one made from the file's own name could pass NAME_MAX, and
    # several nodes write to one shared folder.
    tmp = os.path.join(os.path.dirname(path), TEMP_PREFIX + uuid.uuid4().hex)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_results(batch, output: str, formats: List[str]):
    """For map_batches(batch_format="pyarrow") after SegmentEverything (a CPU task): the batch's
    JSON files, masks Parquet part and, last, its images part. An image whose JSON file cannot be
    written becomes an error row (the others go on), before its masks would be listed. Returns the
    images rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .ray import mask_rows
    ids = batch.column("image_id").to_pylist()
    name = part_name(ids)
    if "json" in formats:
        failures = write_json_files(os.path.join(output, "json"), ids, batch.column("error").to_pylist(),
                                    batch.column("records").to_pylist())
        batch = failed_rows(batch, failures)
    if "parquet" in formats:
        masks = mask_rows(batch)
        write_atomically(os.path.join(output, "masks", name), lambda p: pq.write_table(masks, p))
    images = batch.drop_columns(["records"])
    images = images.select([c for c in ("image_id", "path", "error", "width", "height", "num_masks", "seconds",
                                        "finished") if c in images.column_names])
    write_atomically(os.path.join(output, "images", name), lambda p: pq.write_table(images, p))
    return images.select(["image_id", "error", "num_masks", "finished"]).cast(
        pa.schema([("image_id", pa.string()), ("error", pa.string()), ("num_masks", pa.int32()),
                   ("finished", pa.float64())]))


def write_json_files(folder: str, ids: List[str], errors: List[str], records: List[str]) -> Dict[int, str]:
    """Writes folder/ID.json for each row without an error; returns {row: why} for those that could
    not be written (the id checked again here: no id names a file outside folder)."""
    failures = {}
    for k, (image_id, error, text) in enumerate(zip(ids, errors, records)):
        if error:
            continue
        why = unsafe_id(image_id, json_files=True)
        if not why:
            try:
                write_text(os.path.join(folder, image_id + ".json"), text)
            except OSError as e:  # (the temporary's name in e would tell the user nothing)
                why = f"its JSON file could not be written: {e.strerror or e}"
        if why:
            failures[k] = why
    return failures


def failed_rows(batch, failures: Dict[int, str]):
    """batch (a pyarrow Table after SegmentEverything) with rows k of failures made error rows:
    failures[k] their error, no masks."""
    import pyarrow as pa
    if not failures:
        return batch
    columns = {"error": [failures.get(k, e) for k, e in enumerate(batch.column("error").to_pylist())],
               "records": [("" if k in failures else r) for k, r in enumerate(batch.column("records").to_pylist())],
               "num_masks": [(0 if k in failures else n) for k, n in enumerate(batch.column("num_masks").to_pylist())]}
    for column, values in columns.items():
        i = batch.column_names.index(column)
        batch = batch.set_column(i, column, pa.array(values, batch.schema.field(column).type))
    return batch


def _flat(options: Dict, prefix: str = "") -> Dict:
    out = {}
    for k, v in options.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def write_text(path: str, text: str) -> None:
    def write(p):
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
    write_atomically(path, write)


class OutputFolder:
    """The output folder of one run at a time (a lock held while the run lasts). samfast-dataset
    writes only its own files there and removes only its own (parts, temporaries); a folder that
    holds something else is refused."""

    def __init__(self, path: str, options: Dict):
        self.path = path
        recorded = os.path.join(path, "options.json")
        self._refuse_foreign(path, recorded)
        for sub in SUBFOLDERS:
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        self._lock = open(os.path.join(path, LOCK_NAME), "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"--output {path}: another samfast-dataset run is using it") from None
        if os.path.exists(recorded):
            with open(recorded) as f:
                before = json.load(f)
            if "formats" in options and "formats" not in before:  # (recorded before formats were)
                before["formats"] = options["formats"]
            if before != options:
                was, now = _flat(before), _flat(options)
                changed = [f"{k} {was.get(k, '(none)')} there, {now.get(k, '(none)')} now"
                           for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
                raise UsageError(f"--output {path} holds results made with other options ({'; '.join(changed)}): "
                                 "give those again, or a new --output")
        else:
            write_text(recorded, json.dumps(options, indent=1, sort_keys=True))
        self._clean()

    @staticmethod
    def _refuse_foreign(path: str, recorded: str):
        """Refuses an output that samfast-dataset did not make: a file, a folder with something in
        it but no options.json (beyond what a run that died before writing it leaves: the lock and
        empty subfolders), subfolders that are links or files."""
        if os.path.lexists(path) and not os.path.isdir(path):
            raise UsageError(f"--output {path} exists and is not a folder")
        if not os.path.isdir(path):
            return

        def left_by_us(name):
            p = os.path.join(path, name)
            return name == LOCK_NAME or name in SUBFOLDERS and os.path.isdir(p) and not os.path.islink(p) and \
                not os.listdir(p)
        if not os.path.isfile(recorded) and not all(map(left_by_us, os.listdir(path))):
            raise UsageError(f"--output {path} holds files that are not samfast-dataset's (it has no options.json): "
                             "give a new or empty folder")
        for sub in SUBFOLDERS:
            p = os.path.join(path, sub)
            if os.path.islink(p) or os.path.lexists(p) and not os.path.isdir(p):
                raise UsageError(f"--output {path}: {sub} is not a folder of samfast-dataset's (a link or a file)")

    def _clean(self):
        """Removes what a dead run left: its temporaries, and masks parts whose images part never
        landed. Nothing else is touched."""
        images = set(os.listdir(os.path.join(self.path, "images")))
        for sub in SUBFOLDERS:
            folder = os.path.join(self.path, sub)
            for name in os.listdir(folder):
                ours = name.startswith(TEMP_PREFIX) or (sub == "masks" and PART.fullmatch(name) and name not in images)
                if ours and os.path.isfile(os.path.join(folder, name)) and not os.path.islink(os.path.join(folder, name)):
                    os.unlink(os.path.join(folder, name))

    def has_results(self) -> bool:
        return any(PART.fullmatch(n) for n in os.listdir(os.path.join(self.path, "images")))

    def forget_options(self) -> None:
        os.unlink(os.path.join(self.path, "options.json"))

    def done(self) -> set:
        """Ids of the images whose results are here. The error rows are dropped from their parts
        first, so that this run redoes those images (as `samfast everything` redoes failed ones)
        and lists each once."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        folder = os.path.join(self.path, "images")
        ids = set()
        for name in sorted(n for n in os.listdir(folder) if PART.fullmatch(n)):
            rows = pq.read_table(os.path.join(folder, name), columns=["image_id", "error"])
            fine = pc.equal(rows.column("error"), "")
            if not pc.all(fine).as_py():
                self._drop_failed(name, fine)
            ids.update(rows.filter(fine).column("image_id").to_pylist())
        return ids

    def _drop_failed(self, name: str, fine) -> None:
        """Rewrites images part `name` with its fine rows alone; a part left empty goes, with its
        masks part (error rows have no masks rows, so that part stays as it is otherwise). A run
        that dies here leaves those images not done, which the next run redoes."""
        import pyarrow.parquet as pq
        images = os.path.join(self.path, "images", name)
        kept = pq.read_table(images).filter(fine)
        if kept.num_rows:
            write_atomically(images, lambda p: pq.write_table(kept, p))
            return
        os.unlink(images)  # (the images part first: a masks part alone is a dead run's, which _clean removes)
        masks = os.path.join(self.path, "masks", name)
        if os.path.isfile(masks) and not os.path.islink(masks):
            os.unlink(masks)


# -- the pipeline ----------------------------------------------------------------------------------
def not_done(batch, done: set):
    """For map_batches on a Parquet input: the rows whose image_id is not in done."""
    import pyarrow.compute as pc
    return batch.filter(pc.invert(pc.is_in(batch.column("image_id"), value_set=_string_array(done))))


def _string_array(values):
    import pyarrow as pa
    return pa.array(sorted(values), type=pa.string())


def id_column(names: List[str]) -> str:
    """The column of a Parquet input that names its images."""
    for name in ("image_id", "id", "path"):
        if name in names:
            return name
    raise ValueError(f"the Parquet input has no 'image_id' (or 'id', or 'path') column; its columns: {names}")


def bytes_column(names: List[str]) -> str:
    """The column of a Parquet input that holds its image files."""
    for name in ("bytes", "image"):
        if name in names:
            return name
    raise ValueError(f"the Parquet input has no 'bytes' (or 'image') column of image files; its columns: {names}")


def parquet_ids(table) -> List[str]:
    """The ids of a Parquet input's rows (a table or batch of it): "" where null."""
    import pyarrow as pa
    column = id_column(table.column_names)
    values = table.column(column).cast(pa.string()).to_pylist()
    return [("" if v is None else output_name(v) if column == "path" else v) for v in values]


def parquet_id_counts(paths: List[str]) -> Counter:
    """How many rows of the Parquet files give each id: read (that column alone) before the run,
    since each block of the pipeline sees its own rows only. Files that name their images or hold
    their bytes in other columns than the first file's (Ray would merge them into columns of nulls),
    or whose images are not binary (paths as strings, a Hugging Face Image struct) are refused here,
    before Ray starts, as a file without images is."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    counts, layout = Counter(), None
    for path in paths:
        schema = pq.read_schema(path)
        column, data = id_column(schema.names), bytes_column(schema.names)
        kind = schema.field(data).type
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            raise ValueError(f"{path}: its column {data!r} holds {kind}, not image files' bytes (binary)")
        if layout is None:
            layout = (path, column, data)
        elif (column, data) != layout[1:]:
            raise ValueError(f"{path} names its images by {column!r} with bytes in {data!r}, {layout[0]} by "
                             f"{layout[1]!r} with bytes in {layout[2]!r}: give files of one layout")
        counts.update(parquet_ids(pq.read_table(path, columns=[column])))
    return counts


def parquet_images(batch, json_files: bool = True, repeated: Optional[Dict[str, int]] = None):
    """For map_batches(batch_format="pyarrow"): a Parquet input's rows as image_id, bytes, error;
    an error where the id cannot name outputs (unsafe_id), is several rows' (`repeated`: which of
    them came first is not known here, so none is computed), or the bytes are null."""
    import pyarrow as pa
    data = batch.column(bytes_column(batch.column_names))
    ids, repeated = parquet_ids(batch), repeated or {}
    errors = []
    for image_id, null in zip(ids, data.is_null().to_pylist()):
        error = unsafe_id(image_id, json_files)
        if not error and image_id in repeated:
            error = f"its id {image_id!r} is given to {repeated[image_id]} rows of the input (ids must be unique)"
        errors.append(error or ("its bytes are null (no image file)" if null else ""))
    return pa.table({"image_id": pa.array(ids, pa.string()), "bytes": data, "error": pa.array(errors, pa.string())})


def run(a) -> int:
    import ray
    from ray.exceptions import RayError

    from . import ray as samfast_ray
    from .automatic_mask_generator import SamAutomaticMaskGenerator
    from .build_sam import Sam

    generator_options = {k: getattr(a, k) for k in GENERATOR_FLAGS}
    # Bad options, precision or model names are refused now (no model is loaded).
    SamAutomaticMaskGenerator(Sam(precision=a.precision, synthetic=None if a.checkpoint else a.model),
                              **generator_options)
    if a.checkpoint and not os.path.isfile(a.checkpoint):
        raise UsageError(f"checkpoint not found: {a.checkpoint}")
    formats = ["parquet", "json"] if a.format == "both" else [a.format]
    inputs = list_images(a.input)
    parquet_input = is_parquet(inputs)
    id_counts = parquet_id_counts(inputs) if parquet_input else Counter()  # (refuses a bad layout before Ray)
    repeated = {i: n for i, n in id_counts.items() if n > 1}
    weights = ({"checkpoint": os.path.abspath(a.checkpoint), "size": os.path.getsize(a.checkpoint)} if a.checkpoint
               else {"model": a.model, "seed": a.seed})
    fresh = not os.path.exists(os.path.join(a.output, "options.json"))
    folder = OutputFolder(a.output, {"weights": weights, "precision": a.precision, "generator": generator_options,
                                     "formats": formats})
    done = folder.done()

    address = a.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:  # a local Ray; the actors' cores are counted beside a core for decoding and writing at least
        ray.init(num_cpus=max(os.cpu_count() or 1, a.cpu_actors * a.cpus_per_actor + 1), include_dashboard=False)
    cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
    gpus = a.gpus if a.gpus is not None else cluster_gpus
    if gpus > cluster_gpus:  # (the actors would wait for GPUs forever)
        raise UsageError(f"--gpus {gpus}: the Ray cluster has {cluster_gpus} GPU(s)")
    actors = gpus if gpus > 0 else a.cpu_actors
    where = f"{gpus} GPU actor(s)" if gpus > 0 else f"{actors} CPU actor(s) of {a.cpus_per_actor} core(s)"

    if parquet_input:
        ds = ray.data.read_parquet(inputs).map_batches(
            parquet_images, batch_format="pyarrow",
            fn_kwargs={"json_files": "json" in formats, "repeated": repeated})
        if done:
            ds = ds.map_batches(not_done, batch_format="pyarrow", fn_kwargs={"done": done})
        skipped = sum(n for i, n in id_counts.items() if i in done)
        total = sum(id_counts.values()) - skipped
    else:
        rows = path_rows(inputs, done, "json" in formats)
        total, skipped = len(rows), len(inputs) - len(rows)
        if rows:
            ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // a.batch_size, 4096)))
    if not total:
        print(f"samfast-dataset: no image to do: {skipped} of {a.input} already done in {a.output}")
        return 0
    print(f"samfast-dataset: {total} images of {a.input} on {where} ({skipped} already done in {a.output})",
          file=sys.stderr)
    ds = ds.map_batches(samfast_ray.decode_images, batch_size=a.batch_size)
    ds = ds.map_batches(samfast_ray.SegmentEverything, batch_size=a.batch_size,
                        compute=ray.data.ActorPoolStrategy(size=actors),
                        fn_constructor_kwargs={"checkpoint": weights.get("checkpoint"), "model": a.model,
                                               "device": "cuda" if gpus > 0 else "cpu",
                                               "seed": a.seed, "precision": a.precision, **generator_options},
                        **samfast_ray.default_actor_options(1 if gpus > 0 else 0, a.cpus_per_actor, a.max_restarts))
    ds = ds.map_batches(write_results, batch_format="pyarrow", batch_size=max(a.batch_size, WRITE_BATCH),
                        fn_kwargs={"output": folder.path, "formats": formats})

    start, images, failed, masks = time.perf_counter(), 0, 0, 0
    # When the actors finished the images (first, last, how many): the rate between the first and the
    # last leaves Ray's start, the model loads and the batching of the writes out.
    first, last, timed = float("inf"), 0.0, 0
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for image_id, error, n, t in zip(*(batch.column(c).to_pylist()
                                               for c in ("image_id", "error", "num_masks", "finished"))):
                images += 1
                masks += n
                if t:
                    first, last, timed = min(first, t), max(last, t), timed + 1
                if error:
                    failed += 1
                    shown = image_id if image_id.isprintable() else repr(image_id)  # (a NUL, a newline: one line each)
                    print(f"samfast-dataset: {shown}: FAILED: {error}", file=sys.stderr)
    except RayError as err:
        # The actors' model did not load (a bad checkpoint, a precision the device lacks), or Ray
        # failed: options that made no result are not kept, so that a corrected run is not refused.
        if fresh and not folder.has_results():
            folder.forget_options()
        raise RunFailed(f"the run stopped after {images} images: {root_cause(err)}") from None
    end = time.perf_counter()
    rate = f"{images / (end - start):.2f} images/s"
    if timed > 1 and last - first >= 1:  # (over less than a second, batches finishing together say nothing)
        rate += f", {(timed - 1) / (last - first):.2f} from the first image done to the last ({last - first:.1f} s)"
    print(f"samfast-dataset: {images - failed} done ({masks} masks), {skipped} skipped (already done), {failed} failed "
          f"in {end - start:.1f} s ({rate}); {a.output}")
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="samfast-dataset", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("everything", help="segment everything on each image (SamAutomaticMaskGenerator)")
    e.add_argument("--input", required=True,
                   help="a folder of images, a glob (quote it), an image, or Parquet file(s) with an image_id (or id, "
                        "or path) column and a bytes (or image) column of image files")
    e.add_argument("--output", required=True, help="output folder (created if missing; a run resumes in it)")
    e.add_argument("--format", choices=["parquet", "json", "both"], default="parquet",
                   help="masks as Parquet rows, one JSON per image, or both (default parquet)")
    e.add_argument("--checkpoint", help="SAM checkpoint (.pth or .safetensors); omitted: synthetic random weights")
    e.add_argument("--model", default="vit_b", help="synthetic model without --checkpoint: vit_b, vit_l, vit_h, tiny")
    e.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights")
    e.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16, fp8 (GPU) or int8 (CPU)")
    e.add_argument("--gpus", type=int, default=None,
                   help="GPU actors, one GPU each (default: every GPU of the Ray cluster; 0: CPU actors)")
    e.add_argument("--cpu-actors", type=int, default=1, help="actors without a GPU (when there are no GPUs)")
    e.add_argument("--cpus-per-actor", type=int, default=1, help="cores each actor reserves (its threads on the CPU)")
    e.add_argument("--batch-size", type=int, default=16,
                   help="images in one actor call, the unit a crash redoes (each call costs ~40 ms beside the images)")
    e.add_argument("--max-restarts", type=int, default=-1, help="restarts of a crashed actor (-1: no limit)")
    e.add_argument("--address", help="a Ray cluster to run on (default: $RAY_ADDRESS, else a local Ray started here)")
    for name, kind in GENERATOR_FLAGS.items():
        e.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=GENERATOR_DEFAULTS[name],
                       help=f"SamAutomaticMaskGenerator's {name} (default {GENERATOR_DEFAULTS[name]:g})")
    a = ap.parse_args(argv)
    for flag in ("batch_size", "cpus_per_actor", "cpu_actors"):
        if getattr(a, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} is 1 or more")
    if a.gpus is not None and a.gpus < 0:
        ap.error("--gpus is 0 or more")
    try:
        return run(a)
    except UsageError as err:
        print(f"samfast-dataset: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"samfast-dataset: error: {err}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError) as err:  # (bad options or names, a Parquet input of a bad layout)
        print(f"samfast-dataset: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
