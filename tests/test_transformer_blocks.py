"""The transformer as four piece engines that take the weights as inputs (``engines: blocks``):
built with AOTInductor on the CPU from tiny random weights (two dual and two single blocks) in
bf16, FramePack's transformer dtype, then run by ``use_engines`` in FramePack's section loop
(FramePack's dtypes: bf16 latents, timestep, guidance and embeddings, fp32 history latents)
against diffusers' eager model in bf16:
- the same engines serve another checkpoint of the same architecture (other weights), and
  plan as cached for it;
- TeaCache on: the same skip decisions and residual reuse as FramePack's own forward;
- FramePack's low-VRAM weight streaming (``DynamicSwapInstaller``) installed: unchanged;
- a bucket outside the engines: eager, one warning; strict raises."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from conftest import cli, once_per_run, save_tiny, write_profile
from framepack_reference import DynamicSwapInstaller, framepack_forward
from tests_helpers import framepack_loop, rel_l2

from framepack_trt.cache import Cache
from framepack_trt.framepack import EngineFallback, use_engines

PIECES = ("input", "dual_block", "single_block", "output")
#: One xdist worker runs this module under ``--dist loadgroup`` (tried: not faster than the
#: default, 17 min 53 s against 16 min 28 s from a fresh clone, so ``make test`` keeps the default).
pytestmark = pytest.mark.xdist_group("blocks")


#: Latent sizes below FramePack's buckets (52..120) keep the test fast; the engines' dims are
#: the same kind (the buckets' range is checked on the GPU, docs/transformer-blocks.md).
SIDE = {"min": 16, "opt": 24, "max": 32}


#: Engine against eager, both bf16, over a whole loop: measured 1.5e-3 to 2.1e-3 (eager bf16
#: itself is 3e-2 from eager fp32).
TOL = 5e-3


def profile_for(path, weights):
    return write_profile(path, [{
        "component": "transformer", "source": {"path": str(weights)}, "dtype": "bfloat16",
        "dims": {"latent_frames": 9, "latent_height": SIDE, "latent_width": SIDE,
                 "text_len": {"min": 1, "opt": 64, "max": 256}}}])  # engines: blocks (default)


def loop(model, f1=False, framepack_names=True, **kw):
    return framepack_loop(model, f1, framepack_names=framepack_names, **{"h": 24, "w": 20, **kw})


@pytest.fixture(scope="session")
def blocks(tmp_path_factory):
    """The four piece engines of tiny random weights (the pieces' tiny config: 2 + 2 blocks),
    built once per test run (once_per_run: shared by both xdist workers)."""
    def make(root):
        weights = save_tiny("transformer_input", root / "weights", seed=7)
        profile = profile_for(root / "blocks.yaml", weights)
        r = cli("build", "--profile", str(profile), "--cache-dir", str(root / "cache"), "--json",
                check=True)
        (root / "build.json").write_text(r.stdout)

    root = once_per_run(tmp_path_factory, "blocks", make)
    return root, root / "weights", json.loads((root / "build.json").read_text())["results"]


def load(path):
    """The transformer as FramePack loads it: bf16 (``torch_dtype=torch.bfloat16``)."""
    from framepack_trt.transformer.model import transformer_class

    return transformer_class().from_pretrained(
        path, torch_dtype=torch.bfloat16).eval()


def test_build_makes_four_small_engines_keyed_by_architecture(blocks, tmp_path):
    root, weights, results = blocks
    assert [r["name"] for r in results] == [f"transformer_{p}" for p in PIECES]
    assert all(r["outcome"] == "built" for r in results), results
    for e in Cache(root / "cache").entries().values():
        assert e.key_fields["weights"].startswith("architecture:")
        assert any(n.startswith("weight.") for n in e.input_names)
    # Another checkpoint of the same architecture plans as cached: nothing to build.
    other = save_tiny("transformer_input", tmp_path / "other", seed=41)
    r = cli("build", "--profile", str(profile_for(tmp_path / "other.yaml", other)), "--cache-dir",
            str(root / "cache"), "--dry-run", "--json", check=True)
    assert [i["action"] for i in json.loads(r.stdout)["plan"]] == ["cached"] * 4


@pytest.mark.parametrize("f1", [False, True], ids=["inverted", "f1"])
def test_one_set_of_engines_serves_two_checkpoints(blocks, tmp_path, f1):
    """FramePack's loop through the piece engines (strict: no eager call) matches diffusers'
    eager model, for the weights the engines were built with and for other weights. (The
    second with ``offload_bf16``, which moves weights only for fp8 engines on a GPU: none here.)"""
    root, weights, _ = blocks
    other = save_tiny("transformer_input", tmp_path / "other", seed=42)
    for path in (weights, other):
        model = load(path)
        where = [(p.data_ptr(), p.device) for p in model.parameters()]
        with torch.no_grad():
            want = loop(model, f1, framepack_names=False)
        engines = use_engines(root / "cache", strict=True, transformer=model,
                              offload_bf16=path == other)
        try:
            with torch.no_grad():
                got = loop(model, f1)
            counts = engines.counts()
        finally:
            engines.restore()
        assert counts == {"transformer": {"engine": 6, "eager": 0}}
        assert [(p.data_ptr(), p.device) for p in model.parameters()] == where
        assert rel_l2(got, want) < TOL, (path, rel_l2(got, want))
    assert rel_l2(load(weights).proj_out.weight.detach(), load(other).proj_out.weight.detach()) > 0.5


@pytest.mark.parametrize("thresh", [0.15, 0.3, 1e9], ids=["default", "mixed", "always-skip"])
def test_teacache_as_framepack_decides(blocks, thresh):
    """TeaCache on (4 steps per section): the piece engines skip the block stack at the same
    steps as FramePack's own forward and reuse the same residual; the latents match. With these
    weights each middle step adds about 0.157 to TeaCache's distance: FramePack's default 0.15
    runs every step, 0.3 skips step 1 and runs step 2 (0.313, a margin of 0.013 where engine
    and eager differ by 5e-4), a huge threshold skips both."""
    root, weights, _ = blocks
    model = load(weights)
    runs: list[bool] = []
    model.forward = functools.partial(framepack_forward, model, runs)
    try:
        with torch.no_grad():
            want = loop(model, steps=4, teacache_thresh=thresh)
    finally:
        del model.forward
    engines = use_engines(root / "cache", strict=True, transformer=model)
    try:
        with torch.no_grad():
            got = loop(model, steps=4, teacache_thresh=thresh)
        stack = dict(engines.swaps["transformer"].stack)
        served, report = engines.served(), engines.report()
    finally:
        engines.restore()
    assert len(runs) == 12 and stack.get("block_stack", 0) == sum(runs)
    assert stack.get("teacache_skip", 0) == runs.count(False)
    # served(): every call through the input and output engines, the block engines at the
    # calls that ran the stack; the report says both counts.
    names = {p: f"transformer_{p}" for p in ("input", "dual_block", "single_block", "output")}
    assert served == {"transformer": {names["input"]: 12, names["output"]: 12,
                                      **({names["dual_block"]: sum(runs),
                                          names["single_block"]: sum(runs)} if any(runs) else {})}}
    assert f"block stack ran {sum(runs)}, TeaCache skipped {runs.count(False)}" in report
    # Per section: steps 0 and 3 always run; steps 1 and 2 as the threshold says.
    assert runs == [True, *{0.15: (True, True), 0.3: (False, True), 1e9: (False, False)}[thresh],
                    True] * 3
    assert rel_l2(got, want) < TOL


def test_low_vram_weight_streaming(blocks):
    """FramePack's DynamicSwapInstaller (every parameter read returns a fresh copy moved to the
    target device) installed on the model: the engines take the weights through it."""
    from framepack_trt.transformer.pieces import read_weights, weight_names

    root, weights, _ = blocks
    model = load(weights)
    with torch.no_grad():
        want = loop(model, True, framepack_names=False)
    DynamicSwapInstaller.install_model(model, device="cpu")
    block = model.transformer_blocks[1]
    name = weight_names(model, "dual_block")[0]
    assert read_weights(block, [name])[0] is not dict(block.named_parameters())[name]
    engines = use_engines(root / "cache", strict=True, transformer=model)
    try:
        with torch.no_grad():
            got = loop(model, True)
        counts = engines.counts()
    finally:
        engines.restore()
        DynamicSwapInstaller.uninstall_model(model)
    assert counts == {"transformer": {"engine": 6, "eager": 0}}
    assert rel_l2(got, want) < TOL


def test_a_bucket_outside_the_pieces_runs_eager(blocks):
    """Latent 24 x 40 (192 x 320 pixels) is past the engines' 32: eager, one warning that
    names the piece and the range; strict raises. (diffusers' names: the eager fallback is
    diffusers' own forward.)"""
    root, weights, _ = blocks
    model = load(weights)
    with torch.no_grad():
        want = loop(model, framepack_names=False, sections=1, h=24, w=40)
    engines = use_engines(root / "cache", transformer=model)
    try:
        with pytest.warns(UserWarning, match=r"latent_width=40 \(320 pixels\)") as caught, \
                torch.no_grad():
            got = loop(model, framepack_names=False, sections=1, h=24, w=40)
        counts = engines.counts()
    finally:
        engines.restore()
    assert len([w for w in caught if "runs eager" in str(w.message)]) == 1
    assert counts == {"transformer": {"engine": 0, "eager": 2}}
    assert torch.equal(got, want)
    engines = use_engines(root / "cache", strict=True, transformer=model)
    try:
        with pytest.raises(EngineFallback, match="input"), torch.no_grad():
            loop(model, framepack_names=False, sections=1, h=24, w=40)
    finally:
        engines.restore()


AUTO_EAGER_BLOCKS = """
import sys
from framepack_trt import auto
from framepack_trt.build import build
from framepack_trt.build_plan import plan
from framepack_trt.cache import Cache
from framepack_trt.profile import load_profile

auto.MIN_SPEEDUP = 1e9  # no engine can beat eager by this: auto keeps none
profile = load_profile(sys.argv[1]).with_backend("auto")
cache = Cache(sys.argv[2])
items = plan(profile, cache, ["transformer_dual_block"])
print([r.outcome for r in build(profile, cache, items)])
"""


def test_pieces_auto_found_no_faster_run_eager_in_the_loop(blocks, tmp_path):
    """backend: auto measured eager as the fastest for the dual-block piece (its engine file
    removed, the choice recorded): the loop runs the other pieces' engines and the dual blocks
    eagerly, with no warning, and matches eager."""
    import shutil
    import subprocess
    import sys

    root, weights, _ = blocks
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache", cache)
    proc = subprocess.run([sys.executable, "-c", AUTO_EAGER_BLOCKS, str(root / "blocks.yaml"),
                           str(cache)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "['built']" in proc.stdout  # a measured answer: eager is the fastest
    listed = json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)
    assert sorted(e["name"] for e in listed["entries"]) == [
        "transformer_input", "transformer_output", "transformer_single_block"]
    model = load(weights)
    with torch.no_grad():
        want = loop(model, framepack_names=False)
    engines = use_engines(cache, strict=True, transformer=model)
    try:
        with torch.no_grad():
            got = loop(model)
        counts = engines.counts()
    finally:
        engines.restore()
    assert counts == {"transformer": {"engine": 6, "eager": 0}}
    assert rel_l2(got, want) < TOL
