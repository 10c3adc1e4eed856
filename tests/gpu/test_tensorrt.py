"""TensorRT backend on a GPU: build the tiny encoders, load them in a fresh process, verify
against eager across the dynamic range, refuse shapes outside it, report partial conversion.
Skipped without CUDA or torch_tensorrt."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import cli, write_profile

from framepack_trt.backends import get_backend

reason = get_backend("tensorrt").unavailable_reason("cuda")
pytestmark = pytest.mark.skipif(reason is not None, reason=f"tensorrt backend: {reason}")

NAMES = ("clip_text", "llama_text", "siglip_image")


@pytest.fixture(scope="module")
def trt_cache(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("trt")
    dims = {"clip_text": {"batch": {"min": 1, "opt": 1, "max": 3}},
            # text_len static: a dynamic one fails torch.export on CUDA with torch 2.11
            # (tests/components covers a dynamic text_len on the CPU).
            "llama_text": {"batch": {"min": 1, "opt": 1, "max": 3}, "text_len": 48},
            "siglip_image": {"batch": {"min": 1, "opt": 2, "max": 3}}}
    p = write_profile(root / "trt.yaml", [
        {"component": n, "source": {"path": str(tiny_weights[n])}, "dtype": "float16",
         "dims": dims[n]} for n in NAMES], backend="tensorrt", device="cuda")
    r = cli("build", "--profile", str(p), "--cache-dir", str(root / "cache"), check=True)
    assert "3 built, 0 cached, 0 failed" in r.stdout, r.stdout
    return p, root / "cache"


def test_build_list_and_verify_in_fresh_processes(trt_cache):
    _, cache = trt_cache
    rows = json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)["entries"]
    assert sorted(e["name"] for e in rows) == sorted(NAMES)
    for e in rows:
        assert e["status"] == "ok" and e["engine"].endswith(".trt.pt2")
        assert "edition" in e["backend_version"] and "TensorRT" in e["backend_version"]
    quick = json.loads(cli("verify", "--cache-dir", str(cache), "--json", check=True).stdout)
    assert quick["passed"]
    full = json.loads(cli("verify", "--cache-dir", str(cache), "--full", "--seed", "1", "--json",
                          check=True).stdout)
    assert full["passed"]
    for engine in full["engines"]:
        for case in engine["cases"]:
            for o in case["outputs"]:
                assert o["rel_l2"] <= 1e-2 and o["cosine"] >= 0.999, (engine["name"], case)


def test_dynamic_range_and_out_of_range_in_fresh_process(trt_cache):
    """A new process loads the .ep engine (no export, no eager weights) and runs it at every
    batch size of its range; a batch past the range is refused with a clear error."""
    _, cache = trt_cache
    script = textwrap.dedent(f"""
        import sys, torch
        from framepack_trt.cache import Cache
        from framepack_trt.errors import ShapeError
        from framepack_trt.runtime.loading import load_engine
        from framepack_trt.runtime.selection import find_engine
        cache = Cache({str(cache)!r})
        x = lambda b: torch.randn(b, 3, 32, 32, device="cuda", dtype=torch.float16)
        entry = find_engine(cache, "siglip_image", [x(1)])
        engine = load_engine(cache, entry)
        assert "transformers" not in sys.modules  # no eager model was loaded
        for b in (1, 2, 3):
            (out,) = engine(x(b))
            assert out.shape[0] == b and torch.isfinite(out).all(), b
        try:
            engine(x(4))
        except ShapeError as exc:
            print("refused:", exc)
        raw = engine._engine
        try:
            raw(x(4))
            print("raw engine accepted batch 4")
        except Exception as exc:
            print("raw refused:", type(exc).__name__)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: siglip_image: batch=4 is outside the engine's range 1..3" in proc.stdout
    assert "raw refused:" in proc.stdout, proc.stdout


