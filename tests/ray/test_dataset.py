"""samfast-dataset and samfast.ray on a local Ray (started by the command, two CPU actors) with the
tiny synthetic checkpoint: results equal `samfast everything`'s on the same images, unreadable
images become error rows, a crashed actor is restarted and its batch redone with every result
written once, an interrupted batch is redone on the next run, failed images are redone and finished
ones skipped; ids that cannot name a file (or are several images') are error rows, never a file
outside the output folder nor a failed job."""
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import IMAGES

HERE = Path(__file__).resolve().parent
# Options that keep masks with random weights (the default thresholds keep none) and a small grid.
OPTIONS = ["--points-per-side", "6", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
RAY_TIMEOUT = 600


def ray_env(samfast_pkg):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(samfast_pkg.__file__).parents[1])
    env.pop("RAY_ADDRESS", None)
    return env


def run_dataset(ray_python, samfast_pkg, *args, crash_marker=None):
    env = ray_env(samfast_pkg)
    if crash_marker:
        env["CRASH_MARKER"] = str(crash_marker)
    return subprocess.run([ray_python, str(HERE / "run_dataset.py"), "everything", *args], env=env,
                          capture_output=True, text=True, timeout=RAY_TIMEOUT)


def venv_python(ray_python, samfast_pkg, code, **env):
    r = subprocess.run([ray_python, "-c", textwrap.dedent(code)], env={**ray_env(samfast_pkg), **env},
                       capture_output=True, text=True, timeout=RAY_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def read_parquet(ray_python, samfast_pkg, folder):
    """A folder of Parquet parts as a list of row dicts (read by the venv's pyarrow)."""
    return json.loads(venv_python(ray_python, samfast_pkg, f"""
        import json, pyarrow.parquet as pq
        print(json.dumps(pq.read_table({str(folder)!r}).to_pylist()))"""))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    for name in ("dog.jpg", "groceries.jpg", "truck.jpg"):
        shutil.copy(IMAGES / name, d / name)
    (d / "broken.jpg").write_bytes((IMAGES / "dog.jpg").read_bytes()[:5000])
    (d / "notes.png").write_text("not an image\n")
    return d


@pytest.fixture(scope="module")
def cli_results(tiny_checkpoint, images, tmp_path_factory):
    """`samfast everything` on the folder with one thread, as each actor has one core (the CPU
    backend's sums follow its thread count)."""
    out = tmp_path_factory.mktemp("cli")
    cli = Path(os.environ.get("SAMFAST_BIN", HERE.parents[1] / "build")) / "samfast"
    r = subprocess.run([str(cli), "everything", "--checkpoint", str(tiny_checkpoint), "--input", str(images),
                        "--output", str(out), "--output-mode", "coco_rle", "--device", "cpu", *OPTIONS],
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr  # (two unreadable images)
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(results) == ["dog", "groceries", "truck"]
    assert sum(len(r) for r in results.values()) > 0
    return results


def check_output(ray_python, samfast_pkg, out, cli_results):
    """Every image listed once, its masks (Parquet rows and JSON) equal to the CLI's records."""
    rows = read_parquet(ray_python, samfast_pkg, out / "images")
    assert sorted(r["image_id"] for r in rows) == ["broken", "dog", "groceries", "notes", "truck"]
    by_id = {r["image_id"]: r for r in rows}
    assert "Premature end of JPEG file" in by_id["broken"]["error"]
    assert "not a readable image" in by_id["notes"]["error"] and by_id["notes"]["num_masks"] == 0
    masks = read_parquet(ray_python, samfast_pkg, out / "masks")
    for image_id, records in cli_results.items():
        assert by_id[image_id]["error"] == "" and by_id[image_id]["num_masks"] == len(records)
        assert json.loads((out / "json" / f"{image_id}.json").read_text()) == records
        mine = sorted((m for m in masks if m["image_id"] == image_id), key=lambda m: m["mask_index"])
        assert [m["mask_index"] for m in mine] == list(range(len(records)))
        for m, r in zip(mine, records):
            assert m["counts"] == r["segmentation"]["counts"] and [m["height"], m["width"]] == r["segmentation"]["size"]
            assert (m["area"], m["bbox"], m["crop_box"]) == (r["area"], r["bbox"], r["crop_box"])
            assert (m["predicted_iou"], m["stability_score"], [m["point_coords"]]) == \
                (r["predicted_iou"], r["stability_score"], r["point_coords"])
    assert sorted(p.name for p in (out / "json").iterdir()) == ["dog.json", "groceries.json", "truck.json"]
    return by_id


def part_of(ray_python, samfast_pkg, out, image_id):
    """The images part that lists image_id, and the ids it lists."""
    for part in (out / "images").glob("part-*.parquet"):
        ids = [r["image_id"] for r in read_parquet(ray_python, samfast_pkg, part)]
        if image_id in ids:
            return part.name, ids
    raise AssertionError(f"no images part lists {image_id}")


def test_everything_crash_resume(ray_python, samfast_pkg, tiny_checkpoint, images, cli_results, tmp_path):
    out = tmp_path / "out"
    args = ["--input", str(images), "--output", str(out), "--checkpoint", str(tiny_checkpoint), "--gpus", "0",
            "--cpu-actors", "2", "--batch-size", "1", "--format", "both", *OPTIONS]
    marker = tmp_path / "crashed"
    r = run_dataset(ray_python, samfast_pkg, *args, crash_marker=marker)
    assert r.returncode == 1, r.stdout + r.stderr  # (two images failed)
    assert marker.exists(), "the injected crash did not happen"
    assert "3 done" in r.stdout and "2 failed" in r.stdout, r.stdout
    assert "broken: FAILED" in r.stderr and "notes: FAILED" in r.stderr
    check_output(ray_python, samfast_pkg, out, cli_results)

    # A run cut off while writing the dog's batch: its masks part is there, its images part (the
    # batch's "done" mark) is not, and temporaries lie about. The next run redoes that batch alone.
    dog_part, redo = part_of(ray_python, samfast_pkg, out, "dog")
    (out / "images" / dog_part).unlink()
    (out / "json" / "dog.json").unlink()
    for sub in ("masks", "json", "images"):
        (out / sub / ".samfast-tmp-123-x").write_text("partial")
    (out / "masks" / "notes.txt").write_text("the user's")  # (not samfast-dataset's: left alone)
    r = run_dataset(ray_python, samfast_pkg, *args)
    failed = {"broken", "notes"}  # (redone by every run)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{len(set(redo) - failed)} done" in r.stdout and "2 failed" in r.stdout, r.stdout
    assert f"{5 - len(set(redo) | failed)} skipped" in r.stdout, r.stdout
    assert (out / "masks" / "notes.txt").read_text() == "the user's"
    (out / "masks" / "notes.txt").unlink()
    check_output(ray_python, samfast_pkg, out, cli_results)
    assert not list(out.glob("*/.samfast-tmp-*"))

    # Again: the finished images are skipped (their files untouched), the failed ones redone and
    # still listed once (check_output).
    before = {p: p.stat().st_mtime_ns for p in (out / "json").iterdir()}
    r = run_dataset(ray_python, samfast_pkg, *args)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "0 done" in r.stdout and "3 skipped" in r.stdout and "2 failed" in r.stdout, r.stdout
    assert "broken: FAILED" in r.stderr and "notes: FAILED" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in (out / "json").iterdir()} == before
    check_output(ray_python, samfast_pkg, out, cli_results)


def test_refusals(ray_python, samfast_pkg, tiny_checkpoint, images, tmp_path):
    """Refused before Ray starts: other generator options on an output folder, a folder in use,
    bad options, a missing checkpoint."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "options.json").write_text(json.dumps({"weights": {"model": "vit_b", "seed": 0}, "precision": "auto",
                                                  "generator": {"points_per_side": 16}}))
    r = run_dataset(ray_python, samfast_pkg, "--input", str(images), "--output", str(out))
    assert r.returncode == 2 and "other options" in r.stderr and "points_per_side" in r.stderr, r.stderr
    held = tmp_path / "held"
    r = subprocess.run([ray_python, "-c", textwrap.dedent(f"""
        import fcntl, os, subprocess, sys
        os.makedirs({str(held)!r}, exist_ok=True)
        lock = open(os.path.join({str(held)!r}, ".samfast-dataset.lock"), "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run([sys.executable, {str(HERE / "run_dataset.py")!r}, "everything", "--input",
                            {str(images)!r}, "--output", {str(held)!r}], capture_output=True, text=True)
        print(r.returncode, r.stderr)""")], env=ray_env(samfast_pkg), capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("2 ") and "another samfast-dataset run" in r.stdout, r.stdout + r.stderr
    r = run_dataset(ray_python, samfast_pkg, "--input", str(images), "--output", str(tmp_path / "o2"),
                    "--crop-n-layers", "9")
    assert r.returncode == 2 and "crop_n_layers" in r.stderr, r.stderr
    r = run_dataset(ray_python, samfast_pkg, "--input", str(images), "--output", str(tmp_path / "o3"),
                    "--checkpoint", str(tmp_path / "missing.pth"))
    assert r.returncode == 2 and "checkpoint not found" in r.stderr, r.stderr
    r = run_dataset(ray_python, samfast_pkg, "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o4"))
    assert r.returncode == 2 and "no such file or folder" in r.stderr, r.stderr
    r = run_dataset(ray_python, samfast_pkg, "--input", str(images), "--output", str(tmp_path / "o5"),
                    "--precision", "fp7")  # (was found inside the actors, after options.json recorded it)
    assert r.returncode == 2 and "unknown precision 'fp7'" in r.stderr and not (tmp_path / "o5").exists(), r.stderr
    theirs = tmp_path / "theirs"  # a folder of the user's: refused, and nothing in it touched
    (theirs / "masks").mkdir(parents=True)
    (theirs / "masks" / "keep.png").write_bytes(b"png")
    r = run_dataset(ray_python, samfast_pkg, "--input", str(images), "--output", str(theirs))
    assert r.returncode == 2 and "not samfast-dataset's" in r.stderr, r.stderr
    assert sorted(p.name for p in theirs.rglob("*")) == ["keep.png", "masks"]


def test_a_model_that_does_not_load_fails_in_one_line_and_records_nothing(ray_python, samfast_pkg, tiny_checkpoint,
                                                                          tmp_path):
    """A checkpoint that does not load fails in the actors: one line says why, and the output folder
    keeps no options, so that the run with a good checkpoint is not refused. A finished folder
    refuses another --format (it once said all was done and wrote nothing)."""
    junk, out = tmp_path / "junk.pth", tmp_path / "out"
    junk.write_text("not a checkpoint")
    image = IMAGES / "dog.jpg"
    r = run_dataset(ray_python, samfast_pkg, "--input", str(image), "--output", str(out), "--checkpoint", str(junk),
                    "--gpus", "0", *OPTIONS)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "samfast-dataset: error: the run stopped after 0 images: RuntimeError: checkpoint" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr.splitlines()[-1] and not (out / "options.json").exists()
    good = ["--input", str(image), "--output", str(out), "--checkpoint", str(tiny_checkpoint), "--gpus", "0", *OPTIONS]
    r = run_dataset(ray_python, samfast_pkg, *good)
    assert r.returncode == 0 and "1 done" in r.stdout, r.stdout + r.stderr
    r = run_dataset(ray_python, samfast_pkg, *good, "--format", "json")
    assert r.returncode == 2 and "formats ['parquet'] there, ['json'] now" in r.stderr, r.stderr
    r = run_dataset(ray_python, samfast_pkg, *good)
    assert r.returncode == 0 and "no image to do: 1 of" in r.stdout, r.stdout + r.stderr


def test_parquet_input(ray_python, samfast_pkg, tiny_checkpoint, cli_results, tmp_path):
    """Image files in a Parquet column (id, bytes), JSON out: one not an image, ids that would name
    files outside the output folder (or none), an id of two rows, null bytes; all error rows, the
    dog done. Run again with the junk repaired: the junk is done, the dog skipped, one row each."""
    source, out = tmp_path / "images.parquet", tmp_path / "out"
    victim = tmp_path / "victim.json"
    victim.write_text("the user's")
    hostile = ["../../escape", str(tmp_path / "victim"), "nul\0byte", "z" * 300, "same", "same", "nobytes"]

    def run_with(junk):
        venv_python(ray_python, samfast_pkg, f"""
            import pyarrow as pa, pyarrow.parquet as pq
            dog = open({str(IMAGES / "dog.jpg")!r}, "rb").read()
            ids = ["dog", "junk"] + {hostile!r}
            pq.write_table(pa.table({{"id": ids, "bytes": [dog, {junk}] + [dog] * 6 + [None]}}), {str(source)!r})""")
        return run_dataset(ray_python, samfast_pkg, "--input", str(source), "--output", str(out), "--checkpoint",
                           str(tiny_checkpoint), "--gpus", "0", "--format", "json", *OPTIONS)

    r = run_with('b"junk"')
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 done" in r.stdout and "8 failed" in r.stdout, r.stdout
    for message in ("junk: FAILED: image junk is not a readable image",
                    "../../escape: FAILED: its id '../../escape' cannot name a JSON file",
                    f"{tmp_path}/victim: FAILED: its id", "'nul\\x00byte': FAILED: its id 'nul\\x00byte' cannot name",
                    "FAILED: its id is too long to name a JSON file (305 bytes with .json, the limit is 255)",
                    "same: FAILED: its id 'same' is given to 2 rows of the input (ids must be unique)",
                    "nobytes: FAILED: its bytes are null (no image file)"):
        assert message in r.stderr, (message, r.stderr)
    assert victim.read_text() == "the user's" and not (tmp_path / "escape.json").exists()
    assert sorted(p.name for p in tmp_path.rglob("*.json")) == ["dog.json", "options.json", "victim.json"]
    assert json.loads((out / "json" / "dog.json").read_text()) == cli_results["dog"]
    assert not list((out / "masks").iterdir())

    r = run_with("dog")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 done" in r.stdout and "1 skipped" in r.stdout and "7 failed" in r.stdout, r.stdout
    assert "junk: FAILED" not in r.stderr and "same: FAILED" in r.stderr, r.stderr
    assert json.loads((out / "json" / "junk.json").read_text()) == cli_results["dog"]
    rows = read_parquet(ray_python, samfast_pkg, out / "images")
    assert sorted(r["image_id"] for r in rows) == sorted(["dog", "junk"] + hostile)
    assert {r["image_id"]: r["error"] for r in rows}["junk"] == ""


def test_ids_and_writes(ray_python, samfast_pkg, tmp_path):
    """The helpers where one image could fail the job or write outside the output folder (no Ray):
    a file name that is not UTF-8 and one too long for json/ID.json are error rows, one of 244 bytes
    is written (its temporary too is a legal name); decode_images makes any exception of one image
    its error; a JSON file that cannot be written fails its image alone, without masks rows; the
    next run's done() drops the error rows (redone), and a part of failures with its masks part."""
    out = venv_python(ray_python, samfast_pkg, r"""
        import json, os, numpy as np, pyarrow as pa, pyarrow.parquet as pq
        from samfast import dataset, ray as samfast_ray
        folder = os.environ["FOLDER"]
        os.makedirs(os.path.join(folder, "in"))
        for name in (b"ok.png", b"bad\xff\xfename.png", b"x" * 240 + b".png", b"y" * 251 + b".png"):
            open(os.path.join(folder.encode(), b"in", name), "wb").close()
        listed = dataset.list_images(os.path.join(folder, "in"))
        rows = {r["image_id"]: r for r in dataset.path_rows(listed, set(), json_files=True)}
        assert rows[r"bad\xff\xfename"]["error"] == "its path is not valid UTF-8 (rename the file)", rows
        assert rows[r"bad\xff\xfename"]["path"].endswith(r"in/bad\xff\xfename.png")
        assert "too long to name a JSON file (256 bytes" in rows["y" * 251]["error"], rows
        assert rows["ok"]["error"] == rows["x" * 240]["error"] == ""

        dog = open(os.environ["DOG"], "rb").read()
        decoded = samfast_ray.decode_images({"image_id": np.array(["none", "dog"], object),
                                             "bytes": np.array([None, dog], object)})
        assert decoded["error"][0].startswith("TypeError: ") and decoded["error"][1] == "", decoded["error"]
        assert decoded["image"][1].ndim == 3
        bad = os.path.join(folder, "in", os.fsdecode(b"bad\xff\xfename.png"))
        with open(bad, "wb") as f:  # (in a pipeline of one's own, such a path is read)
            f.write(dog)
        decoded = samfast_ray.decode_images({"image_id": np.array(["bad"], object), "path": np.array([bad], object)})
        assert decoded["error"][0] == "" and decoded["image"][0].shape == (534, 800, 3), decoded["error"]

        out = os.path.join(folder, "out")
        output = dataset.OutputFolder(out, {})
        os.makedirs(os.path.join(out, "json", "blocked.json"))  # (a folder where its JSON file goes)
        record = {"segmentation": {"size": [2, 2], "counts": "04"}, "area": 4, "bbox": [0, 0, 2, 2],
                  "predicted_iou": 0.9, "stability_score": 0.9, "point_coords": [[1.0, 1.0]], "crop_box": [0, 0, 2, 2]}

        def batch(ids, errors):
            n, fine = len(ids), [not e for e in errors]
            return pa.table({"image_id": ids, "path": ids, "error": errors, "width": pa.array([2] * n, pa.int32()),
                             "height": pa.array([2] * n, pa.int32()),
                             "num_masks": pa.array([int(f) for f in fine], pa.int32()),
                             "seconds": [0.1] * n, "finished": [1.0] * n,
                             "records": [json.dumps([record]) if f else "" for f in fine]})

        def parts():
            return [len(os.listdir(os.path.join(out, sub))) for sub in ("images", "masks")]
        long = "x" * 240
        written = dataset.write_results(batch(["a", long, "blocked", "failed"], ["", "", "", "unreadable"]), out,
                                        ["parquet", "json"])
        errors = dict(zip(written.column("image_id").to_pylist(), written.column("error").to_pylist()))
        assert errors == {"a": "", long: "", "blocked": "its JSON file could not be written: Is a directory",
                          "failed": "unreadable"}, errors
        assert sorted(os.listdir(os.path.join(out, "json"))) == ["a.json", "blocked.json", long + ".json"]
        assert pq.read_table(os.path.join(out, "masks")).column("image_id").to_pylist() == ["a", long]
        dataset.write_results(batch(["lost"], ["unreadable"]), out, ["parquet", "json"])
        assert not [n for sub in dataset.SUBFOLDERS for n in os.listdir(os.path.join(out, sub))
                    if n.startswith(dataset.TEMP_PREFIX)]
        assert parts() == [2, 2]

        assert output.done() == {"a", long}
        assert pq.read_table(os.path.join(out, "images")).column("image_id").to_pylist() == ["a", long]
        assert parts() == [1, 1]

        # Parquet inputs without image files, with paths or Hugging Face's Image structs for them, or
        # of two layouts are refused before Ray starts (they once failed inside it, or lost their ids).
        def refused(name, tables, says):
            paths = []
            for i, table in enumerate(tables):
                paths.append(os.path.join(folder, f"{name}-{i}.parquet"))
                pq.write_table(pa.table(table), paths[-1])
            try:
                dataset.parquet_id_counts(paths)
                raise AssertionError(f"{tables} were taken")
            except ValueError as e:
                assert says in str(e), e
        refused("no_bytes", [{"image_id": ["a"], "pixels": [b"x"]}], "no 'bytes' (or 'image') column")
        refused("paths", [{"id": ["a"], "image": ["/a.jpg"]}], "its column 'image' holds string, not image files' bytes")
        refused("hf", [{"id": ["a"], "image": [{"bytes": b"x", "path": "a.jpg"}]}], "holds struct<bytes: binary")
        refused("two", [{"id": ["a"], "bytes": [b"x"]}, {"image_id": ["b"], "bytes": [b"y"]}],
                "names its images by 'image_id' with bytes in 'bytes'")
        good = os.path.join(folder, "good.parquet")
        pq.write_table(pa.table({"id": ["a", "b", "a"], "bytes": [b"x"] * 3}), good)
        assert dataset.parquet_id_counts([good]) == {"a": 2, "b": 1}
        print("checked")""", FOLDER=str(tmp_path), DOG=str(IMAGES / "dog.jpg"))
    assert "checked" in out, out


