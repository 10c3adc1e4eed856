"""The parts of the measurement scripts (scripts/bench/) and GPU runners (scripts/gpu/) that run
without a GPU: that each script imports and each runner parses, that every script path the
repository names exists (or is recorded as removed), their argument checks, the arithmetic of
their reports and the model variants they build. A script that only runs on the GPU machine
would otherwise break unseen until a paid run."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "bench"
RUNNERS = ROOT / "scripts" / "gpu"


def script(name: str):
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


def test_every_script_is_in_the_readme_and_only_those():
    """scripts/README.md names each script of bench/ and gpu/ (what it measures, where its
    numbers are); nothing else lies in scripts/."""
    readme = (ROOT / "scripts" / "README.md").read_text()
    named = set(re.findall(r"`((?:bench|gpu)/[\w.]+)`", readme))
    on_disk = {str(p.relative_to(ROOT / "scripts")) for p in (ROOT / "scripts").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk - named == {"README.md"}
    assert named <= on_disk, named - on_disk


@pytest.mark.parametrize("path", sorted(p.name for p in SCRIPTS.glob("*.py")))
def test_each_measurement_script_imports(path):
    """A script's imports resolve (a helper it takes from framepack_trt still exists under
    that name); importing runs no measurement."""
    module = script(path.removesuffix(".py"))
    assert callable(module.main)


def test_the_runners_parse_and_their_helper_imports():
    for runner in sorted(RUNNERS.glob("*.sh")):
        done = subprocess.run(["bash", "-n", str(runner)], capture_output=True, text=True)
        assert done.returncode == 0, (runner.name, done.stderr)
    sys.path.insert(0, str(RUNNERS))
    try:
        assert callable(importlib.import_module("random_weights").main)
    finally:
        sys.path.remove(str(RUNNERS))


#: The dated benchmark log is kept verbatim: its commands name scripts where they were then.
LOG = ROOT / "docs" / "benchmarks-log.md"


def removed_scripts() -> dict[str, str]:
    """The log's table of removed scripts: path -> the commit that holds it."""
    out = {}
    for row in LOG.read_text().splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"[0-9a-f]{7,40}", cells[1]):
            for path in re.findall(r"`(scripts/[\w./-]+)`", cells[0]):
                out[path] = cells[1]
    return out


def test_every_script_path_named_in_the_repository_exists_or_is_recorded_as_removed():
    removed = removed_scripts()
    assert len(removed) >= 15
    for path in removed:
        assert not (ROOT / path).exists(), f"{path} is listed as removed but is there"
    pages = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / ".ci" / "run",
             *(p for folder in ("docs", "profiles", "scripts", "framepack_trt", "tests")
               for p in (ROOT / folder).rglob("*") if p.suffix in (".md", ".py", ".sh", ".yaml")
               and "framepack_upstream" not in p.parts)]
    mention = re.compile(r"scripts/[\w./-]*\w\.(?:py|sh|yaml|md)\b")
    missing, seen = [], 0
    for page in pages:
        if page == LOG:
            continue
        for n, line in enumerate(page.read_text().splitlines(), 1):
            for found in mention.findall(line):
                seen += 1
                if not (ROOT / found).exists() and found not in removed:
                    missing.append(f"{page.relative_to(ROOT)}:{n}: {found}")
    assert seen > 50
    assert not missing, "\n".join(missing)


def test_vae_bench_refuses_a_bad_bucket(capsys):
    vae_bench = script("vae_bench")
    for bad in ("544x70", "544", "axb"):
        with pytest.raises(SystemExit) as exc:
            vae_bench.main(["--buckets", bad])
        assert exc.value.code == 2
        assert f"--buckets {bad!r}" in capsys.readouterr().err


def test_kernel_kinds():
    """Kernel names as torch.profiler reported them on the H200 (2026-11-30)."""
    kind_of = script("fp8_block_profile").kind_of
    names = {
        "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_cga1x1":
            "attention",
        "nvjet_sm90_qqtst_128x128_128x6_1x2_h_bz_ovscale_bias_TNT": "fp8 matmul",
        "nvjet_sm90_tst_192x8_64x8_4x1_v_bz_splitK_bias_TNT": "bf16 matmul",
        "triton_red_fused__scaled_mm__to_copy_abs_amax_clamp_div_gelu_t_view_11": "triton",
        "triton_poi_fused__scaled_dot_product_cudnn_attention_cat_permute_view_6": "triton",
        "Memset (Device)": "other",
    }
    for name, kind in names.items():
        assert kind_of(name).startswith(kind), (name, kind_of(name))


def test_busy_time_is_the_union_of_the_spans():
    busy_time = script("transformer_blocks_bench").busy_time
    gen = torch.Generator().manual_seed(0)
    starts = torch.randint(0, 1000, (40,), generator=gen).tolist()
    spans = [(s, s + int(d), "k") for s, d in zip(starts, torch.randint(
        1, 60, (40,), generator=gen).tolist(), strict=True)]
    covered = set()
    for start, stop, _ in spans:
        covered.update(range(start, stop))
    assert busy_time(spans) == len(covered)
    assert busy_time([]) == 0


def test_inductor_options_are_parsed_as_python_values():
    option = script("fp8_block_profile").inductor_option
    assert option("triton.prefer_nd_tiling=true") == ("triton.prefer_nd_tiling", True)
    assert option("coordinate_descent_tuning=False") == ("coordinate_descent_tuning", False)
    assert option("triton.max_tiles=3") == ("triton.max_tiles", 3)
    assert option("cpp.simdlen=None") == ("cpp.simdlen", None)
    assert option("max_autotune_gemm_backends=ATEN,TRITON") == ("max_autotune_gemm_backends",
                                                                "ATEN,TRITON")
    for bad in ("nothing", "=1", "name="):
        with pytest.raises(SystemExit, match="is not NAME=VALUE"):
            option(bad)


