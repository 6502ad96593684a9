"""Where the GPU time of a `samfast bench --trace` run goes: kernels grouped by name and launch grid
(the image encoder's attention launches differ by grid: windowed (tiles, heads, 25 B) and global
(tiles, heads, B)), per timed run, largest first.
Usage: python3 trace_summary.py TRACE.json [--top N] [--runs R] [--split]   (R: the bench's --runs, to divide by)
--split: a kernel whose launches of one grid fall into two clearly apart durations (the persistent
windowed attention kernel has one grid, an SM's worth of blocks, for the bench's batch-1 and batch-8
encoders alike) is listed as two rows, "[short]" and "[long]".
"""
import argparse
import collections
import json


def short_name(name):
    for junk in ("(anonymous namespace)::", "samfast::", "cuda::", "void "):
        name = name.replace(junk, "")
    return name.split("(")[0][:64]


def split_point(durations, ratio=2.0):
    """The duration that separates two groups of launches whose durations differ by more than `ratio`
    at their widest gap (sorted neighbours), or None when there is no such gap."""
    d = sorted(durations)
    best = None
    for lo, hi in zip(d, d[1:]):
        if lo > 0 and hi / lo > ratio and (best is None or hi / lo > best[1] / best[0]):
            best = (lo, hi)
    return None if best is None else (best[0] + best[1]) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--runs", type=float, default=1.0)
    ap.add_argument("--split", action="store_true", help="split bimodal launch durations of one kernel and grid")
    args = ap.parse_args()
    events = [e for e in json.load(open(args.trace))["traceEvents"] if e.get("cat") == "kernel"]
    launches = collections.defaultdict(list)
    for e in events:
        launches[(short_name(e["name"]), tuple(e.get("args", {}).get("grid", [])))].append(e["dur"])
    total, count = collections.Counter(), collections.Counter()
    for (name, grid), durs in launches.items():
        cut = split_point(durs) if args.split else None
        for d in durs:
            key = (name if cut is None else name[:55] + (" [short]" if d < cut else " [long]"), grid)
            total[key] += d
            count[key] += 1
    all_us = sum(total.values())
    print(f"all kernels {all_us / 1e3 / args.runs:.3f} ms a run, {len(events) / args.runs:.0f} launches a run")
    print(f"  {'kernel':64s} {'grid':18s} {'calls':>6s} {'ms a run':>9s} {'us a call':>10s} {'share':>6s}")
    for (name, grid), us in total.most_common(args.top):
        n = count[(name, grid)]
        print(f"  {name:64s} {str(grid):18s} {n / args.runs:6.0f} {us / 1e3 / args.runs:9.3f} {us / n:10.1f} "
              f"{100 * us / all_us:5.1f}%")


if __name__ == "__main__":
    main()
