"""PeakMemory samples this process's resident set while a block runs; TensorRTErrors keeps
torch_tensorrt's error log lines (TensorRT's builder messages) and nothing else."""

from __future__ import annotations

import logging

import numpy as np

from framepack_trt.backends.tensorrt import TensorRTErrors
from framepack_trt.memory import PeakMemory


def test_peak_host_memory_sees_a_transient_allocation():
    with PeakMemory(cuda=False, interval=0.01) as before:
        pass
    with PeakMemory(cuda=False, interval=0.01) as during:
        block = np.random.default_rng(0).random(2**30 // 8 * 3 // 4)  # 0.75 GiB, touched
        block.sum()
        del block
    base, peak = before.peaks(), during.peaks()
    assert peak.gpu_used_gib is None and peak.gpu_torch_gib is None
    assert peak.host_gib >= base.host_gib + 0.5, (base, peak)
    assert set(peak.to_dict()) == {"peak_host_gib"}
    assert "host RSS" in peak.describe()


def test_tensorrt_errors_collects_only_torch_tensorrt_errors():
    with TensorRTErrors() as errors:
        logging.getLogger("torch_tensorrt [TensorRT Conversion Context]").error(
            "ISliceLayer size elements must be non-negative")
        logging.getLogger("torch_tensorrt.dynamo").warning("a warning")
        logging.getLogger("somebody.else").error("not ours")
    logging.getLogger("torch_tensorrt").error("after the block")
    assert errors.messages == ["ISliceLayer size elements must be non-negative"]
