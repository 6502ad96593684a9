"""bench/gpu/ncu_source_summary.py: Nsight Compute's source page (CSV) of one or more kernels as an
instruction mix, the most sampled instructions with their stall reasons, and shared-memory excess."""
import csv
import subprocess
import sys

from conftest import SOURCE

SCRIPT = SOURCE / "bench" / "gpu" / "ncu_source_summary.py"
HEADER = ["Address", "Source", "Warp Stall Sampling (All Samples)", "Instructions Executed",
          "L1 Wavefronts Shared Excessive", "L1 Wavefronts Shared", "stall_barrier", "stall_math",
          "stall_barrier (Not Issued)"]


def write_page(path, kernels):
    """kernels: [(name, [row, ...])], rows in HEADER's order, as ncu --page source --csv writes them."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        for name, rows in kernels:
            w.writerow(["Kernel Name", name, ""])
            w.writerow(HEADER)
            w.writerows(rows)


def run(path, *extra):
    p = subprocess.run([sys.executable, str(SCRIPT), str(path), *extra], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_mix_stalls_and_shared_memory_excess_per_kernel(tmp_path):
    attention = [
        ["0x10", "FADD R1, R2, R3", "10", "300", "0", "0", "2", "8", "0"],
        ["0x20", "@P0 FADD R4, R5, R6", "5", "100", "0", "0", "0", "5", "0"],
        ["0x30", "MUFU.EX2 R1, R1", "60", "100", "0", "0", "0", "60", "0"],
        ["0x40", "LDGSTS.E.BYPASS.128 [R1], desc[UR4][R2.64]", "25", "100", "2800", "3200", "25", "0", "0"],
    ]
    other = [["0x10", "HGMMA.64x64x16.F32.BF16 R0, R8, gdesc[UR4]", "4", "1,000", "0", "0", "0", "4", "0"]]
    page = tmp_path / "source.csv"
    write_page(page, [("void attention<64>(Args)", attention), ("void other(Args)", other)])

    out = run(page, "--top", "3")
    first, second = out.split("== void other(Args)")
    assert first.startswith("== void attention<64>(Args)\n600 warp instructions executed, 100 stall samples")
    mix = {line.split()[0]: line.split()[1:] for line in first.splitlines() if line.startswith("  ") and "%" in line
           and line.split()[0].isalpha()}
    assert mix["FADD"] == ["66.7%", "15.0%"]  # a predicated FADD counts as FADD
    assert mix["MUFU"] == ["16.7%", "60.0%"]
    lines = first.splitlines()
    top = lines[lines.index("most sampled instructions (share of samples, leading stall reasons):") + 1]
    assert top.split()[0] == "60.00%" and "MUFU.EX2" in top and top.endswith("math 100%")
    assert any("LDGSTS" in line and line.endswith("barrier 100%") for line in lines)
    excess = lines[lines.index("most excess shared-memory wavefronts (wavefronts an execution: all / ideal):") + 1]
    assert excess.split()[:3] == ["32.0", "/", "4.0"] and "LDGSTS" in excess
    # the second kernel on its own: its thousands separator read as a number, no excess section
    assert "1,000 warp instructions executed, 4 stall samples" in second
    assert "excess" not in second
