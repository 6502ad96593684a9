"""Where a `samfast bench --trace` run's decodes leave the GPU without a kernel: the timeline is cut
after each post-processing kernel, so that a piece is one decode (its kernels, then its
post-processing); for the pieces whose mask upscaling ran on 16 prompts (the bench's decodes), the
span from the piece's first kernel start to its post-processing's end, the kernels' time in it, and
its idle time split into gaps under and over 5 us, and the kernels around the gaps over 5 us that add
up most (a gap that no kernel fills: a copy, or the GPU waiting on the host).
Where the trace also holds the copies and the CUDA runtime calls (samfast's traces do), a second
account of each decode from the previous one's end: the copies' time, the time with neither a kernel
nor a copy running, how much of it had nothing queued (the call that queued the next GPU work had
not begun: the GPU waited on the host), and what the host was doing meanwhile, by runtime call.
Usage: python3 trace_gaps.py TRACE.json [--prompts 16]
"""
import argparse
import collections
import json
import statistics


def short(name):
    return name.replace("void ", "").replace("samfast::", "").replace("(anonymous namespace)::", "").split("(")[0][:48]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--prompts", type=int, default=16)
    args = ap.parse_args()
    everything = json.load(open(args.trace))["traceEvents"]
    events = sorted((e for e in everything if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    windows = []  # each counted decode's (start, end): from the previous piece's end
    pieces, cur = [], []
    for e in events:
        cur.append(e)
        if "postprocess" in e["name"]:
            pieces.append(cur)
            cur = []
    rows = []
    where = collections.defaultdict(list)
    prev_end = None
    for p in pieces:
        ups = [e for e in p if "upscale_masks" in e["name"]]
        end_of_last = prev_end
        prev_end = p[-1]["ts"] + p[-1]["dur"]
        if not ups or ups[0].get("args", {}).get("grid", [0, 0, 0])[-1] != args.prompts:
            continue
        # the decode's own kernels: from the first after the previous piece's post-processing,
        # skipping an encoder that ran in between (a kernel longer than 500 us starts a new piece)
        start = 0
        for i, e in enumerate(p):
            if e["dur"] > 500:
                start = i + 1
        k = p[start:]
        span = k[-1]["ts"] + k[-1]["dur"] - k[0]["ts"]
        busy = sum(e["dur"] for e in k)
        gaps = [b["ts"] - (a["ts"] + a["dur"]) for a, b in zip(k, k[1:])]
        for a, b, g in zip(k, k[1:], gaps):
            if g >= 5:
                where[(short(a["name"]), short(b["name"]))].append(g)
        lead = k[0]["ts"] - end_of_last if end_of_last is not None and start == 0 else 0.0
        rows.append((span, busy, sum(g for g in gaps if g < 5), sum(g for g in gaps if g >= 5), len(k), lead))
        if start == 0 and end_of_last is not None:
            windows.append((end_of_last, prev_end))
    if not rows:
        raise SystemExit(f"no decode of {args.prompts} prompts in the trace")
    med = [statistics.median(r[i] for r in rows) for i in range(6)]
    print(f"{len(rows)} decodes of {args.prompts} prompts, medians: span {med[0]:.1f} us, kernels {med[1]:.1f} us "
          f"({med[4]:.0f} launches), idle in gaps < 5 us {med[2]:.1f}, >= 5 us {med[3]:.1f}; "
          f"idle before the decode's first kernel {med[5]:.1f} us")
    for (a, b), gs in sorted(where.items(), key=lambda kv: -sum(kv[1]))[:6]:
        print(f"  {sum(gs) / len(rows):6.1f} us a decode ({len(gs) / len(rows):.1f} gaps, median {statistics.median(gs):.1f}) "
              f"after {a} before {b}")

    host_account(everything, windows)


def host_account(everything, windows):
    """Copies, idle time and the host's part in it over each window (see the module's doc); medians
    over the windows, so that a predict's download between the bench's decodes does not count."""
    api = {e["args"]["correlation"]: e for e in everything if e.get("cat") == "api"}
    if not api or not windows:
        return
    ops = sorted((e for e in everything if e.get("cat") in ("kernel", "memcpy", "memset")), key=lambda e: e["ts"])
    calls = sorted(api.values(), key=lambda e: e["ts"])
    per = []  # per window: Counter of copies by kind, idle, waited, host time by call ("" outside calls)
    for w0, w1 in windows:
        copies, host = collections.Counter(), collections.Counter()
        inside = [e for e in ops if w0 <= e["ts"] < w1]
        for e in inside:
            if e["cat"] != "kernel":
                copies[e["name"]] += e["dur"]
        t, idle, waited = w0, 0.0, 0.0
        for e in inside:
            if e["ts"] > t:
                idle += e["ts"] - t
                call = api.get(e.get("args", {}).get("correlation"))
                if call and call["ts"] > t:  # nothing was queued from t until that call began
                    w_end = min(call["ts"], e["ts"])
                    waited += w_end - t
                    covered = 0.0
                    for c in calls:
                        lo, hi = max(c["ts"], t), min(c["ts"] + c["dur"], w_end)
                        if hi > lo:
                            host[c["name"]] += hi - lo
                            covered += hi - lo
                    host[""] += (w_end - t) - covered
            t = max(t, e["ts"] + e["dur"])
        per.append((copies, idle, waited, host))

    def med(f):
        return statistics.median(f(p) for p in per)

    kinds = sorted({k for p in per for k in p[0]})
    copy_text = ", ".join(f"{k} {med(lambda p: p[0][k]):.1f}" for k in kinds) or "none"
    print(f"with copies, from the previous decode's end ({len(per)} decodes, medians): copies "
          f"{med(lambda p: sum(p[0].values())):.1f} us ({copy_text}); no kernel or copy running {med(lambda p: p[1]):.1f} us, "
          f"of which {med(lambda p: p[2]):.1f} with nothing queued (the GPU waiting on the host)")
    names = {k for p in per for k in p[3]}
    for name, v in sorted(((n, med(lambda p: p[3][n])) for n in names), key=lambda kv: -kv[1])[:6]:
        if v > 0:
            print(f"  host meanwhile {v:6.1f} us a decode in {name or 'its own work (no CUDA call)'}")


if __name__ == "__main__":
    main()
