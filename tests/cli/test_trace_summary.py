"""bench/gpu/trace_summary.py: kernels of a Chrome trace by name and grid, and --split of one grid's
launches into two groups of clearly different durations."""
import json
import subprocess
import sys

from conftest import SOURCE

SCRIPT = SOURCE / "bench" / "gpu" / "trace_summary.py"


def kernel(name, grid, dur):
    return {"name": f"void samfast::cuda::(anonymous namespace)::{name}(args)", "cat": "kernel", "dur": dur,
            "args": {"grid": grid}}


def run(trace, *extra):
    p = subprocess.run([sys.executable, str(SCRIPT), str(trace), "--runs", "2", *extra], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def rows(out):
    """{(name, grid): (calls a run, us a call)} of the table rows."""
    table = {}
    for line in out.splitlines()[2:]:
        head, grid_and_rest = line.split("(", 1)
        grid, rest = grid_and_rest.split(")", 1)
        nums = rest.split()
        table[(head.strip(), grid.replace(" ", ""))] = (float(nums[0]), float(nums[2]))
    return table


def test_groups_by_name_and_grid_and_splits_bimodal_launches(tmp_path):
    events = [kernel("window<64>", [132, 1, 1], d) for d in (40.0, 41.0, 250.0, 252.0)]
    events += [kernel("global<64>", [32, 12, 8], 1600.0), kernel("global<64>", [32, 12, 1], 230.0)]
    events += [kernel("gemm", [2, 66, 1], d) for d in (100.0, 120.0)]  # within 2x: never split
    events.append({"name": "memcpy", "cat": "memcpy", "dur": 5.0})
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))

    out = run(trace)
    assert out.startswith("all kernels 1.317 ms a run, 4 launches a run")
    table = rows(out)
    assert table[("window<64>", "132,1,1")] == (2.0, 145.8)
    assert table[("gemm", "2,66,1")] == (1.0, 110.0)
    assert table[("global<64>", "32,12,8")][1] == 1600.0 and table[("global<64>", "32,12,1")][1] == 230.0

    table = rows(run(trace, "--split"))
    assert table[("window<64> [short]", "132,1,1")] == (1.0, 40.5)
    assert table[("window<64> [long]", "132,1,1")] == (1.0, 251.0)
    assert table[("gemm", "2,66,1")] == (1.0, 110.0)
    assert ("window<64>", "132,1,1") not in table
