"""Where one kernel's warps wait, instruction by instruction: a summary of Nsight Compute's source page
(`ncu -i REPORT --page source --csv --print-source sass > SOURCE.csv`, a report taken with --set full).
Prints the instruction mix by opcode (share of executed instructions and of stall samples), the
instructions with the most stall samples and their leading stall reasons, and those with the most
excess shared-memory wavefronts (bank conflicts, or cp.async writes split by their global sectors).
Usage: python3 ncu_source_summary.py SOURCE.csv [--top N]
"""
import argparse
import collections
import csv


def number(text):
    try:
        return float(text.replace(",", ""))
    except (AttributeError, ValueError):
        return 0.0


def opcode(sass):
    words = sass.split()
    if words and words[0].startswith("@"):  # predicate
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def kernels(path):
    """(kernel name, rows as dicts) for each kernel of the source page."""
    name, header, rows = None, None, []
    for row in csv.reader(open(path, newline="")):
        if row and row[0] == "Kernel Name":
            if header:
                yield name, rows
            name, header, rows = row[1], None, []
        elif row and row[0] == "Address":
            header = row
        elif header and len(row) == len(header):
            rows.append(dict(zip(header, row)))
    if header:
        yield name, rows


def summarize(name, rows, top):
    samples = "Warp Stall Sampling (All Samples)"
    executed = sum(number(r["Instructions Executed"]) for r in rows)
    sampled = sum(number(r[samples]) for r in rows) or 1.0
    stalls = [h for h in rows[0] if h.startswith("stall_") and "Not Issued" not in h]
    print(f"== {name[:120]}\n{executed:,.0f} warp instructions executed, {sampled:,.0f} stall samples")
    mix_n, mix_s = collections.Counter(), collections.Counter()
    for r in rows:
        mix_n[opcode(r["Source"])] += number(r["Instructions Executed"])
        mix_s[opcode(r["Source"])] += number(r[samples])
    print("opcode      instructions  samples")
    for op, n in mix_n.most_common(top):
        print(f"  {op:10s} {100 * n / executed:9.1f}% {100 * mix_s[op] / sampled:8.1f}%")
    print("most sampled instructions (share of samples, leading stall reasons):")
    for r in sorted(rows, key=lambda r: -number(r[samples]))[:top]:
        reasons = sorted(((number(r[h]), h[len("stall_"):]) for h in stalls), reverse=True)[:3]
        why = ", ".join(f"{h} {n / max(number(r[samples]), 1):.0%}" for n, h in reasons if n > 0)
        print(f"  {100 * number(r[samples]) / sampled:5.2f}%  {r['Source'].strip()[:70]:70s}  {why}")
    excess = "L1 Wavefronts Shared Excessive"
    if excess in rows[0]:
        worst = [r for r in sorted(rows, key=lambda r: -number(r[excess])) if number(r[excess]) > 0][:top]
        if worst:
            print("most excess shared-memory wavefronts (wavefronts an execution: all / ideal):")
        for r in worst:
            n = max(number(r["Instructions Executed"]), 1)
            ideal = number(r["L1 Wavefronts Shared"]) - number(r[excess])
            print(f"  {number(r['L1 Wavefronts Shared']) / n:6.1f} / {ideal / n:4.1f}  {r['Source'].strip()[:80]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source_csv")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    for name, rows in kernels(args.source_csv):
        if rows:
            summarize(name, rows, args.top)


if __name__ == "__main__":
    main()
