"""Profiles: the shipped ones load; bad ones give one message naming file, field, value, valid."""

from pathlib import Path

import pytest

from framepack_trt.errors import ProfileError, UsageError
from framepack_trt.profile import builtin_profiles, load_profile
from framepack_trt.shapes import DimRange

GOOD_ENTRY = """
  - component: clip_text
    source: {random: {seed: 0}}
    dtype: float32
"""


def test_builtin_profiles_load():
    names = builtin_profiles()
    assert {"tiny", "framepack"} <= set(names)
    for name in names:  # every shipped profile, benchmark ones included
        assert load_profile(name).components
    tiny = load_profile("tiny")
    assert tiny.device == "cpu" and tiny.backend == "aoti"
    assert {c.component for c in tiny.components} == {"clip_text", "llama_text", "siglip_image",
                                                      "transformer", "vae_encode", "vae_decode"}
    tx = next(c for c in tiny.components if c.component == "transformer")
    assert tx.dims["latent_height"] == DimRange(52, 52, 120)  # every 640 bucket, opt the first
    assert tx.dims["latent_width"] == DimRange(52, 120, 120)
    llama = next(c for c in tiny.components if c.component == "llama_text")
    assert llama.dims["text_len"] == DimRange(1, 48, 64)
    real = load_profile("framepack")
    assert real.device == "cuda"
    assert all(c.source.kind == "repo" for c in real.components)
    assert {c.component: c.dtype for c in real.components} == {
        "llama_text": "float16", "clip_text": "float16", "siglip_image": "float16",
        "vae_encode": "float16", "vae_decode": "float16",
        # engines: blocks (the transformer as four engines that take the weights as inputs)
        "transformer_input": "bfloat16", "transformer_dual_block": "bfloat16",
        "transformer_single_block": "bfloat16", "transformer_output": "bfloat16"}
    # The VAE decoder with AOTInductor only (TensorRT-RTX's fp16 convolutions miss the check)
    assert all(c.backend == ("aoti" if c.component == "vae_decode" else "auto")
               and c.fallback_backend is None for c in real.components)
    assert sum(c.component == "vae_decode" for c in real.components) == 4
    forced = real.with_backend("tensorrt")  # --backend: that backend only
    assert all(c.backend == "tensorrt" for c in forced.components)
    assert load_profile("realwidth").backend == "auto"


def test_defaults_and_overrides(tmp_path):
    (tmp_path / "../weights/llama").mkdir(parents=True, exist_ok=True)
    p = tmp_path / "p.yaml"
    p.write_text(f"""
device: cpu
cache_dir: engines
components:
{GOOD_ENTRY}
  - component: llama_text
    name: llama_short
    source: {{path: ../weights/llama}}
    dtype: bf16
    dims: {{text_len: {{min: 2, max: 40}}}}
    tolerance: {{rel_l2: 0.05}}
    build: {{max_autotune: true}}
""")
    prof = load_profile(p)
    assert prof.name == "p"
    assert prof.cache_dir == tmp_path.resolve() / "engines"
    clip, llama = prof.components
    assert clip.name == "clip_text" and clip.dims["text_len"] == DimRange(77, 77, 77)
    assert llama.name == "llama_short" and llama.dtype == "bfloat16"
    assert llama.dims["text_len"] == DimRange(2, 40, 40)  # opt defaults to max
    assert llama.source.path == str(tmp_path.resolve() / "../weights/llama")
    assert llama.tolerance.rel_l2 == 0.05 and llama.tolerance.cosine == 0.999  # bf16 default
    assert llama.build == {"max_autotune": True}
    assert prof.select(["llama_short"]) == (llama,)
    with pytest.raises(UsageError, match="no component 'vae'.*it has: clip_text, llama_short"):
        prof.select(["vae"])


