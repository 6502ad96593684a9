"""samfast against the anchors: the JSON lines of `samfast bench` (samfast_bench.jsonl) and of
../shared/bench/anchor_bench.py (anchors.jsonl, from one or more calls) as one table per model, with
samfast's speed as a multiple of each anchor's at the same batch size.

    python3 bench/gpu/ratios.py OUT/samfast_bench.jsonl OUT/anchors.jsonl [more .jsonl ...]

Lines that are not JSON objects of either kind are named on stderr and skipped. A ratio compares
figures from different calls only when the files come from different calls: say so when quoting it.
"""
import json
import sys


def read(paths):
    ours, anchors = [], []
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    d = None
                if isinstance(d, dict) and {"impl", "model", "bs", "img_s"} <= d.keys():
                    anchors.append(d)
                elif isinstance(d, dict) and {"model", "precision", "batch", "img_per_s"} <= d.keys():
                    ours.append(d)
                else:
                    print(f"{path}:{n}: not a samfast bench or anchor line, skipped", file=sys.stderr)
    return ours, anchors


def anchor_name(a):
    impl = {"orig": "upstream segment_anything", "fast": "segment-anything-fast"}.get(a["impl"], a["impl"])
    compiled = a.get("compile", "none")
    return f"{impl} {a.get('dtype', '?')}" + (", eager" if compiled == "none" else f", torch.compile {compiled}")


def table(ours, anchors):
    """The markdown lines: per model and batch size, the anchors, then samfast's precisions with their
    multiples of every anchor of that model and batch."""
    lines = []
    for model, batch in sorted({(d["model"], d["batch"]) for d in ours} | {(a["model"], a["bs"]) for a in anchors}):
        mine = [d for d in ours if d["model"] == model and d["batch"] == batch]
        theirs = [a for a in anchors if a["model"] == model and a["bs"] == batch]
        if not mine or not theirs:
            continue
        lines.append(f"{model}, batch {batch}:")
        lines.append("| implementation | img/s | encoder img/s | peak GiB | " +
                     " | ".join(f"x {anchor_name(a)}" for a in theirs) + " |")
        lines.append("|" + " --- |" * (4 + len(theirs)))
        for a in theirs:
            lines.append(f"| {anchor_name(a)} | {a['img_s']:.2f} | {a.get('enc_img_s', float('nan')):.2f} | "
                         f"{a.get('peak_GiB', float('nan')):.2f} |" + " |" * len(theirs))
        for d in mine:
            ratios = " | ".join(f"{d['img_per_s'] / a['img_s']:.2f}x" for a in theirs)
            lines.append(f"| samfast {d['precision']} | {d['img_per_s']:.2f} | {d.get('encoder_img_per_s', float('nan')):.2f} | "
                         f"{d.get('peak_gib', float('nan')):.2f} | {ratios} |")
        lines.append("")
    return lines


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        ours, anchors = read(argv[1:])
    except OSError as e:
        print(f"ratios.py: {e}", file=sys.stderr)
        return 1
    lines = table(ours, anchors)
    if not lines:
        print("ratios.py: no model and batch size has both samfast and anchor figures", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