def test_segment_prompts_in_ray_data(ray_python, samfast_pkg, tiny_checkpoint):
    """samfast.ray.SegmentPrompts in a pipeline of one's own: boxes and points per image, masks as
    COCO RLE equal to SamPredictor's on the same model."""
    out = venv_python(ray_python, samfast_pkg, f"""
        import json, numpy as np, ray, samfast, samfast.ray
        ray.init(num_cpus=2, include_dashboard=False)
        rows = [{{"image_id": "dog", "path": {str(IMAGES / "dog.jpg")!r},
                  "boxes": np.array([[300, 200, 500, 400], [10, 10, 200, 300]], np.float32)}},
                {{"image_id": "groceries", "path": {str(IMAGES / "groceries.jpg")!r},
                  "boxes": np.array([[100, 100, 400, 400], [0, 0, 50, 50]], np.float32)}}]
        ds = (ray.data.from_items(rows).map_batches(samfast.ray.decode_images)
              .map_batches(samfast.ray.SegmentPrompts, batch_size=2, compute=ray.data.ActorPoolStrategy(size=1),
                           fn_constructor_kwargs={{"checkpoint": {str(tiny_checkpoint)!r}, "device": "cpu"}},
                           num_cpus=1))
        got = {{r["image_id"]: json.loads(r["results"]) for r in ds.take_all()}}
        predictor = samfast.SamPredictor(samfast.load({str(tiny_checkpoint)!r}, device="cpu"))
        for row in rows:
            predictor.set_image(samfast.read_image(row["path"]))
            for box, result in zip(row["boxes"], got[row["image_id"]]):
                masks, scores, _ = predictor.predict(box=box, multimask_output=False)
                counts = samfast._samfast.mask_to_coco_rle(np.ascontiguousarray(masks[0], np.uint8))
                assert result["segmentation"]["counts"] == counts, row["image_id"]
                assert result["predicted_iou"] == float(scores[0])
        print("checked", sum(len(v) for v in got.values()))""", OMP_NUM_THREADS="1")  # (the actor's one core)
    assert "checked 4" in out, out


def test_segment_prompts_bad_rows(ray_python, samfast_pkg, tiny_checkpoint):
    """SegmentPrompts (called as Ray calls an actor, without Ray): a row whose prompts cannot be read
    is that row's error, the others of the batch are answered."""
    out = venv_python(ray_python, samfast_pkg, f"""
        import json, numpy as np, samfast, samfast.ray
        image = samfast.read_image({str(IMAGES / "dog.jpg")!r})
        segment = samfast.ray.SegmentPrompts(checkpoint={str(tiny_checkpoint)!r}, device="cpu")
        batch = {{"image_id": np.array(["none", "nan", "fine"], object), "image": [image] * 3,
                  "point_coords": np.array([[[[400, 260]]], [[[400, 260]]], [[[400, 260]]]], object),
                  "point_labels": np.array([None, [[float("nan")]], [[1]]], object)}}
        out = segment(batch)
        assert out["error"][0].startswith("TypeError: "), out["error"]
        assert out["error"][1] and out["error"][2] == "", out["error"]
        assert len(json.loads(out["results"][2])) == 1
        print("checked")""", OMP_NUM_THREADS="1")
    assert "checked" in out, out
