"""GPU tests: marked ``gpu``; skipped cleanly without CUDA (and, for TensorRT, without
torch_tensorrt). Run them with ``make gpu-test`` on a GPU machine."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    import torch

    for item in items:
        if "tests/gpu" in str(item.fspath):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)"))
