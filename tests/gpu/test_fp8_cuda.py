"""fp8 block engines (``quantize: fp8``) on a card with fp8 (compute capability 8.9 or later):
the tiny transformer's four piece engines built with AOTInductor on CUDA in bf16, the two block
engines with fp8 linears, each checked at build time against the eager bf16 block (rel L2
<= 2e-2, cosine >= 0.999, at every bucket of its range); then FramePack's section loop through
them against diffusers' eager model in bf16."""

from __future__ import annotations

import gc
import json

import pytest
import torch
from conftest import build_cuda_blocks, cli, load_transformer
from tests_helpers import framepack_loop, rel_l2

from framepack_trt.framepack import EngineFallback, use_engines
from framepack_trt.transformer.fp8 import fp8_unsupported_reason

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
    with torch.no_grad():
        want = framepack_loop(model, f1, framepack_names=False, **kw)
    engines = use_engines(cache, strict=True, transformer=model)
    try:
        with torch.no_grad():
            got = framepack_loop(model, f1, framepack_names=True, **kw)
        counts = engines.counts()
        picked = [p for p, _ in engines.swaps["transformer"]._piece_pick.values()]
    finally:
        engines.restore()
    assert counts == {"transformer": {"engine": 6, "eager": 0}}
    assert {e.component for pick in picked for e in pick.values()} >= {
        "transformer_dual_block_fp8", "transformer_single_block_fp8"}
    err = rel_l2(got, want)
    print(f"\nfp8 blocks, {'f1' if f1 else 'inverted'} {h}x{w}: rel L2 {err:.2e} against eager bf16")
    assert 0 < err < TOL


def test_offload_bf16_moves_the_replaced_weights_to_the_cpu_and_back(fp8_blocks):
    """``use_engines(..., offload_bf16=True)``: after the first call through the fp8 block
    engines, the bf16 weights of the quantized linears are on the CPU (the same Parameters),
    and the GPU holds their bytes less than with the option off; a call no engine covers moves
    them back, runs eager (equal to the model's own forward) and turns the option off for good,
    with a warning; ``restore()`` moves them back too."""
    from framepack_trt.transformer import fp8_placement
    from framepack_trt.transformer.fp8 import replaced_names

    cache, weights = fp8_blocks
    model = load_transformer(weights, "cuda")
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]

    def parked_names(b):  # TeaCache reads the first block's modulation linear: it stays
        return [n for n in replaced_names(b) if not (b is blocks[0] and n == "norm1.linear")]

    replaced = [b.get_submodule(n).weight for b in blocks for n in parked_names(b)]
    replaced_bytes = sum(w.numel() * w.element_size() for w in replaced)
    kw = dict(f1=True, steps=2, device="cuda")
    with torch.no_grad():
        want = framepack_loop(model, h=52, w=52, framepack_names=False, **kw)
        want_small = framepack_loop(model, h=32, w=32, framepack_names=False, **kw)
    engines = use_engines(cache, transformer=model)  # the option off: both copies on the GPU
    try:
        with torch.no_grad():
            got = framepack_loop(model, h=52, w=52, framepack_names=True, **kw)
        gc.collect()
        kept = torch.cuda.memory_allocated()
    finally:
        engines.restore()
    assert all(w.device.type == "cuda" for w in replaced)
    del got
    engines = use_engines(cache, offload_bf16=True, transformer=model)
    try:
        with torch.no_grad():
            got = framepack_loop(model, h=52, w=52, framepack_names=True, **kw)
        gc.collect()
        parked = torch.cuda.memory_allocated()
        assert all(w.device.type == "cpu" for w in replaced)
        now = [blk.get_submodule(n).weight for blk in blocks for n in parked_names(blk)]
        assert all(a is b for a, b in zip(replaced, now, strict=True))  # the same Parameters
        with pytest.warns(UserWarning, match="offload_bf16 is off from now on: a call ran "
                          "eager"), torch.no_grad():
            # latent 32 < 52; diffusers' names: the eager fallback is diffusers' own forward
            got_small = framepack_loop(model, h=32, w=32, framepack_names=False, **kw)
        assert all(w.device.type == "cuda" for w in replaced)
        with torch.no_grad():
            again = framepack_loop(model, h=52, w=52, framepack_names=True, **kw)
        assert all(w.device.type == "cuda" for w in replaced)  # the option is off now
        counts = engines.counts()
    finally:
        engines.restore()
    assert all(w.device.type == "cuda" for w in replaced)
    assert not any(b in fp8_placement._QUANTIZED for b in blocks)  # restore() dropped the fp8 copies
    assert counts == {"transformer": {"engine": 12, "eager": 6}}
    print(f"\noffload_bf16: GPU allocated {kept / 2**20:.2f} -> {parked / 2**20:.2f} MiB "
          f"(bf16 weights moved: {replaced_bytes / 2**20:.2f} MiB)")
    assert kept - parked >= 0.95 * replaced_bytes
    assert 0 < rel_l2(got, want) < TOL and 0 < rel_l2(again, want) < TOL
    assert torch.equal(got_small, want_small)


