"""verify against float32: a bfloat16 engine (real AOTInductor build on the CPU, tiny SigLIP of
the real class) is judged against the model in float32 next to eager bfloat16's own error, as
the profile's tolerance asks (build check and quick verify) or as `--reference` overrides."""

from __future__ import annotations

import json

from conftest import cli, write_profile

from framepack_trt.cache import Cache


def outputs(result):
    return [o for e in result["engines"] for c in e["cases"] for o in c["outputs"]]


def test_bf16_engine_checked_against_fp32(tmp_path, tiny_weights):
    p = write_profile(tmp_path / "bf16.yaml", [
        {"component": "siglip_image", "source": {"path": str(tiny_weights["siglip_image"])},
         "dtype": "bfloat16", "tolerance": {"reference": "fp32", "reference_factor": 2}}])
    cache = tmp_path / "cache"
    cli("build", "--profile", str(p), "--cache-dir", str(cache), check=True)
    (entry,) = Cache(cache).entries().values()
    assert entry.build_check["reference"] == "fp32"

    # The profile's reference is the default: quick verify compares with float32.
    r = json.loads(cli("verify", "--cache-dir", str(cache), "--json", check=True).stdout)
    outs = outputs(r)
    assert r["passed"] and outs and all(o["reference"] == "fp32" for o in outs)
    # eager bf16 is itself measurably off float32; the engine is within 2x of it
    assert all(o["eager_rel_l2"] > 1e-4 and o["rel_l2"] <= 2 * o["eager_rel_l2"] + 1e-4 for o in outs)

    # --reference eager overrides it: the same engine against eager bf16, at full sizes.
    r = json.loads(cli("verify", "--cache-dir", str(cache), "--full", "--seed", "5",
                       "--reference", "eager", "--json", check=True).stdout)
    assert r["passed"] and all(o["reference"] == "eager" and o["eager_rel_l2"] is None
                               for o in outputs(r))
    r = cli("verify", "--cache-dir", str(cache), "--reference", "fp64")
    assert r.returncode == 2 and "expected one of: eager, fp32" in r.stderr
