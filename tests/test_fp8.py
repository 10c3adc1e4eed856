"""fp8 block engines (``quantize: fp8``, docs/fp8.md) on the CPU: the quantized block against
diffusers' eager bf16 block, the exported engine graph against the quantized block, the
quantized copy's lifetime, and the profile setting with its refusals. Building the engines
needs a card with fp8 (tests/gpu)."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny, write_profile
from tests_helpers import made_entry, rel_l2

from framepack_trt.components.base import get_component
from framepack_trt.errors import BuildError, ProfileError
from framepack_trt.sources import Source, load_model
from framepack_trt.transformer.fp8 import fp8_unsupported_reason, quantized_names
from framepack_trt.transformer.fp8_placement import quantized_block

SIZES = {"latent_frames": 2, "latent_height": 8, "latent_width": 10, "text_len": 12}
FP8 = ("transformer_dual_block_fp8", "transformer_single_block_fp8")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The pieces' tiny config (2 dual + 2 single blocks), saved and loaded back in bf16."""
    root = tmp_path_factory.mktemp("fp8")
    weights = save_tiny("transformer_dual_block_fp8", root / "weights", seed=3)
    return load_model(get_component("transformer_dual_block_fp8"), Source("path", str(weights)),
                      torch.bfloat16, "cpu", root / "cache")


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), 0))


@pytest.mark.parametrize("name", FP8)
def test_fp8_block_matches_eager_bf16_within_its_tolerance(model, name):
    comp = get_component(name)
    gen = torch.Generator().manual_seed(11)
    for index in range(comp.pieces(model.config)):
        raw = comp.make_inputs(model.config, SIZES, torch.bfloat16, "cpu", gen)
        with torch.no_grad():
            want = comp.reference(model, raw, index)  # diffusers' bf16 block
            got = comp.export_module(model)(*comp.engine_inputs(model, raw, torch.bfloat16,
                                                                "cpu", index))
        tol = comp.tolerance("bfloat16")
        for g, w in zip(got, want, strict=True):
            assert g.dtype == torch.bfloat16 and torch.isfinite(g).all()
            assert 0 < rel_l2(g, w) <= tol.rel_l2 and cosine(g, w) >= tol.cosine
            assert (g.float() - w.float()).abs().max() / w.float().std() <= tol.max_abs_std


