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


def traced_decode(t, corr):
    """A decode as samfast's traces hold it, from the previous one's end at t (us): 2 us of the host's
    own work, then cudaMemcpyAsync (t+2..t+8) queuing a 3 us upload at t+9, cudaGraphLaunch (t+9..t+14)
    queuing the kernels from t+18 (6 us idle, but queued); the post-processing queued by
    cudaLaunchKernel 3 us after the upscaling ends, the host having spent 2 of them in
    cudaEventQuery. Per decode: idle 9 + 6 + 18 (the kernels' gaps) = 33 us, of which 2 + 3 waited on
    the host (3 its own work, 2 cudaEventQuery)."""
    ev = [{"name": "cudaMemcpyAsync", "cat": "api", "ts": t + 2, "dur": 6, "args": {"correlation": corr}},
          {"name": "memcpy HtoD", "cat": "memcpy", "ts": t + 9, "dur": 3, "args": {"correlation": corr}},
          {"name": "cudaGraphLaunch", "cat": "api", "ts": t + 9, "dur": 5, "args": {"correlation": corr + 1}}]
    kernels, end = decode(t + 18)
    for e in kernels:
        e["args"]["correlation"] = corr + 1
    upscale_end = kernels[-2]["ts"] + kernels[-2]["dur"]
    kernels[-1]["args"]["correlation"] = corr + 2
    ev += kernels
    ev += [{"name": "cudaEventQuery", "cat": "api", "ts": upscale_end + 0.5, "dur": 2, "args": {"correlation": corr + 3}},
           {"name": "cudaLaunchKernel", "cat": "api", "ts": upscale_end + 3, "dur": 2, "args": {"correlation": corr + 2}}]
    return ev, end


def test_copies_and_the_gpu_waiting_on_the_host(tmp_path):
    events, t = [], 0
    for d in range(3):  # the first decode has no previous end: two windows
        more, t = traced_decode(t, 10 * d)
        events += more
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    p = run(trace)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("with copies"))
    assert lines[i] == ("with copies, from the previous decode's end (2 decodes, medians): copies 3.0 us "
                        "(memcpy HtoD 3.0); no kernel or copy running 33.0 us, of which 5.0 with nothing queued "
                        "(the GPU waiting on the host)")
    assert lines[i + 1].split() == "host meanwhile 3.0 us a decode in its own work (no CUDA call)".split()
    assert lines[i + 2].split() == "host meanwhile 2.0 us a decode in cudaEventQuery".split()
    assert len(lines) == i + 3
