"""The README demo path, end to end, through the real console entry point in subprocesses:
build tiny -> list -> verify -> verify --full -> build again builds nothing -> flip a byte ->
verify fails and list says corrupt -> build rebuilds it -> purge --all -> list is empty.

The first step, ``framepack-trt build`` of the tiny profile in an empty folder, is the session
fixture ``tiny_build`` (other tests read the engines it built); this test goes on from a copy
of its cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

from conftest import cli

from framepack_trt.cache import Cache
from framepack_trt.components.base import get_component

#: The tiny profile's entries.
NAMES = ("clip_text", "llama_text", "siglip_image", "transformer", "vae_decode", "vae_decode_tail",
         "vae_encode")


def entries(cwd):
    return json.loads(cli("list", "--json", cwd=cwd, check=True).stdout)["entries"]


def test_tiny_profile_end_to_end(tmp_path, tiny_build):
    built, build_stdout = tiny_build  # `framepack-trt build` (the built-in tiny profile)
    assert "7 built, 0 cached, 0 failed" in build_stdout
    for stage in ("load", "export", "compile", "save", "verify"):
        assert f"clip_text: {stage}" in build_stdout
    cwd = tmp_path  # the default cache is Cache/tensorrt_engines under the current folder
    cache = cwd / "Cache" / "tensorrt_engines"
    shutil.copytree(built, cache)  # copy2: sizes and mtimes as built

    rows = entries(cwd)
    assert sorted(e["name"] for e in rows) == [*NAMES]
    assert all(e["status"] == "ok" and e["backend"] == "aoti" for e in rows)
    # The transformer's build-time check ran at the sizes of verify --full, on inputs drawn
    # from a seed of its own (not the key's, from which the export and golden samples come);
    # the others were checked on their golden samples.
    for key, e in Cache(cache).entries().items():
        check = e.build_check
        if e.name == "transformer":
            assert check["mode"] == "full" and check["seed"] != int(key[:8], 16)
            assert check["cases"][:4] == ["min", "opt", "max", "random"] and len(check["cases"]) == 7
        else:
            assert check["mode"] == "quick" and check["seed"] is None and check["cases"]

    r = cli("verify", cwd=cwd, check=True)
    assert "7 passed, 0 failed" in r.stdout
    # verify --full: each engine against its eager model reloaded from its source, at min, opt,
    # max and a random in-range shape. Not the transformer: its build has just run this very
    # check (full_check_at_build: verify --full's cases and each of the profile's buckets, in
    # a fresh process, and the build fails if one does not match), and it takes minutes.
    encoders = [n for n in NAMES if n != "transformer"]
    r = cli("verify", "--full", "--json", *(a for n in encoders for a in ("-c", n)), cwd=cwd,
            check=True)
    result = json.loads(r.stdout)
    assert result["passed"] and [e["name"] for e in result["engines"]] == encoders
    for engine in result["engines"]:
        assert [c["case"] for c in engine["cases"]] == ["min", "opt", "max", "random"]
        assert all(o["passed"] and o["finite"] for c in engine["cases"] for o in c["outputs"])
    # The transformer's check covered the tiny profile's 3 buckets.
    tx = next(e for e in Cache(cache).entries().values() if e.name == "transformer")
    checks = dict(get_component("transformer").check_sizes(tx.dims, list(tx.buckets)))
    assert list(checks) == ["bucket 416x960", "bucket 960x416", "bucket 544x704"]
    assert checks["bucket 544x704"]["latent_height"] == 68

    r = cli("build", cwd=cwd, check=True)
    assert "0 built, 7 cached, 0 failed" in r.stdout

    # `list` and `--help` never import torch.
    probe = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from framepack_trt.cli import app
        for args in (["--help"], ["list", "--cache-dir", {str(cache)!r}]):
            r = CliRunner().invoke(app, args)
            assert r.exit_code == 0, r.output
        assert "torch" not in sys.modules, "list imported torch"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr

    # SigLIP: the engine that rebuilds fastest.
    siglip = next(e for e in rows if e["name"] == "siglip_image")
    engine = cache / siglip["engine"]
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0x01
    engine.write_bytes(bytes(data))
    r = cli("verify", "-c", "siglip_image", "-c", "clip_text", cwd=cwd)
    assert r.returncode == 1
    assert "corrupt" in r.stdout and "1 passed, 1 failed" in r.stdout
    status = {e["name"]: e["status"] for e in entries(cwd)}
    assert status == {n: "corrupt" if n == "siglip_image" else "ok" for n in NAMES}

    r = cli("build", cwd=cwd, check=True)
    assert "1 built, 6 cached, 0 failed" in r.stdout
    rows = entries(cwd)
    assert all(e["status"] == "ok" for e in rows)
    assert next(e for e in rows if e["name"] == "siglip_image")["engine"] != siglip["engine"]

    r = cli("purge", "--all", "--yes", cwd=cwd, check=True)
    assert "removed 7 engine(s)" in r.stdout
    assert entries(cwd) == []
    assert list((cache / "engines").iterdir()) == []