@pytest.mark.parametrize("name,linears,modulation", [(FP8[0], 12, 2), (FP8[1], 5, 1)])
def test_which_linears_are_quantized(model, name, linears, modulation):
    from framepack_trt.transformer.fp8 import modulation_names

    comp = get_component(name)
    block = comp.quantized(model, 0)
    # The copy: its linears are Fp8Linear and Int8Linear, not nn.Linear.
    assert quantized_names(block) == [] and modulation_names(block) == []
    original = get_component(name.removesuffix("_fp8"))
    source = model.transformer_blocks[0] if "dual" in name else model.single_transformer_blocks[0]
    assert len(quantized_names(source)) == linears
    assert len(modulation_names(source)) == modulation
    specs = {s.name: s for s in comp.weight_specs(model)}
    for n in quantized_names(source):
        assert specs[f"weight.{n}.weight"].dtype == "float8_e4m3fn"
        assert specs[f"weight.{n}.weight_scale"].dtype == "float32"
        assert specs[f"weight.{n}.weight_scale"].shape == (source.get_submodule(n).out_features, 1)
    for n in modulation_names(source):  # int8, one scale per 32 input channels (the tiny
        linear = source.get_submodule(n)  # config's width is 32: one per row)
        assert specs[f"weight.{n}.weight"].dtype == "int8"
        assert specs[f"weight.{n}.weight_scale"].dtype == "float32"
        assert specs[f"weight.{n}.weight_scale"].shape == (linear.out_features,
                                                            linear.in_features // 32)
        assert specs[f"weight.{n}.bias"].dtype == "bfloat16"
    # The norms stay in bf16; the bf16 block is untouched.
    assert all(s.dtype == "bfloat16" for n, s in specs.items()
               if "norm" in n and not n.endswith(("linear.weight", "linear.weight_scale")))
    assert all(p.dtype == torch.bfloat16 for p in source.parameters())
    # + one scale per replaced linear
    assert len(original.weight_specs(model)) == len(specs) - linears - modulation


def test_weights_quantized_in_chunks_equal_the_whole_weight_quantized():
    """Fp8Linear quantizes its weight a few rows at a time (a bounded float32 working copy):
    bit for bit what quantize_rows gives for the whole weight, across chunk ends, for rows of
    very different scales and an all-zero row."""
    from framepack_trt.transformer.fp8 import CHUNK_VALUES, quantize_rows, quantize_weight_rows

    gen = torch.Generator().manual_seed(4)
    rows = CHUNK_VALUES // 96  # per chunk
    n = 2 * rows + 452
    w = torch.randn(n, 96, generator=gen) * torch.exp(2 * torch.randn(n, 1, generator=gen))
    w[rows] = 0
    w = w.to(torch.bfloat16)
    (q, s), (want_q, want_s) = quantize_weight_rows(w), quantize_rows(w)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (n, 1)
    assert torch.equal(q.view(torch.uint8), want_q.view(torch.uint8)) and torch.equal(s, want_s)


def test_int8_linear_against_the_linear():
    """A modulation linear's int8 copy: within half a step of each weight, one scale per 32
    input channels (per row where the width is not a multiple of 32), and its output close to
    the bf16 linear's."""
    from framepack_trt.transformer.fp8 import Int8Linear

    gen = torch.Generator().manual_seed(5)
    for k, groups, outlier in ((96, 3, True), (96, 3, False), (40, 1, False)):
        linear = torch.nn.Linear(k, 64).to(torch.bfloat16)
        with torch.no_grad():  # one channel 20x larger: its group gets coarser steps
            linear.weight.copy_(torch.randn(64, k, generator=gen))
            linear.weight[:, 7] *= 20 if outlier else 1
        q = Int8Linear(linear)
        assert q.weight.dtype == torch.int8 and q.weight_scale.shape == (64, groups)
        w = linear.weight.float()
        step = q.weight_scale.repeat_interleave(k // groups, dim=1)
        assert ((q.dequantized(torch.float32) - w).abs() <= step / 2 + 1e-6).all()
        assert q.weight.abs().amax(dim=1).eq(127).all()  # every row uses the whole range
        x = torch.randn(3, k, generator=gen).to(torch.bfloat16)
        with torch.no_grad():
            err = rel_l2(q(x), linear(x))
        # A 20x input channel coarsens the steps of its group's other weights (per row: of the
        # whole row); docs/fp8.md measures what that does to a block.
        assert 0 < err < (5e-2 if outlier else 1e-2) and q.bias is linear.bias


def test_exported_graph_is_the_quantized_block(model):
    """torch.export of the fp8 engine's module (fp8 weights and scales as inputs) computes what
    the quantized block computes, for another block's weights than the traced one's."""
    from framepack_trt.export import export_component
    from framepack_trt.shapes import DimRange
    from framepack_trt.transformer.pieces import run_block

    comp = get_component(FP8[0])
    dims = {"latent_frames": DimRange(2, 2, 2), "latent_height": DimRange(8, 8, 12),
            "latent_width": DimRange(8, 10, 12), "text_len": DimRange(4, 12, 16)}
    exported = export_component(comp, model, dims, torch.bfloat16, "cpu")
    fp8_inputs = [t for t in exported.inputs if t.dtype == torch.float8_e4m3fn]
    assert len(fp8_inputs) == 12
    assert len([t for t in exported.inputs if t.dtype == torch.int8]) == 2  # the modulation
    raw = comp.make_inputs(model.config, {**SIZES, "latent_height": 12, "text_len": 5},
                           torch.bfloat16, "cpu", torch.Generator().manual_seed(2))
    inputs = comp.engine_inputs(model, raw, torch.bfloat16, "cpu", 1)
    with torch.no_grad():
        got = exported.program.module()(*inputs)
        want = run_block(comp.quantized(model, 1), *raw)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


def test_quantized_copy_is_kept_until_the_weights_change(model):
    block = model.single_transformer_blocks[1]
    first = quantized_block(block)
    assert quantized_block(block) is first
    try:
        with torch.no_grad():  # a LoRA merged in place
            block.proj_mlp.weight.mul_(2)
        second = quantized_block(block)
        assert second is not first
        assert torch.allclose(second.proj_mlp.weight_scale, 2 * first.proj_mlp.weight_scale)
    finally:
        with torch.no_grad():
            block.proj_mlp.weight.div_(2)


def profile_with(tmp_path, device="cuda", **entry):
    return write_profile(tmp_path / "p.yaml", [{
        "component": "transformer", "source": {"random": {"seed": 0}}, "dtype": "bfloat16",
        **entry}], device=device)


def test_profile_quantize_fp8_makes_fp8_block_engines(tmp_path):
    from framepack_trt.profile import load_profile

    comps = {c.name: c for c in load_profile(profile_with(tmp_path, quantize="fp8")).components}
    assert {n: c.component for n, c in comps.items()} == {
        "transformer_input": "transformer_input",
        "transformer_dual_block": "transformer_dual_block_fp8",
        "transformer_single_block": "transformer_single_block_fp8",
        "transformer_output": "transformer_output"}
    assert comps["transformer_dual_block"].tolerance.rel_l2 == 2e-2
    assert comps["transformer_input"].tolerance.rel_l2 == 1e-2
    # A tolerance key of the entry applies over each piece's own defaults.
    comps = {c.name: c for c in load_profile(profile_with(
        tmp_path, quantize="fp8", tolerance={"max_abs_std": 0.5})).components}
    assert (comps["transformer_single_block"].tolerance.rel_l2,
            comps["transformer_single_block"].tolerance.max_abs_std) == (2e-2, 0.5)
    assert (comps["transformer_output"].tolerance.rel_l2,
            comps["transformer_output"].tolerance.max_abs_std) == (1e-2, 0.5)
    # Without quantize, the same entry's keys are those it had before fp8 existed.
    plain = load_profile(profile_with(tmp_path)).components
    assert [c.component for c in plain] == [f"transformer_{p}" for p in
                                            ("input", "dual_block", "single_block", "output")]


def test_whole_transformer_selects_its_fp8_blocks(tmp_path):
    """`-c transformer` (build, verify, purge, list) names the fp8 block engines too."""
    from framepack_trt.profile import load_profile

    profile = load_profile(profile_with(tmp_path, quantize="fp8"))
    assert sorted(c.component for c in profile.select(["transformer"])) == [
        "transformer_dual_block_fp8", "transformer_input", "transformer_output",
        "transformer_single_block_fp8"]


def test_framepack_profile_fp8_lines_uncommented(tmp_path):
    """profiles/framepack.yaml suggests fp8 in two commented lines (docs/fp8.md, With
    FramePack): uncommented as they stand, the transformer's blocks become fp8 block engines
    with pointwise autotuning, and nothing else changes."""
    from pathlib import Path

    from framepack_trt.profile import load_profile

    source = Path(__file__).resolve().parents[1] / "profiles" / "framepack.yaml"
    text = source.read_text()
    lines = ["    # quantize: fp8 ", "    # build: {tune_pointwise: true} "]
    assert all(line in text for line in lines)
    for line in lines:
        text = text.replace(line, line.replace("# ", "", 1) + "#", 1)
    (tmp_path / "framepack.yaml").write_text(text)
    plain, fp8 = load_profile(source), load_profile(tmp_path / "framepack.yaml")
    changed = {c.name: c.component for c in fp8.components}
    assert changed == {c.name: c.component.replace("_block", "_block_fp8")
                       if c.name.startswith("transformer_") and c.name.endswith("_block")
                       else c.component for c in plain.components}
    tuned = {c.name for c in fp8.components if (c.build or {}).get("tune_pointwise")}
    assert tuned == {c.name for c in plain.components if c.name.startswith("transformer_")}


def test_runtime_prefers_the_fp8_blocks():
    from framepack_trt.runtime.transformer_swap import fp8_first

    entries = [made_entry("a", "transformer_dual_block"),
               made_entry("b", "transformer_dual_block_fp8"),
               made_entry("c", "transformer_dual_block")]
    entries.sort(key=fp8_first("dual_block"))
    assert [e.name for e in entries] == ["b", "a", "c"]
    outputs = [made_entry(n, "transformer_output") for n in "xy"]
    outputs.sort(key=fp8_first("output"))
    assert [e.name for e in outputs] == ["x", "y"]


def test_fp8_components_listed_directly_are_checked_too(tmp_path):
    from framepack_trt.profile import load_profile

    path = write_profile(tmp_path / "p.yaml", [{
        "component": FP8[0], "source": {"random": {"seed": 0}}, "dtype": "float16"}],
        device="cpu")
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    text = str(exc.value)
    assert "components[0].component: fp8 block engines compute in bfloat16" in text
    assert "components[0].component: fp8 needs a CUDA card" in text


@pytest.mark.parametrize("entry,device,message", [
    ({"quantize": "fp8"}, "cpu", "fp8 needs a CUDA card of compute capability 8.9"),
    ({"quantize": "fp8", "dtype": "float16"}, "cuda", "dtype is 'float16'"),
    ({"quantize": "fp8", "engines": "whole"}, "cuda", "only a transformer entry with engines: blocks"),
    ({"quantize": "int4"}, "cuda", "valid: fp8"),
])
def test_profile_refuses_fp8_where_it_cannot_run(tmp_path, entry, device, message):
    from framepack_trt.profile import load_profile

    with pytest.raises(ProfileError) as exc:
        load_profile(profile_with(tmp_path, device=device, **entry))
    text = str(exc.value)
    assert "p.yaml" in text and "components[0].quantize" in text and message in text


def test_no_fp8_on_the_cpu_or_without_cuda():
    assert "compute capability 8.9" in fp8_unsupported_reason("cpu")
    if not torch.cuda.is_available():
        assert "no CUDA device" in fp8_unsupported_reason("cuda")
    from framepack_trt.build_plan import check_device
    from framepack_trt.profile import ComponentSpec

    spec = ComponentSpec(name="blocks_dual_block", component=FP8[0], source=Source("random"),
                         dtype="bfloat16", backend="aoti", device="cpu", dims={},
                         tolerance=get_component(FP8[0]).tolerance("bfloat16"))
    with pytest.raises(BuildError, match="blocks_dual_block: quantize: fp8 needs a CUDA card"):
        check_device(spec)


def test_low_vram_streaming_quantizes_once(model):
    """FramePack's low-VRAM mode: with DynamicSwapInstaller installed, every read of a weight
    hands over a new tensor; the quantized copy is still made once, from the stored weights,
    into buffers of the block's own linears (left out of its state dict; the copy keeps only
    their shapes), and the engine's inputs are the same as without the hook. ``place_low_vram``
    (the CPU standing in for the GPU: every linear counts as moved there by FramePack) swaps
    all but the kept linear, and ``release`` leaves the block as it was."""
    from framepack_reference import DynamicSwapInstaller

    from framepack_trt.transformer import fp8, fp8_placement

    comp = get_component(FP8[1])
    block = model.single_transformer_blocks[0]
    plain = comp.weights(model, 0, torch.bfloat16, "cpu")
    fp8_placement._QUANTIZED.pop(block, None)  # quantized again, under the hook
    stored = {n: p for n, p in block.named_parameters()}  # named_parameters: past the hook
    keys = set(block.state_dict())
    # copy=True: every read makes a new tensor, as reading a CPU weight onto a GPU does.
    DynamicSwapInstaller.install_model(model, device="cpu", copy=True)
    try:
        assert block.proj_mlp.weight.data_ptr() != block.proj_mlp.weight.data_ptr()
        first = quantized_block(block)
        assert quantized_block(block) is first
        streamed = comp.weights(model, 0, torch.bfloat16, "cpu")
        buffers = dict(block.named_buffers())
        state_keys = set(block.state_dict())
        swapped, promoted, demoted = fp8_placement.place_low_vram([block], "cpu",
                                                         keep=((0, "norm.linear"),))
        placed = comp.weights(model, 0, torch.bfloat16, "cpu")
        assert quantized_block(block) is first  # swapping changes no stamp: not made again
        fp8_placement.release(block)
        assert not dict(block.named_buffers()) and block not in fp8_placement._PARKED
        assert not any(m._non_persistent_buffers_set for m in block.modules())
    finally:
        DynamicSwapInstaller.uninstall_model(model)
    assert len(streamed) == len(plain)
    assert all(torch.equal(a.float(), b.float()) for a, b in zip(streamed, plain, strict=True))
    assert all(torch.equal(a.float(), b.float()) for a, b in zip(placed, plain, strict=True))
    names = fp8.replaced_names(block)
    assert set(buffers) == {f"{n}.{b}" for n in names
                            for b in (*fp8_placement.ATTACHED.values(), fp8_placement.HOME)}
    assert state_keys == keys
    assert all(t.device.type == "meta" for _, t in first.named_buffers())
    assert (swapped, promoted, demoted) == (len(names) - 1, 0, 0)
    # The copy shares the block's stored parameters (no bf16 weight copied), its fp8 and int8
    # linears hold no bf16 weight at all, and each linear's bias is the stored one.
    copied = dict(first.named_parameters())
    assert all(copied[n] is p for n, p in stored.items() if n in copied)
    assert not any(n.endswith(".weight") and n.rsplit(".", 1)[0] in names for n in copied)
    assert first.proj_mlp.bias is stored["proj_mlp.bias"]


def test_place_low_vram_swaps_each_block_before_quantizing_the_next(model, monkeypatch):
    """At a section's first call every block is quantized: a block's copy is made on the GPU
    when FramePack put the block there, so its bf16 weights must leave before the next block's
    copy is made (else the GPU would hold all the copies beside all the bf16 weights at once).
    The CPU stands in for the GPU: every linear counts as moved there by FramePack."""
    from framepack_reference import DynamicSwapInstaller

    from framepack_trt.transformer import fp8, fp8_placement

    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    events = []
    quantize, move = fp8_placement.quantize_block, fp8_placement._move_weight
    monkeypatch.setattr(fp8_placement, "quantize_block",
                        lambda b: events.append(("quantize", blocks.index(b))) or quantize(b))
    monkeypatch.setattr(fp8_placement, "_move_weight", lambda b, n, d: events.append(
        ("swap", blocks.index(b))) or move(b, n, d))
    for b in blocks:
        fp8_placement._QUANTIZED.pop(b, None)
    DynamicSwapInstaller.install_model(model, device="cpu")
    try:
        swapped, _, _ = fp8_placement.place_low_vram(blocks, "cpu")
        placed = list(events)  # what place_low_vram did (release moves weights back too)
    finally:
        for b in blocks:
            fp8_placement.release(b)
        DynamicSwapInstaller.uninstall_model(model)
    assert swapped == sum(len(fp8.replaced_names(b)) for b in blocks)
    order = [i for kind, i in placed if kind == "quantize"]
    assert order == list(range(len(blocks)))
    for i in range(1, len(blocks)):  # block i-1 swapped entirely before block i is quantized
        q = placed.index(("quantize", i))
        assert ("swap", i - 1) in placed[:q] and ("swap", i - 1) not in placed[q:]


def test_low_vram_copy_is_made_again_when_the_weights_change(model):
    """Low-VRAM mode (on a copy of one block): an in-place merge (``weight.add_``), new
    Parameters (``load_state_dict(assign=True)``) and a cast of the buffers (``.to(dtype)``)
    make the copy again, into the same buffers; a move does not; when FramePack's hook is
    gone, the buffers go and the copy is made as in high-VRAM mode."""
    import copy

    from framepack_reference import DynamicSwapInstaller

    from framepack_trt.transformer import fp8, fp8_placement

    block = copy.deepcopy(model.single_transformer_blocks[0])
    lin = block.proj_mlp
    DynamicSwapInstaller.install_model(block, device="cpu")
    first = quantized_block(block)
    made = lin._buffers["quantized_weight"]
    block.to("cpu")  # a move (to the same device here): not made again
    assert quantized_block(block) is first
    block.to(torch.bfloat16)  # casts every floating buffer, the fp8 weights too: made again
    first = quantized_block(block)
    assert lin._buffers["quantized_weight"].dtype == torch.float8_e4m3fn
    assert torch.equal(lin._buffers["quantized_weight"].float(), made.float())
    with torch.no_grad():
        lin._parameters["weight"].add_(1.0)
    merged = quantized_block(block)
    assert merged is not first and not torch.equal(lin._buffers["quantized_weight"].float(),
                                                   made.float())
    state = {k: v.clone() for k, v in block.state_dict().items()}
    block.load_state_dict(state, assign=True)
    assert quantized_block(block) is not merged
    DynamicSwapInstaller.uninstall_model(block)
    plain = quantized_block(block)
    assert not any(m._buffers for m in block.modules())
    assert isinstance(plain.proj_mlp, fp8.Fp8Linear) and plain.proj_mlp.weight.device.type == "cpu"
    fp8_placement.release(block)


def test_low_vram_swap_reuses_the_host_tensor_until_the_weight_changes(model):
    """Low-VRAM mode, on a copy of one block, the CPU standing in for the GPU: a swap keeps the
    host tensor each bf16 weight goes to. After FramePack moves the block to the GPU again
    (here every tensor cloned: new storage, the same values, as ``m.to`` makes), the next swap
    points each weight at its kept tensor instead of copying it. After a weight changes (a LoRA
    merged in place, through ``.data`` or as a new tensor assigned to ``.data``), the swap
    keeps the changed values, never the stale tensor. When
    FramePack's hook is gone, nothing is kept. (A weight moved back to the GPU drops its kept
    tensor: tests/gpu/test_fp8_cuda.py.)"""
    import copy

    from framepack_reference import DynamicSwapInstaller

    from framepack_trt.transformer import fp8, fp8_placement

    block = copy.deepcopy(model.single_transformer_blocks[0])
    names = fp8.replaced_names(block)
    weights = [block.get_submodule(n)._parameters["weight"] for n in names]
    want = [w.detach().clone() for w in weights]
    DynamicSwapInstaller.install_model(block, device="cpu")
    try:
        assert fp8_placement.place_low_vram([block], "cpu")[0] == len(names)
        hosts = [w.data_ptr() for w in weights]
        block._apply(torch.clone)  # FramePack's move to the GPU
        assert not {w.data_ptr() for w in weights} & set(hosts)
        assert fp8_placement.place_low_vram([block], "cpu")[0] == len(names)
        assert [w.data_ptr() for w in weights] == hosts
        assert all(torch.equal(w, v) for w, v in zip(weights, want, strict=True))

        i = names.index("proj_mlp")
        block._apply(torch.clone)
        with torch.no_grad():
            weights[i].add_(1.0)
        fp8_placement.place_low_vram([block], "cpu")
        assert torch.equal(weights[i], want[i] + 1.0) and weights[i].data_ptr() != hosts[i]
        assert fp8_placement._HOST.get(weights[i])[1].data_ptr() == weights[i].data_ptr()  # kept now
        assert [w.data_ptr() for j, w in enumerate(weights) if j != i] == hosts[:i] + hosts[i + 1:]

        # Merged through ``.data`` (no version counted), in place or as a new tensor, after
        # FramePack's move: the swap keeps the merged values.
        j, k = [n for n in range(len(names)) if n != i][:2]
        block._apply(torch.clone)
        with torch.no_grad():
            weights[j].data += 1.0
            weights[k].data = weights[k].data * 2.0
        fp8_placement.place_low_vram([block], "cpu")
        assert torch.equal(weights[j], want[j] + 1.0) and torch.equal(weights[k], want[k] * 2.0)
    finally:
        DynamicSwapInstaller.uninstall_model(block)
        fp8_placement.release(block)
    assert all(fp8_placement._HOST.get(w) is None for w in weights)


def test_plan_low_vram_never_holds_more_than_framepack_placed():
    """FramePack's low-VRAM sections simulated over 40 linears of random sizes: FramePack moves
    a prefix of them to the GPU (each with its copy, as ``m.to`` does) or a prefix or all of
    them off it, in random order; between its moves, engine calls place the copies by
    ``plan_low_vram``. After every placement: FramePack's GPU linears run from copies there
    with their bf16 weights off (but the kept one); the GPU holds no more bytes of the linears
    than FramePack's placement of their bf16 weights (the kept linear's copy aside); a copy
    left on the CPU would not have fitted; and a second placement changes nothing."""
    from framepack_trt.transformer.fp8_placement import Placement, plan_low_vram

    g = torch.Generator().manual_seed(0)
    n = 40
    bf16 = torch.randint(100, 5000, (n,), generator=g).tolist()
    copy = [b * 52 // 100 + 1 for b in bf16]
    home, w, c = [False] * n, [False] * n, [False] * n  # on the GPU
    keep = 0  # TeaCache's linear

    def placements():
        return [Placement(home[i], w[i], c[i], i == keep, bf16[i], copy[i]) for i in range(n)]

    counts = {"swap": 0, "promote": 0, "demote": 0}
    for _ in range(400):
        op = int(torch.randint(0, 4, (1,), generator=g))
        k = int(torch.randint(0, n + 1, (1,), generator=g))
        if op == 0:  # FramePack's move to the GPU, up to its free-memory limit
            for i in range(k):
                home[i] = w[i] = c[i] = True
        elif op == 1:  # its offload: a prefix, or everything
            for i in range(k if k % 2 else n):
                home[i] = w[i] = c[i] = False
        else:  # an engine call
            swap, promote, demote = plan_low_vram(placements())
            for i in swap:
                w[i], c[i] = False, True
            for i in promote:
                c[i] = True
            for i in demote:
                c[i] = False
            counts["swap"] += len(swap)
            counts["promote"] += len(promote)
            counts["demote"] += len(demote)
            planned = sum(bf16[i] for i in range(n) if home[i])
            held = sum(bf16[i] * w[i] + copy[i] * c[i] for i in range(n))
            slack = copy[keep] if home[keep] and c[keep] else 0
            assert held <= planned + slack
            assert all(c[i] and not w[i] for i in range(n) if home[i] and i != keep)
            assert not any(w[i] for i in range(n) if not home[i])
            if promote:
                assert held <= planned
            left = planned - held
            assert all(copy[i] > left for i in range(n) if not (home[i] or c[i]))
            assert plan_low_vram(placements()) == ([], [], [])
    assert all(counts.values()), counts  # every kind of move happened

def test_offload_bf16_parks_only_fp8_served_blocks_and_stops_when_others_run(model, monkeypatch):
    """``offload_bf16``'s bookkeeping (``TransformerSwap.place_bf16``), with the CPU standing in for
    the GPU (``fp8_placement.PARK_FROM``; the moves are then no-ops): the blocks an fp8 engine
    serves are parked, the others not; a later call that runs parked blocks otherwise brings every
    weight back and turns the option off with one warning; ``release`` drops the copies."""
    import warnings

    from framepack_trt.runtime.transformer_swap import TransformerSwap
    from framepack_trt.transformer import fp8, fp8_placement

    monkeypatch.setattr(fp8_placement, "PARK_FROM", "cpu")
    swap = TransformerSwap.__new__(TransformerSwap)  # the swap's state this needs, no cache
    swap.model, swap.name, swap.component, swap.warned = model, "transformer", "transformer", set()
    swap.offload_bf16 = True
    dual, single = list(model.transformer_blocks), list(model.single_transformer_blocks)
    fp8_dual = {"dual_block": made_entry("d", "transformer_dual_block_fp8"),
                "single_block": made_entry("s", "transformer_single_block")}  # bf16 engine
    cpu = torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning while the same pieces run in fp8
        for _ in range(2):
            swap.place_bf16(fp8_dual, cpu)
            assert all(fp8_placement.is_parked(b) for b in dual)
            assert not any(fp8_placement.is_parked(b) for b in single)
    # Every replaced linear's weight, fp8 and int8, but the one TeaCache reads eagerly.
    assert set(fp8_placement._PARKED[dual[1]]) == set(fp8.replaced_names(dual[1]))
    assert not any(fp8_placement._HOST.get(p) is not None for b in dual for p in b.parameters())  # low-VRAM's
    assert set(fp8_placement._PARKED[dual[0]]) == set(fp8.replaced_names(dual[0])) - {"norm1.linear"}
    copies = [fp8_placement.quantized_block(b) for b in dual]
    assert [fp8_placement.quantized_block(b) for b in dual] == copies  # parking kept the copies
    # The dual blocks now through bf16 engines (or eagerly): everything back, the option off.
    with pytest.warns(UserWarning, match="offload_bf16 is off from now on: a call ran blocks "
                      "through bf16 engines or eagerly"):
        swap.place_bf16({"dual_block": None, "single_block": None}, cpu)
    assert not any(fp8_placement.is_parked(b) for b in dual + single) and not swap.offload_bf16
    swap.release()
    assert not any(b in fp8_placement._QUANTIZED for b in dual + single)