def test_reciprocal_quantization_matches_the_division():
    from framepack_trt.transformer import fp8

    reciprocal = script("fp8_block_profile").quantize_rows_reciprocal
    x = torch.randn(32, 3072, generator=torch.Generator().manual_seed(1)) * 5
    q, scale = fp8.quantize_rows(x)
    r, r_scale = reciprocal(x)
    assert torch.equal(scale, r_scale)
    differ = q.float() != r.float()
    assert differ.float().mean() < 1e-3  # a rounding now and then, no more
    # where they differ, by one e4m3 step at most (an eighth of the value's power of two)
    gap = (q.float() - r.float()).abs()[differ]
    assert (gap <= q.float().abs()[differ] / 8 + 1e-6).all()


def test_conv_in_fp32_casts_every_convolution():
    """trt_vae_ops.py's variant: the exported decoder computes each convolution in float32
    and returns fp16, and the model it copies is left as it was."""
    from framepack_trt.components.base import get_component
    from framepack_trt.export import export_component
    from framepack_trt.shapes import DimRange
    from framepack_trt.sources import construct

    conv_in_fp32 = script("trt_vae_ops").conv_in_fp32
    comp = get_component("vae_decode")
    torch.manual_seed(0)
    model = construct(comp.load_model_class(), {"block_out_channels": (8, 16, 16, 16),
                                                "layers_per_block": 1,
                                                "norm_num_groups": 4}).eval().half()
    dims = {"latent_frames": DimRange(3, 3, 3), "latent_height": DimRange(4, 8, 16),
            "latent_width": DimRange(4, 8, 16)}
    program = export_component(comp, conv_in_fp32(model), dims, torch.float16, "cpu").program
    convs = [n for n in program.graph.nodes if n.op == "call_function"
             and "conv" in str(n.target)]
    assert convs
    for node in convs:
        assert node.args[0].meta["val"].dtype == torch.float32
        assert node.args[1].meta["val"].dtype == torch.float32
    assert all(p.dtype == torch.float16 for p in model.parameters())
    plain = export_component(comp, model, dims, torch.float16, "cpu").program
    assert all(n.args[0].meta["val"].dtype == torch.float16 for n in plain.graph.nodes
               if n.op == "call_function" and "conv" in str(n.target))


def test_lowvram_bench_moves_a_prefix_up_to_the_budget():
    """FramePack's order (every module that has a weight) until the budget has moved; the
    "meta" device stands in for the GPU."""
    move_prefix = script("lowvram_bench").move_prefix
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU())
                                  for _ in range(5)))
    one = sum(p.nbytes for p in model[0][0].parameters())
    moved = move_prefix(model, "meta", int(2.5 * one))
    assert moved == 3 * one
    assert [model[i][0].weight.device.type for i in range(5)] == ["meta"] * 3 + ["cpu"] * 2


def test_transformer_blocks_bench_grows_the_model_of_copies_of_its_blocks():
    """``--depth``: the tiny transformer grown from 2 + 2 to 3 + 5 blocks (copies of its own,
    each a module of its own), the config to match; the eager forward walks them all (its
    output changes: the new blocks run), and shrinking back to 2 + 2 gives the first output."""
    from conftest import save_tiny

    from framepack_trt.components.base import get_component
    from framepack_trt.components.transformer import RAW_INPUTS
    from framepack_trt.framepack_bench import grow
    from framepack_trt.transformer.model import transformer_class
    with tempfile.TemporaryDirectory() as tmp:
        model = transformer_class().from_pretrained(
            save_tiny("transformer_input", Path(tmp) / "w", seed=3)).eval()
    comp = get_component("transformer_input")
    sizes = {"batch": 1, "latent_frames": 2, "latent_height": 16, "latent_width": 16,
             "text_len": 8}
    raw = comp.make_inputs(model.config, sizes, torch.float32, "cpu",
                           torch.Generator().manual_seed(0))
    call = dict(zip(RAW_INPUTS, raw, strict=True))
    with torch.inference_mode():
        first = model(**call, return_dict=False)[0]
        grow(model, 3, 5)
        grown = model(**call, return_dict=False)[0]
        assert (model.config.num_layers, model.config.num_single_layers) == (3, 5)
        assert (len(model.transformer_blocks), len(model.single_transformer_blocks)) == (3, 5)
        blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
        assert len({id(b) for b in blocks}) == 8
        assert torch.equal(model.transformer_blocks[2].ff.net[2].weight,
                           model.transformer_blocks[0].ff.net[2].weight)
        assert not torch.equal(grown, first)
        grow(model, 2, 2)
        assert torch.equal(model(**call, return_dict=False)[0], first)


def test_first_call_times_each_engine_of_a_cache(built_cache, capsys):
    """scripts/bench/first_call.py on a real engine (the tiny build's SigLIP, AOTInductor, CPU): its
    load and three calls on its golden inputs; a name the cache lacks is refused."""
    _, cache = built_cache
    assert script("first_call").main(["--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    for row in ("siglip_image: load the engine",
                "siglip_image: first call", "siglip_image: third call"):
        assert row in out, out
    times = [float(line.split()[-1]) for line in out.splitlines()[1:-1]]
    assert len(times) == 5 and all(t >= 0 for t in times)
    # Loading and calling the engine did not run inductor's CPU probe.
    assert out.splitlines()[-1] == "inductor's CPU feature probe (pick_vec_isa) ran: no", out
    with pytest.raises(SystemExit, match="no engine named vae_decode"):
        script("first_call").main(["--cache-dir", str(cache), "-c", "vae_decode"])
