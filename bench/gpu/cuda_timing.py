"""GPU time of a callable between CUDA events, for the bench/gpu option scripts."""
import torch


def timed(fn, runs):
    """Median ms of `runs` calls of fn after three warm-ups, each call between two CUDA events."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(runs):
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]