def test_partial_conversion_is_reported(tmp_path, tiny_weights):
    p = write_profile(tmp_path / "p.yaml", [{
        "component": "siglip_image", "source": {"path": str(tiny_weights["siglip_image"])},
        "dtype": "float16",
        "build": {"torch_executed_ops": ["aten.scaled_dot_product_attention",
                                         "aten._scaled_dot_product_flash_attention",
                                         "aten._scaled_dot_product_efficient_attention",
                                         "aten._scaled_dot_product_cudnn_attention"]}}],
        backend="tensorrt", device="cuda")
    r = cli("build", "--profile", str(p), "--cache-dir", str(tmp_path / "c"), check=True)
    assert "partial conversion" in r.stdout and "left to PyTorch" in r.stdout, r.stdout
    assert "attention" in r.stdout
    cli("verify", "--cache-dir", str(tmp_path / "c"), "--full", check=True)


def test_transformer_engine_all_buckets_dynamic_text(tmp_path, tiny_weights):
    """The tiny-config FramePack transformer through TensorRT: one engine over the 640 latent
    range with a dynamic text length (diffusers' x[:, :-text] splits rewritten for
    torch_tensorrt), checked against diffusers at min, opt, max, a random shape and every 640
    bucket, at build time and again by `verify --full` in a fresh process.

    TensorRT-RTX 1.4 computes this graph wrong in most processes (docs/tensorrt-rtx.md): on an
    idle H200, 12 to 15 of the 18 cases of `verify --full --seed 0` at rel L2 2.5e-2 to 4e-2
    against float32 (eager fp16: 6.4e-4) in 7 of 7 fresh processes, whatever the index layout
    or offset; right everywhere in 3 processes that ran while the GPU was busy. The outcome is
    the runtime's choice of kernels, not the inputs. So either the build refuses the engine
    (nothing cached, the failing case named, exit 1), or, where it computed right in the check,
    `verify --full` in a fresh process must pass too. Both outcomes are asserted."""
    p = write_profile(tmp_path / "tx.yaml", [
        {"component": "transformer", "engines": "whole",
         "source": {"path": str(tiny_weights["transformer"])},
         # float16: a tiny random config in bfloat16 sits near the 1e-2 tolerance on its own
         # (rel L2 up to 3.3e-2 seen on an H100); the real-width bf16 engine is at 2e-3 to
         # 3.5e-3 (docs/benchmarks.md). This test is about the graph: slices and dynamic dims.
         "dtype": "float16", "dims": {"latent_height": {"min": 52, "opt": 68, "max": 120},
                                      "latent_width": {"min": 52, "opt": 88, "max": 120},
                                      "text_len": {"min": 1, "opt": 64, "max": 256}}}],
        backend="tensorrt", device="cuda")
    cache = tmp_path / "cache"
    r = cli("build", "--profile", str(p), "--cache-dir", str(cache), "--json")
    (res,) = json.loads(r.stdout)["results"]
    # the rewrite happened (and was needed: see graph_passes)
    assert any("slice bound(s)" in n for n in res["notes"]), res
    listed = json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)
    print(f"transformer engine: {res['outcome']} {res['error'][:300]}")  # shown with -s
    if res["outcome"] == "failed":
        assert r.returncode == 1, r.stderr[-3000:]
        assert "does not match eager at the sizes of verify --full" in res["error"], res
        assert re.search(r"(bucket \d+x\d+|min|opt|max|random) \{", res["error"]), res
        assert listed["entries"] == [] and not any((cache / "engines").glob("*")), listed
        assert not any((cache / "golden").glob("*")), listed
        return
    assert res["outcome"] == "built" and r.returncode == 0, res
    full = json.loads(cli("verify", "--cache-dir", str(cache), "--full", "--seed", "2", "--json",
                          check=True).stdout)
    assert full["passed"]
    cases = full["engines"][0]["cases"]
    assert [c["case"] for c in cases][:4] == ["min", "opt", "max", "random"]
    assert len(cases) == 4 + 14
    for case in cases:
        for o in case["outputs"]:
            assert o["rel_l2"] <= 1e-2 and o["cosine"] >= 0.999, case
