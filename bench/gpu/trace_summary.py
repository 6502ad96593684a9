"""Where the GPU time of a `samfast bench --trace` run goes: kernels grouped by name and launch grid
(the image encoder's attention launches differ by grid: windowed (tiles, heads, 25 B) and global
(tiles, heads, B)), per timed run, largest first.
Usage: python3 trace_summary.py TRACE.json [--top N] [--runs R]   (R: the bench's --runs, to divide by)
"""
import argparse
import collections
import json


def short_name(name):
    for junk in ("(anonymous namespace)::", "samfast::", "cuda::", "void "):
        name = name.replace(junk, "")
    return name.split("(")[0][:64]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--runs", type=float, default=1.0)
    args = ap.parse_args()
    events = [e for e in json.load(open(args.trace))["traceEvents"] if e.get("cat") == "kernel"]
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        key = (short_name(e["name"]), tuple(e.get("args", {}).get("grid", [])))
        total[key] += e["dur"]
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