BAD = [
    ("- just a list", ["must be a mapping"]),
    ("components:\n  - component: transformer\n    source: {random: {}}\n"
     "    buckets: [[416, 960], [424, 960]]\n",
     ["components[0].buckets[1]: [424, 960] is not valid; expected [height, width] in pixels, "
      "positive multiples of 16 for component 'transformer'"]),
    ("components:\n  - component: clip_text\n    source: {path: /no/such/folder}\n",
     ["components[0].source.path: '/no/such/folder' is not a directory (it does not exist)"]),
    ("backend: aoti\nbogus: 1\ncomponents: [" + "]", ["bogus: unknown field; valid fields: name",
                                                      "components: [] is not valid"]),
    ("backend: tensorrtx\ncomponents:" + GOOD_ENTRY, ["backend: 'tensorrtx' is not valid; valid: aoti"]),
    ("device: tpu\ncomponents:" + GOOD_ENTRY, ["device: 'tpu' is not valid; valid: cpu, cuda"]),
    ("components:\n  - component: vae2\n    source: {random: {}}\n",
     ["components[0].component: 'vae2' is not a known component; valid: clip_text, llama_text"]),
    ("components:\n  - component: clip_text\n", ["components[0].source: missing"]),
    ("components:\n  - component: clip_text\n    source: {path: a, repo: b/c}\n",
     ["components[0].source: give exactly one of path, repo, random"]),
    ("components:\n  - component: clip_text\n    source: {repo: nouser}\n",
     ["components[0].source.repo: 'nouser' is not valid; expected 'owner/name'"]),
    ("components:" + GOOD_ENTRY.replace("float32", "int8"),
     ["components[0].dtype: 'int8' is not a dtype; valid: float32, float16, bfloat16"]),
    ("components:" + GOOD_ENTRY + "    dims: {height: 4}\n",
     ["components[0].dims.height: unknown dim for component 'clip_text'; valid: batch, text_len"]),
    ("components:" + GOOD_ENTRY + "    dims: {batch: {min: 4, opt: 2, max: 8}}\n",
     ["components[0].dims.batch: min 4 / opt 2 / max 8 is not valid; need min <= opt <= max"]),
    ("components:" + GOOD_ENTRY + "    dims: {batch: {min: 0, max: 8}}\n",
     ["components[0].dims.batch.min: 0 is not valid; expected an integer >= 1"]),
    ("components:" + GOOD_ENTRY + "    dims: {batch: {max: 8}}\n",
     ["components[0].dims.batch: needs min and max"]),
    ("components:" + GOOD_ENTRY + "    dims: {text_len: {min: 1, max: 100}}\n",
     ["components[0].dims.text_len: 1..100 is outside what 'clip_text' supports (1..77)"]),
    ("components:" + GOOD_ENTRY + "    tolerance: {cosine: 2}\n",
     ["components[0].tolerance.cosine: 2 is not valid; expected a number in [0, 1]"]),
    ("components:" + GOOD_ENTRY + "    tolerance: {max_abs_std: -1}\n",
     ["components[0].tolerance.max_abs_std: -1 is not valid; expected a number >= 0"]),
    ("components:" + GOOD_ENTRY + "    build: {workspace: 4}\n",
     ["components[0].build.workspace: unknown build setting for backend 'aoti'; "
      "valid: max_autotune, compile_threads, nd_tiling"]),
    ("components:" + GOOD_ENTRY + "    build: {max_autotune: 'yes'}\n",
     ["components[0].build.max_autotune: 'yes' is not valid; expected bool"]),
    ("components:" + GOOD_ENTRY + GOOD_ENTRY,
     ["components[1].name: 'clip_text' is already used by components[0]"]),
    ("components:" + GOOD_ENTRY + "    buckets: framepack-640\n",
     ["components[0].buckets: component 'clip_text' has no image height/width dims"]),
    ("components:\n  - component: clip_text\n    source: {random: {seed: -1}}\n",
     ["components[0].source.random.seed: -1 is not valid; expected an integer >= 0"]),
    ("components: [\n  {component: clip_text\n", ["not valid YAML (line"]),
    ("components:\n  - component: transformer\n    source: {random: {seed: 0}}\n"
     "    engines: block\n",
     ["components[0].engines: 'block' is not valid; valid: blocks, whole"]),
    ("components:" + GOOD_ENTRY + "    engines: blocks\n",
     ["components[0].engines: only a transformer entry has engines (whole or blocks)"]),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_profiles_name_file_field_value_and_valid(tmp_path, text, expected):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(p)
    msg = str(info.value)
    assert str(p) in msg
    for piece in expected:
        assert piece in msg, msg
    assert info.value.exit_code == 2


def test_all_problems_in_one_message(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("device: tpu\nbackend: x\ncomponents:" + GOOD_ENTRY.replace("float32", "int8"))
    with pytest.raises(ProfileError) as info:
        load_profile(p)
    assert len(info.value.problems) == 3
    assert "3 problems" in str(info.value)


def test_missing_profile_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a file, and not a built-in profile .*tiny"):
        load_profile(tmp_path / "nope.yaml")
    with pytest.raises(UsageError):
        load_profile("no-such-builtin")


def test_with_backend_rejects_unknown():
    with pytest.raises(UsageError, match="unknown backend 'nope'"):
        load_profile("tiny").with_backend("nope")


def test_builtin_dir_is_repo_profiles():
    from framepack_trt.profile import builtin_profiles_dir

    assert builtin_profiles_dir() == Path(__file__).resolve().parent.parent / "profiles"


def test_yaml_1_2_floats_are_numbers(tmp_path):
    """The README's own example: PyYAML reads 1e-2 as a string by YAML 1.1 rules."""
    p = tmp_path / "p.yaml"
    p.write_text("device: cpu\ncomponents:\n  - component: clip_text\n    source: {random: {}}\n"
                 "    tolerance: {rel_l2: 1e-2, cosine: 9.99e-1, max_abs: 2E0, max_abs_std: 2.5e-1}\n")
    (clip,) = load_profile(p).components
    assert (clip.tolerance.rel_l2, clip.tolerance.cosine, clip.tolerance.max_abs,
            clip.tolerance.max_abs_std) == (0.01, 0.999, 2.0, 0.25)


def test_backend_option_that_cannot_build_for_the_device_is_misuse(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("device: cpu\ncomponents:\n  - component: clip_text\n    source: {random: {}}\n")
    with pytest.raises(UsageError, match=r"--backend tensorrt: builds for cuda only, and .*p.yaml "
                                         r"has clip_text \(device cpu\)") as info:
        load_profile(p).with_backend("tensorrt")
    assert info.value.exit_code == 2
    assert load_profile(p).with_backend("auto").components[0].backend == "auto"


def test_profile_buckets_are_what_the_transformer_checks(tmp_path):
    from framepack_trt.components.base import get_component

    p = tmp_path / "p.yaml"
    p.write_text("device: cpu\ncomponents:\n  - component: transformer\n    engines: whole\n"
                 "    source: {random: {}}\n"
                 "    buckets: [[512, 512], [544, 704]]\n")
    (tx,) = load_profile(p).components
    checks = get_component("transformer").check_sizes(tx.dims, tx.buckets)
    assert [label for label, _ in checks] == ["bucket 512x512", "bucket 544x704"]


def test_engines_blocks_expands_the_transformer_into_four_pieces(tmp_path):
    """engines: blocks -> four entries (same source, dtype, dims, buckets, backend) named after
    the entry; -c transformer selects all four, and the other entries stay."""
    p = tmp_path / "p.yaml"
    p.write_text("backend: aoti\ndevice: cpu\ncomponents:\n"
                 "  - component: clip_text\n    source: {random: {seed: 0}}\n"
                 "  - component: transformer\n    name: tx\n    engines: blocks\n"
                 "    source: {random: {seed: 3}}\n    dtype: bf16\n"
                 "    buckets: [[416, 960], [544, 704]]\n")
    prof = load_profile(p)
    assert [(c.name, c.component) for c in prof.components] == [
        ("clip_text", "clip_text"), ("tx_input", "transformer_input"),
        ("tx_dual_block", "transformer_dual_block"),
        ("tx_single_block", "transformer_single_block"), ("tx_output", "transformer_output")]
    pieces = prof.components[1:]
    same = [(c.source, c.dtype, c.dims, c.buckets, c.backend) for c in pieces]
    assert all(x == same[0] for x in same)
    assert pieces[0].dtype == "bfloat16" and pieces[0].dims["latent_height"] == DimRange(52, 52, 68)
    assert [c.name for c in prof.select(["transformer"])] == [c.name for c in pieces]
    assert [c.name for c in prof.select(["tx_output", "clip_text"])] == ["clip_text", "tx_output"]
    # One checked entry per entry of the file; its component expanded it into the engines.
    assert [(e.index, e.spec.name, e.engines) for e in prof.entries] == [
        (0, "clip_text", "whole"), (1, "tx", "blocks")]
    assert all(c.entry == "tx" for c in pieces) and prof.components[0].entry == ""


def test_build_settings_under_auto_and_backend_override(tmp_path):
    """Under ``backend: auto`` each build setting is checked against the backends that know it
    (a typo is named, not dropped); ``--backend`` keeps the settings its backend knows."""
    p = tmp_path / "p.yaml"
    p.write_text("backend: auto\ndevice: cpu\ncomponents:\n  - component: clip_text\n"
                 "    source: {random: {}}\n    build: {nd_tilling: true, share_weights: 'yes'}\n")
    with pytest.raises(ProfileError) as err:
        load_profile(p)
    assert "components[0].build.nd_tilling: unknown build setting" in str(err.value)
    assert "nd_tiling" in str(err.value)  # the valid names are listed
    assert "components[0].build.share_weights: 'yes' is not valid; expected bool" in str(err.value)
    p.write_text("backend: auto\ndevice: cuda\ncomponents:\n  - component: clip_text\n"
                 "    source: {random: {}}\n    build: {optimization_level: 9}\n")
    with pytest.raises(ProfileError, match=r"components\[0\]\.build: backend tensorrt: "
                       r"optimization_level 9 is not in 0\.\.5"):
        load_profile(p)
    p.write_text("backend: auto\ndevice: cuda\ncomponents:\n  - component: clip_text\n"
                 "    source: {random: {}}\n    build: {nd_tiling: true, workspace_gb: 4}\n")
    (spec,) = load_profile(p).components
    assert spec.build == {"nd_tiling": True, "workspace_gb": 4}
    (aoti,) = load_profile(p).with_backend("aoti").components
    assert aoti.build == {"nd_tiling": True}
    (trt,) = load_profile(p).with_backend("tensorrt").components
    assert trt.build == {"workspace_gb": 4}


def test_static_expands_into_one_engine_per_bucket_and_size(tmp_path):
    """``static: true``: one static-size entry per bucket and per value of each other ranged
    dim, named after them; refused when it would be too many, not a boolean, or on the
    transformer's block engines."""
    p = tmp_path / "p.yaml"
    p.write_text("device: cuda\ncomponents:\n  - component: vae_decode\n    source: {random: {}}\n"
                 "    dtype: float16\n    buckets: [[544, 704], [416, 960]]\n"
                 "    dims: {latent_frames: {min: 3, opt: 5, max: 4}}\n    static: true\n")
    with pytest.raises(ProfileError):  # opt outside min..max: the dims are checked first
        load_profile(p)
    p.write_text(p.read_text().replace("opt: 5, max: 4", "opt: 5, max: 5"))
    specs = load_profile(p).components
    assert [s.name for s in specs] == [f"vae_decode_{b}_latent_frames{t}"
                                       for b in ("544x704", "416x960") for t in (3, 4, 5)]
    first = specs[0]
    assert first.buckets == ((544, 704),)
    assert first.dims["latent_frames"] == DimRange(3, 3, 3)
    assert first.dims["latent_height"] == DimRange(68, 68, 68)
    assert first.dims["latent_width"] == DimRange(88, 88, 88)
    assert specs[3].dims["latent_width"] == DimRange(120, 120, 120)
    # -c by the entry's name selects its engines (by component: every vae_decode entry).
    p.write_text(p.read_text().replace("  - component: vae_decode\n",
                                       "  - component: vae_decode\n    name: vd\n")
                 + "  - component: vae_decode\n    source: {random: {}}\n")
    profile = load_profile(p)
    assert len(profile.select(["vd"])) == 6 and len(profile.select(["vae_decode"])) == 7
    # Without buckets, fixed sizes (a low-VRAM tile shape): one engine per window length.
    p.write_text("device: cuda\ncomponents:\n  - component: vae_decode\n    name: tile_20x16\n"
                 "    source: {random: {}}\n    dtype: float16\n    static: true\n"
                 "    dims: {latent_frames: {min: 3, opt: 5, max: 5}, latent_height: 20, "
                 "latent_width: 16}\n")
    tiles = load_profile(p).components
    assert [s.name for s in tiles] == [f"tile_20x16_latent_frames{t}" for t in (3, 4, 5)]
    assert tiles[1].buckets == () and tiles[1].dims["latent_frames"] == DimRange(4, 4, 4)
    assert (tiles[1].dims["latent_height"], tiles[1].dims["latent_width"]) == (
        DimRange(20, 20, 20), DimRange(16, 16, 16))
    for text, message in (
            ("    static: true\n",  # no buckets: every height and width of the range
             r"components\[0\]\.static: latent_height, latent_width are ranges: give buckets"),
            ("    buckets: [[544, 704], [544, 704]]\n    static: true\n",
             r"components\[0\]\.buckets: \[544, 704\] is listed twice"),
            ("    buckets: [[544, 704]]\n    dims: {latent_height: 60}\n    static: true\n",
             r"components\[0\]\.dims\.latent_height: set by buckets under static: true"),
            ("    buckets: framepack-640\n    static: true\n",
             r"components\[0\]\.static: it would build 42 engines \(one per value of 14 "
             r"buckets x latent_frames 3\.\.5\); at most 32")):
        p.write_text("device: cuda\ncomponents:\n  - component: vae_decode\n"
                     "    source: {random: {}}\n" + text)
        with pytest.raises(ProfileError, match=message):
            load_profile(p)
    p.write_text("device: cuda\ncomponents:\n  - component: vae_decode\n    source: {random: {}}\n"
                 "    static: 'yes'\n")
    with pytest.raises(ProfileError, match=r"components\[0\]\.static: 'yes' is not valid; "
                                           r"expected true, false or tiles"):
        load_profile(p)
    # static: tiles: one engine per tile shape of low-VRAM mode at the buckets (latent units;
    # tests/test_vae.py checks the shapes against diffusers' tiling) and window length.
    p.write_text("device: cuda\ncomponents:\n  - component: vae_decode\n    name: tile\n"
                 "    source: {random: {}}\n    buckets: [[544, 704], [416, 960]]\n"
                 "    dims: {latent_frames: {min: 3, opt: 5, max: 5}}\n    static: tiles\n"
                 "  - component: vae_encode\n    name: enc\n    source: {random: {}}\n"
                 "    buckets: [[544, 704]]\n    static: tiles\n")
    tiles = load_profile(p).components
    shapes = ["32x32", "32x24", "32x16", "28x32", "28x24", "20x32", "20x16", "4x32", "4x24"]
    assert [s.name for s in tiles] == [f"tile_{hw}_latent_frames{t}" for hw in shapes
                                       for t in (3, 4, 5)] + [f"enc_{hw}" for hw in
                                                              ("32x32", "32x16", "20x32", "20x16")]
    t = tiles[4]  # tile_32x24_latent_frames4
    assert (t.dims["latent_height"], t.dims["latent_width"], t.dims["latent_frames"]) == (
        DimRange(32, 32, 32), DimRange(24, 24, 24), DimRange(4, 4, 4))
    assert t.buckets == () and t.entry == "tile"
    for text, message in (
            ("  - component: vae_decode\n    source: {random: {}}\n    static: tiles\n",
             r"components\[0\]\.static: static: tiles needs buckets"),
            ("  - component: vae_encode\n    source: {random: {}}\n    static: tiles\n"
             "    buckets: [[544, 704]]\n    dims: {latent_width: 16}\n",
             r"components\[0\]\.dims\.latent_width: set by buckets under static: tiles \(one "
             r"engine per tile shape of the buckets\)"),
            ("  - component: clip_text\n    source: {random: {}}\n    static: tiles\n",
             r"components\[0\]\.static: component 'clip_text' is not cut into tiles"),
            ("  - component: vae_decode\n    source: {random: {}}\n    static: tiles\n"
             "    buckets: framepack-640\n",
             r"it would build 93 engines \(one per value of 31 tile shapes x latent_frames "
             r"3\.\.5\); at most 32")):
        p.write_text("device: cuda\ncomponents:\n" + text)
        with pytest.raises(ProfileError, match=message):
            load_profile(p)
    p.write_text("device: cuda\ncomponents:\n  - component: transformer\n    source: {random: {}}\n"
                 "    dtype: bfloat16\n    static: true\n")
    with pytest.raises(ProfileError, match=r"block engines take any size"):
        load_profile(p)
