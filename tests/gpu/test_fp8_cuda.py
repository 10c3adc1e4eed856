"""fp8 block engines (``quantize: fp8``) on a card with fp8 (compute capability 8.9 or later):
the tiny transformer's four piece engines built with AOTInductor on CUDA in bf16, the two block
engines with fp8 linears, each checked at build time against the eager bf16 block (rel L2
<= 2e-2, cosine >= 0.999, at every bucket of its range); then FramePack's section loop through
them against diffusers' eager model in bf16."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_cuda_blocks, cli, load_transformer
from tests_helpers import framepack_loop, rel_l2

from framepack_trt.fp8 import fp8_unsupported_reason
from framepack_trt.framepack import use_engines

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or fp8_unsupported_reason("cuda") is not None,
    reason="needs a CUDA card with fp8 (compute capability 8.9 or later)")

#: A whole loop of fp8 blocks against eager bf16 (each block engine is checked at 2e-2).
TOL = 5e-2


@pytest.fixture(scope="module")
def fp8_blocks(tmp_path_factory):
    return build_cuda_blocks(tmp_path_factory.mktemp("fp8-blocks"), quantize="fp8")


def test_list_shows_the_fp8_engines(fp8_blocks):
    cache, _ = fp8_blocks
    rows = json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)["entries"]
    assert sorted(r["component"] for r in rows) == [
        "transformer_dual_block_fp8", "transformer_input", "transformer_output",
        "transformer_single_block_fp8"]
    assert all(r["status"] == "ok" for r in rows)


@pytest.mark.parametrize(("f1", "h", "w"), [(False, 68, 88), (True, 52, 120)])
def test_framepack_loop_through_fp8_blocks(fp8_blocks, f1, h, w):
    cache, weights = fp8_blocks
    model = load_transformer(weights, "cuda")
    kw = dict(h=h, w=w, steps=2, device="cuda")
    with torch.inference_mode():
        want = framepack_loop(model, f1, framepack_names=False, **kw)
    engines = use_engines(cache, strict=True, transformer=model)
    try:
        with torch.inference_mode():
            got = framepack_loop(model, f1, framepack_names=True, **kw)
        counts = engines.counts()
        picked = [p for p, _ in engines.swaps["transformer"]._piece_pick.values()]
    finally:
        engines.restore()
    assert counts == {"transformer": {"engine": 6, "eager": 0}}
    assert {e["component"] for pick in picked for e in pick.values()} >= {
        "transformer_dual_block_fp8", "transformer_single_block_fp8"}
    err = rel_l2(got, want)
    print(f"\nfp8 blocks, {'f1' if f1 else 'inverted'} {h}x{w}: rel L2 {err:.2e} against eager bf16")
    assert 0 < err < TOL
