"""``framepack-trt bench --framepack``: FramePack's own worker (this repository's copy of
demo_gradio.py) makes a video eagerly and through the cache's engines, each in a fresh
process; and what it refuses, in one line each (exit 2)."""

from __future__ import annotations

import pytest
import torch
from conftest import cli


def one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_bad_input_is_one_clear_line(built_cache, tmp_path):
    _, cache = built_cache  # one SigLIP engine: no transformer engine
    (tmp_path / "not-framepack").mkdir()
    line = one_error_line(cli("bench", "--framepack", "--cache-dir", str(cache),
                              "--framepack-dir", str(tmp_path / "not-framepack")))
    assert line.endswith("not a FramePack checkout, it has no demo_gradio.py and no "
                         "diffusers_helper/"), line
    line = one_error_line(cli("bench", "--framepack", "--cache-dir", str(cache)))
    assert "no transformer engine that can run here" in line and str(cache) in line
    line = one_error_line(cli("bench", "--framepack", "--cache-dir", str(cache),
                              "--bucket", "544by704"))
    assert "--bucket 544by704: HEIGHTxWIDTH" in line
    line = one_error_line(cli("bench", "--framepack", "--cache-dir", str(cache),
                              "--script", "demo.py"))
    assert "--script demo.py: FramePack's apps are demo_gradio.py, demo_gradio_f1.py" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's refusal")
def test_a_vram_budget_needs_a_gpu(worker_engines):
    line = one_error_line(cli("bench", "--framepack", "--cache-dir", str(worker_engines),
                              "--vram-budget", "24"))
    assert line == "error: --vram-budget: FramePack's low-VRAM mode needs a CUDA GPU; this " \
                   "machine has none"
