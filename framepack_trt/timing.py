"""How this project times a call and reads a process's memory: one definition for
``framepack-trt bench`` and the measurement scripts (scripts/bench/), so that every number in
docs/benchmarks.md is taken the same way.

- ``call_ms``: one call's wall time; on CUDA it waits for the device (``synchronize``), so the
  time covers the GPU's work, not only its launch.
- ``median_ms``: the median of N calls after warm-up.
- ``paired_median_ms``: two callables timed alternately (a, b, a, b, ...), each warmed up
  first, so that a drift in the machine's speed (clocks, other load) falls on both alike: how
  eager and engine are compared.
- ``rss_bytes``: this process's resident memory now (from /proc; 0 where there is none).

Nothing here imports the rest of the package; torch is imported only to synchronize CUDA.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Warm-up runs until at least this long has passed (clocks up, caches and autotuning done).
WARMUP_S = 0.5


def call_ms(fn: Callable[..., Any], inputs: Sequence[Any] = (), cuda: bool = False) -> float:
    """One call ``fn(*inputs)``: its wall time in ms (on CUDA, until the device is done)."""
    import torch

    start = time.perf_counter()
    fn(*inputs)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def median_ms(fn: Callable[..., Any], inputs: Sequence[Any], warmup: int, iters: int,
              cuda: bool) -> float:
    """Median ms of ``iters`` calls after ``warmup`` untimed ones (and at least WARMUP_S
    seconds of them when ``warmup`` is not 0)."""
    return paired_median_ms(fn, fn, inputs, warmup, iters, cuda)[0]


def paired_median_ms(a: Callable[..., Any], b: Callable[..., Any], inputs: Sequence[Any],
                     warmup: int, iters: int, cuda: bool) -> tuple[float, float]:
    """Median ms of ``a`` and of ``b``, timed alternately (a, b, a, b, ...) so that a drift in
    the machine's speed (clocks, other load) falls on both alike. Each is first warmed up for
    ``warmup`` calls and at least WARMUP_S seconds (no warm-up at all when ``warmup`` is 0)."""
    for fn in (a, b):
        start, n = time.perf_counter(), 0
        while n < warmup or (warmup and time.perf_counter() - start < WARMUP_S):
            call_ms(fn, inputs, cuda)
            n += 1
    samples_a, samples_b = [], []
    for _ in range(iters):
        samples_a.append(call_ms(a, inputs, cuda))
        samples_b.append(call_ms(b, inputs, cuda))
    return statistics.median(samples_a), statistics.median(samples_b)


def rss_bytes() -> int:
    """This process's resident set size in bytes, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")
