"""Sums GPU time per kernel from `ncu --csv --metrics gpu__time_duration.sum` output (stdin) and
prints the top kernels with their share: where the time of a samfast run goes. The encoder's attention
kernel is split by grid (windowed and global blocks launch different grids)."""
import collections
import csv
import sys

rows = [r for r in csv.reader(l for l in sys.stdin if l.startswith('"'))]
header, body = rows[0], rows[1:]
name_i, metric_i, value_i, unit_i = (header.index(k) for k in ("Kernel Name", "Metric Name", "Metric Value", "Metric Unit"))
grid_i = header.index("Grid Size") if "Grid Size" in header else None
total, count = collections.Counter(), collections.Counter()
for r in body:
    if r[metric_i] != "gpu__time_duration.sum":
        continue
    scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[r[unit_i]]
    name = r[name_i].split("(")[0][:64]
    if grid_i is not None and "rel_pos_attention" in name:
        name += " grid " + r[grid_i]
    total[name] += float(r[value_i].replace(",", "")) * scale
    count[name] += 1
all_us = sum(total.values())
print(f"{'kernel':80s} {'calls':>6s} {'total ms':>9s} {'share':>6s}")
for name, us in total.most_common(int(sys.argv[1]) if len(sys.argv) > 1 else 20):
    print(f"{name:80s} {count[name]:6d} {us / 1e3:9.2f} {100 * us / all_us:5.1f}%")
print(f"{'all kernels':80s} {sum(count.values()):6d} {all_us / 1e3:9.2f}")
