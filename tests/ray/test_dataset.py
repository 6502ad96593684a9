"""samfast-dataset and samfast.ray on a local Ray (started by the command, two CPU actors) with the
tiny synthetic checkpoint: results equal `samfast everything`'s on the same images, unreadable
images become error rows, a crashed actor is restarted and its batch redone with every result
written once, an interrupted batch is redone on the next run and a finished folder is skipped."""
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
    failing = len(set(redo) & {"broken", "notes"})
    assert r.returncode == (1 if failing else 0), r.stdout + r.stderr
    assert f"{len(redo) - failing} done" in r.stdout and f"{5 - len(redo)} skipped" in r.stdout, r.stdout
    assert (out / "masks" / "notes.txt").read_text() == "the user's"
    (out / "masks" / "notes.txt").unlink()
    check_output(ray_python, samfast_pkg, out, cli_results)
    assert not list(out.glob("*/.samfast-tmp-*"))

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    r = run_dataset(ray_python, samfast_pkg, *args)
    assert r.returncode == 0 and "all 5 images are done" in r.stdout, r.stdout + r.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


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
    theirs = tmp_path / "theirs"  # a folder of the user's: refused, and nothing in it touched
    (theirs / "masks").mkdir(parents=True)
    (theirs / "masks" / "keep.png").write_bytes(b"png")
    r = run_dataset(ray_python, samfast_pkg, "--input", str(images), "--output", str(theirs))
    assert r.returncode == 2 and "not samfast-dataset's" in r.stderr, r.stderr
    assert sorted(p.name for p in theirs.rglob("*")) == ["keep.png", "masks"]


def test_parquet_input(ray_python, samfast_pkg, tiny_checkpoint, cli_results, tmp_path):
    """Image files in a Parquet column (id, bytes), one of them not an image; JSON out."""
    source = tmp_path / "images.parquet"
    venv_python(ray_python, samfast_pkg, f"""
        import pyarrow as pa, pyarrow.parquet as pq
        dog = open({str(IMAGES / "dog.jpg")!r}, "rb").read()
        pq.write_table(pa.table({{"id": ["dog", "junk"], "bytes": [dog, b"junk"]}}), {str(source)!r})""")
    out = tmp_path / "out"
    r = run_dataset(ray_python, samfast_pkg, "--input", str(source), "--output", str(out), "--checkpoint",
                    str(tiny_checkpoint), "--gpus", "0", "--format", "json", *OPTIONS)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "junk: FAILED" in r.stderr and "image junk is not a readable image" in r.stderr, r.stderr
    assert json.loads((out / "json" / "dog.json").read_text()) == cli_results["dog"]
    assert not list((out / "masks").iterdir())
    r = run_dataset(ray_python, samfast_pkg, "--input", str(source), "--output", str(out), "--checkpoint",
                    str(tiny_checkpoint), "--gpus", "0", "--format", "json", *OPTIONS)
    assert r.returncode == 0 and "0 done" in r.stdout and "2 skipped" in r.stdout, r.stdout + r.stderr


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
