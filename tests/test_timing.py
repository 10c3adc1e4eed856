"""framepack_trt.timing on real torch calls on the CPU: what each helper returns and in which
order it calls; no assertion on how long anything takes."""

from __future__ import annotations

import torch

from framepack_trt import timing


def matmul(x, log=None, label=None):
    if log is not None:
        log.append(label)
    return x @ x


def test_call_ms_times_one_call():
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    calls = []
    ms = timing.call_ms(matmul, (x, calls, "a"))
    assert isinstance(ms, float) and ms > 0
    assert calls == ["a"]


def test_median_ms_runs_warmup_then_iters():
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    calls = []
    ms = timing.median_ms(matmul, (x, calls, "a"), warmup=0, iters=5, cuda=False)
    assert isinstance(ms, float) and ms > 0
    # no warm-up with warmup=0; the pair (fn, fn) is timed, so fn runs twice per iteration
    assert len(calls) == 2 * 5
    calls.clear()
    assert timing.median_ms(matmul, (x, calls, "a"), warmup=2, iters=3, cuda=False) > 0
    # at least 2 warm-up calls for each side of the pair, then 3 timed calls each
    assert len(calls) >= 2 + 2 + 2 * 3


def test_paired_median_ms_warms_each_up_then_alternates():
    x = torch.randn(96, 96, generator=torch.Generator().manual_seed(2))
    calls = []
    a_ms, b_ms = timing.paired_median_ms(lambda: matmul(x, calls, "a"),
                                         lambda: matmul(x, calls, "b"), (), warmup=1, iters=4,
                                         cuda=False)
    assert isinstance(a_ms, float) and isinstance(b_ms, float) and a_ms > 0 and b_ms > 0
    timed = calls[-8:]
    assert timed == ["a", "b"] * 4
    warm = calls[:-8]
    # a's warm-up (at least one call and WARMUP_S seconds), then b's
    assert warm and warm == sorted(warm) and warm.count("a") >= 1 and warm.count("b") >= 1


def test_rss_bytes_sees_this_process_touch_memory():
    before = timing.rss_bytes()
    assert before > 0  # the suite runs on Linux: /proc/self/statm exists
    held = torch.ones(64 * 2**20)  # 256 MiB of float32, every page written
    after = timing.rss_bytes()
    assert after - before >= 128 * 2**20, (before, after)
    assert held.sum() > 0
