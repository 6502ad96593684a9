"""A run's figures as the results file that bench/chart.py draws (bench/results/*.json): from the
folder bench/gpu/run.sh wrote (device.txt, samfast_bench.jsonl, anchors.jsonl), samfast's rounded as
BENCHMARKS.md's table gives them, batch 8 only (the table's and the chart's batch).

    python3 bench/gpu/results.py OUT [--commit C] [-o RESULTS.json]

The commit defaults to .whl/commit.txt (bench/gpu/prepare.sh writes the build's there); the date is
the run's. run.sh calls this after its bench and anchors steps, then draws OUT/chart.png where
matplotlib is installed.
"""
import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ratios import read  # noqa: E402  (the JSON lines of both kinds, parsed once)

SAMFAST_KEYS = ("model", "precision", "batch", "prompts", "runs", "img_per_s", "encoder_img_per_s",
                "decode_prompts_ms", "peak_gib")
ANCHOR_KEYS = ("impl", "model", "dtype", "bs", "compile", "prompts", "img_s", "enc_img_s", "peak_GiB")


def rounded(key, value):
    if not isinstance(value, float):
        return value
    if key.startswith("decode"):
        return round(value, 3)
    if key.startswith("peak"):
        return round(value, 2)
    return round(value, 1 if value >= 10 else 2)


def device_and_date(path):
    """device.txt: nvidia-smi's 'name, memory, driver' line, then the run's UTC time."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected the GPU's line and the date")
    fields = [f.strip() for f in lines[0].split(",")]
    if len(fields) != 3:
        raise ValueError(f"{path}: expected 'name, memory, driver', got {lines[0]!r}")
    return f"{fields[0]} ({fields[1]}, driver {fields[2]})", lines[1].strip()[:10]


def results(out_dir, commit):
    device, date = device_and_date(out_dir / "device.txt")
    ours, anchors = read([out_dir / "samfast_bench.jsonl", out_dir / "anchors.jsonl"])
    ours = [{k: rounded(k, d[k]) for k in SAMFAST_KEYS if k in d} for d in ours if d["batch"] == 8]
    # (anchor_bench.py rounds its own figures)
    anchors = [{k: a[k] for k in ANCHOR_KEYS if k in a} for a in anchors if a["bs"] == 8]
    if not ours or not anchors:
        raise ValueError(f"{out_dir}: no batch-8 figures of samfast or of the anchors")
    return {"device": device, "date": date, "commit": commit, "command": "bench/gpu/run.sh bench anchors",
            "source": "bench/gpu/results.py of the run's samfast_bench.jsonl and anchors.jsonl",
            "samfast": ours, "anchors": anchors}


def dumps(r):
    """As bench/results/*.json are laid out: a line a figure."""
    head = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in r.items() if not isinstance(v, list)]
    lists = [f"  {json.dumps(k)}: [\n" + ",\n".join(f"    {json.dumps(d)}" for d in v) + "\n  ]"
             for k, v in r.items() if isinstance(v, list)]
    return "{\n" + "\n".join(head) + "\n" + ",\n".join(lists) + "\n}\n"


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("out", type=pathlib.Path)
    p.add_argument("--commit")
    p.add_argument("-o", "--output", type=pathlib.Path)
    a = p.parse_args(argv[1:])
    commit = a.commit
    if commit is None:
        whl = pathlib.Path(".whl/commit.txt")
        commit = whl.read_text().strip() if whl.is_file() else "unknown"
    try:
        text = dumps(results(a.out, commit))
    except (OSError, ValueError, KeyError) as e:
        print(f"results.py: {e}", file=sys.stderr)
        return 1
    if a.output:
        a.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