def test_low_vram_mode_places_the_fp8_copies_with_the_blocks(fp8_blocks, monkeypatch):
    """FramePack's low-VRAM mode: the model on the CPU under DynamicSwapInstaller, before each
    of two sections the start of the model (the input side and the first dual-stream block)
    moved to the GPU as FramePack's memory-preserving move does, all of it moved off after.
    The fp8 copies become buffers of the blocks' linears: the linears FramePack put on the GPU
    run from their copies there with their bf16 weights on the CPU (the modulation linear
    TeaCache reads excepted), copies of other blocks come to the GPU within the bytes that
    freed, nothing is quantized again in the second section, both sections match eager bf16,
    a call that runs eager first gets every bf16 weight back where FramePack put it (and drops
    the host tensors the swaps kept), and restore() leaves no buffers and every weight where
    FramePack put it."""
    from framepack_reference import DynamicSwapInstaller

    from framepack_trt.transformer import fp8, fp8_placement

    cache, weights = fp8_blocks
    model = load_transformer(weights, "cuda")
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    kw = dict(f1=True, steps=2, sections=1, device="cuda", h=52, w=52)
    with torch.no_grad():
        want = framepack_loop(model, framepack_names=False, **kw)
    model.to("cpu")
    torch.cuda.empty_cache()
    made = []
    plain = fp8_placement.quantize_block
    monkeypatch.setattr(fp8_placement, "quantize_block",
                        lambda block: made.append(block) or plain(block))

    def linears():
        return [(b, n, b.get_submodule(n)) for b in blocks for n in fp8.replaced_names(b)]

    def on_gpu(t):
        return t is not None and t.device.type == "cuda"

    DynamicSwapInstaller.install_model(model, device="cuda")
    engines = use_engines(cache, strict=True, transformer=model)
    outs, placed, unplaced, kept, dropped = [], [], [], [], []
    try:
        for _ in range(2):
            for m in model.modules():  # FramePack's move, up to the second dual-stream block
                if m is model.transformer_blocks[1]:
                    break
                if "weight" in m._parameters:
                    m.to("cuda")
            planned = sum(lin._parameters["weight"].nbytes for _, _, lin in linears()
                          if on_gpu(lin._parameters["weight"]))
            with torch.no_grad():
                outs.append(framepack_loop(model, framepack_names=True, **kw))
            placed.append([(b, n, on_gpu(lin._parameters["weight"]),
                            on_gpu(lin._buffers.get("quantized_weight")),
                            sum(t.nbytes for t in (lin._parameters["weight"],
                                                   *lin._buffers.values()) if on_gpu(t)))
                           for b, n, lin in linears()])
            placed[-1].append(planned)
            # The swapped bf16 weights' host tensors are kept (fp8_placement._HOST): the weight's own.
            kept.append(all(fp8_placement._HOST.get(lin._parameters["weight"]) is not None
                            and fp8_placement._HOST.get(lin._parameters["weight"])[1].data_ptr()
                            == lin._parameters["weight"].data_ptr()
                            for b, n, lin in linears()
                            if b is model.transformer_blocks[0] and n != "norm1.linear"))
            # A call no engine covers runs eager (strict: raises): first, every bf16 weight
            # back where FramePack put it, and the copies off the GPU.
            with pytest.raises(EngineFallback), torch.no_grad():
                framepack_loop(model, framepack_names=True, **{**kw, "h": 32, "w": 32})
            unplaced.append([(b, on_gpu(lin._parameters["weight"]),
                              on_gpu(lin._buffers.get("quantized_weight")))
                             for b, _, lin in linears()])
            # Back on the GPU, a weight keeps no host tensor (FramePack's move off would
            # otherwise leave two host copies of it).
            dropped.append(not any(fp8_placement._HOST.get(lin._parameters["weight"]) is not None
                                   for _, _, lin in linears()))
            model.to("cpu")  # FramePack moves it off before decoding
            torch.cuda.empty_cache()
    finally:
        engines.restore()
        DynamicSwapInstaller.uninstall_model(model)
    first = model.transformer_blocks[0]
    for rows in placed:
        planned = rows.pop()
        for b, n, bf16_gpu, copy_gpu, _ in rows:
            if b is first:  # FramePack put it on the GPU: the copy there, bf16 off
                assert copy_gpu and bf16_gpu == (n in ("norm1.linear",)), n
            else:
                assert not bf16_gpu, n
        assert any(copy_gpu for b, _, _, copy_gpu, _ in rows if b is not first)  # promoted
        assert sum(r[4] for r in rows) <= planned  # never more than FramePack's placement
    for rows in unplaced:
        assert all(bf16_gpu == (b is first) and not copy_gpu for b, bf16_gpu, copy_gpu in rows)
    assert len(made) == len(blocks)  # once per block, not again in the second section
    assert kept == [True, True] and dropped == [True, True]
    assert not any(lin._buffers for _, _, lin in linears())
    assert all(lin._parameters["weight"].device.type == "cpu" for _, _, lin in linears())
    assert not any(b in fp8_placement._PARKED for b in blocks)
    assert all(0 < rel_l2(o, want) < TOL for o in outs)
