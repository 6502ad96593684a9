"""samfast beside the anchors as a bar chart: predictor throughput (img/s) and peak GPU memory (GiB)
per implementation, for vit_b, vit_l and vit_h (those the results hold), like the chart of the PyTorch
team's SAM post.

    python3 bench/chart.py [RESULTS.json] [-o OUT.png]

RESULTS.json (default bench/results/h100.json, the latest run with anchors; h200.json the one before) holds device, date, commit and command, and two
lists: "samfast", lines of `samfast bench` (samfast_bench.jsonl of bench/gpu/run.sh), and "anchors",
lines of anchor_bench.py (anchors.jsonl), with at least the keys used below. An anchor line with a
"note" comes from another call than samfast's: its bars are hatched. OUT.png defaults to
bench/chart.png. Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
MODELS = ("vit_b", "vit_l", "vit_h")


def compiled(a):
    return a.get("compile", "none") != "none"


# (label, colour, which line): the bars of each model, left to right; the first three are anchors.
VARIANTS = (
    ("upstream SAM fp32", "#9e9e9e", lambda a: a["impl"] == "orig" and not compiled(a)),
    ("segment-anything-fast bf16, eager", "#7fa7d1", lambda a: a["impl"] == "fast" and not compiled(a)),
    ("segment-anything-fast bf16, compiled", "#2f6aa8", lambda a: a["impl"] == "fast" and compiled(a)),
    ("samfast bf16", "#f08c2e", lambda d: d["precision"] == "bf16"),
    ("samfast fp8", "#c2410c", lambda d: d["precision"] == "fp8"),
)


def bars(results):
    """The variants that have batch-8 figures: (label, colour, {model: (img/s, peak GiB, from another call)})."""
    out = []
    for i, (label, colour, match) in enumerate(VARIANTS):
        anchor = i < 3
        rows = [r for r in results["anchors" if anchor else "samfast"]
                if match(r) and r.get("bs" if anchor else "batch") == 8]
        per_model = {}
        for m in MODELS:
            r = next((r for r in rows if r["model"] == m), None)
            if r is not None:
                per_model[m] = ((r["img_s"], r["peak_GiB"], "note" in r) if anchor
                                else (r["img_per_s"], r["peak_gib"], False))
        if per_model:
            out.append((label, colour, per_model))
    return out


def draw(results, out_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = bars(results)
    if not series:
        raise ValueError("no batch-8 figures of samfast or the anchors for " + ", ".join(MODELS))
    models = [m for m in MODELS if any(m in per_model for _, _, per_model in series)]
    fig, axes = plt.subplots(1, 2, figsize=(3.5 + 3.25 * len(models), 4.5), dpi=100)
    width = 0.8 / len(series)
    for ax, (k, title) in zip(axes, ((0, "throughput (img/s, higher is better)"),
                                     (1, "peak GPU memory (GiB, lower is better)"))):
        for i, (label, colour, per_model) in enumerate(series):
            for x, m in enumerate(models):
                if m not in per_model:
                    continue
                value, other_call = per_model[m][k], per_model[m][2]
                pos = x - 0.4 + width * (i + 0.5)
                ax.bar(pos, value, width, color=colour, hatch="//" if other_call else None, edgecolor="white",
                       linewidth=0.5, label=label if m == next(iter(per_model)) else None)  # one legend entry
                text = f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"
                ax.annotate(text, (pos, value), ha="center", va="bottom", fontsize=7, xytext=(0, 1),
                            textcoords="offset points")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(models)), models)
        ax.margins(y=0.1)
        ax.spines[["top", "right"]].set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.95))
    fig.suptitle("SAM predictor: batch 8, 16 single-point prompts an image", fontsize=11, y=0.99)
    note = f"{results['device']}, {results['date']}, samfast commit {results['commit']}, {results['command']}"
    if any(per_model[m][2] for _, _, per_model in series for m in per_model):
        note += ". Hatched: measured in another call on the same machine kind"
    fig.text(0.5, 0.01, note, ha="center", fontsize=7.5, color="#444444")
    fig.tight_layout(rect=(0, 0.04, 1, 0.93))
    fig.savefig(out_path, metadata={"Software": None}, pil_kwargs={"optimize": True})
    plt.close(fig)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("results", nargs="?", default=str(HERE / "results" / "h100.json"))
    p.add_argument("-o", "--out", default=str(HERE / "chart.png"))
    a = p.parse_args(argv[1:])
    try:
        with open(a.results) as f:
            results = json.load(f)
        draw(results, a.out)
    except ImportError as e:
        print(f"chart.py: {e}: install matplotlib (Debian: apt-get install python3-matplotlib)", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"chart.py: {e}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, TypeError) as e:
        what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        print(f"chart.py: {a.results}: {what}", file=sys.stderr)
        return 1
    print(f"chart.py: wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
