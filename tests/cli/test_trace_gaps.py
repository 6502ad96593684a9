"""bench/gpu/trace_gaps.py: a bench trace's decodes (cut after each post-processing kernel), their span,
kernel time and the gaps where no kernel runs, and where the largest gaps are."""
import json
import subprocess
import sys

from conftest import SOURCE

SCRIPT = SOURCE / "bench" / "gpu" / "trace_gaps.py"


def run(trace):
    return subprocess.run([sys.executable, str(SCRIPT), str(trace)], capture_output=True, text=True, timeout=60)


def decode(t, prompts=16):
    """A decode's kernels from time t (us): two GEMMs 1 us apart, 7 us idle, the attention, the
    upscaling on `prompts` prompts, 9 us idle, post-processing. Returns the events and the end."""
    events = []
    for name, dur, gap in (("gemm", 4, 1), ("gemm", 4, 7), ("attention", 10, 1), ("upscale_masks_kernel<__half>", 60, 9),
                           ("postprocess_kernel<__half>", 45, 0)):
        grid = [4, 8, prompts] if name.startswith("upscale") else [1, 1, 1]
        events.append({"name": f"void samfast::(anonymous namespace)::{name}(args)", "cat": "kernel", "ts": t,
                       "dur": dur, "args": {"grid": grid}})
        t += dur + gap
    return events, t


def test_spans_gaps_and_where_they_are(tmp_path):
    events = [{"name": "encoder", "cat": "kernel", "ts": 0, "dur": 1000, "args": {"grid": [132, 1, 1]}}]
    t = 1020  # after the encoder's 1000 us, 20 us idle: not counted (an encoder ran in between)
    for prompts in (16, 1, 16, 16):  # a one-prompt predict between the bench's decodes is left out
        more, t = decode(t, prompts)
        events += more
        t += 18  # idle before the next decode
    events.append({"name": "memcpy", "cat": "memcpy", "ts": 5, "dur": 3})  # not a kernel
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    p = run(trace)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == ("3 decodes of 16 prompts, medians: span 141.0 us, kernels 123.0 us (5 launches), idle in "
                        "gaps < 5 us 2.0, >= 5 us 16.0; idle before the decode's first kernel 18.0 us")
    assert lines[1].split() == "9.0 us a decode (1.0 gaps, median 9.0) after upscale_masks_kernel<__half> before "\
        "postprocess_kernel<__half>".split()
    assert lines[2].split() == "7.0 us a decode (1.0 gaps, median 7.0) after gemm before attention".split()


def test_a_trace_without_decodes_says_so(tmp_path):
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": decode(0, prompts=4)[0]}))
    p = run(trace)
    assert p.returncode != 0 and "no decode of 16 prompts" in p.stderr
