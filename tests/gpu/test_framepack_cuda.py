"""FramePack's section loop on the GPU through the transformer's block engines, as FramePack
runs it: the model in bf16 on CUDA (or on the CPU with FramePack's low-VRAM DynamicSwapInstaller
streaming each weight to the GPU as it is read), latents and embeddings on the GPU, history
latents (fp32) and index tensors on the CPU. Four AOTInductor piece engines of tiny random
weights, built in bf16 on CUDA over a 640 bucket range; against diffusers' eager model on the
same GPU in bf16."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import build_cuda_blocks, load_transformer
from framepack_reference import DynamicSwapInstaller, framepack_forward
from tests_helpers import framepack_loop, rel_l2

from framepack_trt.framepack import use_engines

#: Engine against eager, both bf16, a whole loop (the CPU test measured 1.5e-3 to 2.1e-3).
TOL = 5e-3


@pytest.fixture(scope="module")
def cuda_blocks(tmp_path_factory):
    return build_cuda_blocks(tmp_path_factory.mktemp("cuda-blocks"))


# 544x704 (latent 68x88) and 416x960 (52x120): FramePack's buckets.
@pytest.mark.parametrize(("f1", "h", "w", "teacache"), [(False, 68, 88, None), (True, 68, 88, None),
                                                       (False, 52, 120, 0.15), (True, 52, 120, 0.3)],
                         ids=["inverted", "f1", "inverted-teacache", "f1-teacache"])
def test_framepack_loop_on_cuda(cuda_blocks, f1, h, w, teacache):
    cache, weights = cuda_blocks
    model = load_transformer(weights, "cuda")
    kw = dict(h=h, w=w, steps=4 if teacache else 2, teacache_thresh=teacache, device="cuda")
    runs: list[bool] = []
    if teacache:  # eager: FramePack's own forward with TeaCache, on diffusers' modules
        model.forward = functools.partial(framepack_forward, model, runs)
    try:
        with torch.no_grad():
            want = framepack_loop(model, f1, framepack_names=bool(teacache), **kw)
    finally:
        model.__dict__.pop("forward", None)
    engines = use_engines(cache, strict=True, transformer=model)
    try:
        with torch.no_grad():
            got = framepack_loop(model, f1, framepack_names=True, **kw)
        counts = engines.counts()
        stack = dict(engines.swaps["transformer"].stack)
    finally:
        engines.restore()
    calls = 3 * kw["steps"]
    assert counts == {"transformer": {"engine": calls, "eager": 0}}
    if teacache:
        assert stack.get("block_stack", 0) == sum(runs) and len(runs) == calls
    print(f"\n{'f1' if f1 else 'inverted'} {h}x{w} teacache={teacache}: rel L2 {rel_l2(got, want):.2e}"
          f", block stack runs {stack}")
    assert rel_l2(got, want) < TOL


def test_low_vram_streaming_to_cuda(cuda_blocks):
    """FramePack's low-VRAM mode: the model stays on the CPU and DynamicSwapInstaller moves each
    weight to the GPU as it is read; the engines run on the GPU with the weights so read."""
    cache, weights = cuda_blocks
    with torch.no_grad():
        want = framepack_loop(load_transformer(weights, "cuda"), True, framepack_names=False, h=68, w=88,
                              device="cuda")
    model = load_transformer(weights, "cpu")
    DynamicSwapInstaller.install_model(model, device="cuda")
    engines = use_engines(cache, strict=True, transformer=model)
    try:
        with torch.no_grad():
            got = framepack_loop(model, True, framepack_names=True, h=68, w=88, device="cuda")
        counts = engines.counts()
    finally:
        engines.restore()
        DynamicSwapInstaller.uninstall_model(model)
    assert counts == {"transformer": {"engine": 6, "eager": 0}}
    assert next(model.parameters()).device.type == "cpu"
    print(f"\nlow-VRAM streaming: rel L2 {rel_l2(got, want):.2e}")
    assert rel_l2(got, want) < TOL
