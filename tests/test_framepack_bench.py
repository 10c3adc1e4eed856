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


def test_modules_are_framepacks_names_and_include_the_transformer(worker_engines):
    line = one_error_line(cli("bench", "--framepack", "--cache-dir", str(worker_engines),
                              "--modules", "transformer,unet"))
    assert line == ("error: --modules unet: FramePack's modules are transformer, text_encoder, "
                    "text_encoder_2, image_encoder, vae")
    line = one_error_line(cli("bench", "--framepack", "--cache-dir", str(worker_engines),
                              "--modules", "vae"))
    assert line == "error: --modules: the transformer is what the runs compare; name it too"


def two_section_runs(cache, *options: str) -> list[dict]:
    """``bench --framepack --json`` on ``cache``: two sections of 3 steps, the transformer and
    the VAE on engines; its runs, eager then engines."""
    import json

    from conftest import WORKER_WINDOW

    r = cli("bench", "--framepack", "--cache-dir", str(cache), "--sections", "2", "--steps",
            "3", "--latent-window-size", str(WORKER_WINDOW), "--modules", "transformer,vae",
            *options, "--json", check=True)
    runs = json.loads(r.stdout)["runs"]
    assert [run["mode"] for run in runs] == ["eager", "engines"]
    return runs


def test_a_video_eager_and_through_the_engines(worker_engines):
    """The bench's section mode end to end on the CPU: FramePack's worker (demo_gradio.py, this
    repository's copy) makes a two-section video in a fresh process eagerly and in another
    through the engines of the modules asked for (strict: the transformer and the VAE; the
    text and image encoders eager), on the models the engines were built from; each section
    is timed (and its sampling and VAE decode within it), the latents compared, and the
    engines' counts reported."""
    runs = two_section_runs(worker_engines)
    for run in runs:
        assert len(run["sections_s"]) == 2 and all(s > 0 for s in run["sections_s"])
        # total: attaching plus the sections (each rounded to the millisecond in the JSON)
        assert run["total_s"] == pytest.approx(run["attach_s"] + sum(run["sections_s"]), abs=2e-3)
        assert run["ready_s"] > 0 and run["attach_s"] >= 0
        for section, sample, decode in zip(run["sections_s"], run["sample_s"], run["decode_s"],
                                           strict=True):
            assert 0 < sample and 0 < decode and sample + decode < section
        assert run["high_vram"] and run["depth"] == [2, 2]
        assert len(run["stack_steps"]) == 2 and all(1 <= n <= 3 for n in run["stack_steps"])
    eager, engines = runs
    assert eager["rel_l2"] == [0.0, 0.0]
    assert all(0 < e < 2e-2 for e in engines["rel_l2"])  # bf16 transformer: see test_framepack_worker
    assert engines["stack_steps"] == eager["stack_steps"]  # TeaCache decided alike
    assert all("engines' checkpoint" in where for where in engines["models"].values())
    served = engines["served"]
    assert set(served) == {"transformer", "vae_encode", "vae_decode"}
    assert served["transformer"]["transformer_input"] == 2 * 3  # every call of 3 steps x 2
    assert "0 eager calls" in engines["report"] and "eager calls" not in eager["report"]


def test_a_video_in_low_vram_mode(worker_engines):
    """``--low-vram``: both runs set up as demo_gradio.py sets up a small card (the VAE sliced
    and tiled, FramePack's ``DynamicSwapInstaller`` on the transformer and the LLaMA encoder,
    the worker's own model moves), on the CPU, where FramePack's memory helpers see the host.
    The engines serve the transformer and the VAE's 256-pixel tiles: the start image's encode
    is 12 tile calls at 544x704, and every decoder window 12 more."""
    runs = two_section_runs(worker_engines, "--low-vram")
    for run in runs:
        assert not run["high_vram"] and len(run["sections_s"]) == 2
        assert all(0 < s for s in run["sample_s"] + run["decode_s"])
    eager, engines = runs
    assert all(0 < e < 2e-2 for e in engines["rel_l2"])
    assert engines["stack_steps"] == eager["stack_steps"]
    served = engines["served"]
    assert served["transformer"]["transformer_input"] == 2 * 3
    assert sum(served["vae_encode"].values()) == 12
    decodes = sum(served["vae_decode"].values())
    assert decodes >= 2 * 12 and decodes % 12 == 0, served["vae_decode"]
    assert "0 eager calls" in engines["report"]
