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


def entries(cwd):
    return json.loads(cli("list", "--json", cwd=cwd, check=True).stdout)["entries"]


def test_tiny_profile_end_to_end(tmp_path, tiny_build):
    built, build_stdout = tiny_build  # `framepack-trt build` (the built-in tiny profile)
    assert "4 built, 0 cached, 0 failed" in build_stdout
    for stage in ("load", "export", "compile", "save", "verify"):
        assert f"clip_text: {stage}" in build_stdout
    cwd = tmp_path  # the default cache is Cache/tensorrt_engines under the current folder
    cache = cwd / "Cache" / "tensorrt_engines"
    shutil.copytree(built, cache)  # copy2: sizes and mtimes as built

    rows = entries(cwd)
    assert sorted(e["name"] for e in rows) == ["clip_text", "llama_text", "siglip_image",
                                               "transformer"]
    assert all(e["status"] == "ok" and e["backend"] == "aoti" for e in rows)

    r = cli("verify", cwd=cwd, check=True)
    assert "4 passed, 0 failed" in r.stdout
    r = cli("verify", "--full", "--json", cwd=cwd, check=True)
    result = json.loads(r.stdout)
    assert result["passed"]
    for engine in result["engines"]:
        names = [c["case"] for c in engine["cases"]]
        assert names[:4] == ["min", "opt", "max", "random"]
        # The transformer is also checked at each of the tiny profile's 4 buckets.
        assert len(names) == (4 + 4 if engine["name"] == "transformer" else 4), names
        assert all(o["passed"] and o["finite"] for c in engine["cases"] for o in c["outputs"])
    tx = next(e for e in result["engines"] if e["name"] == "transformer")
    assert {"bucket 544x704", "bucket 960x416"} <= {c["case"] for c in tx["cases"]}
    assert next(c for c in tx["cases"] if c["case"] == "bucket 544x704")["sizes"][
        "latent_height"] == 68

    r = cli("build", cwd=cwd, check=True)
    assert "0 built, 4 cached, 0 failed" in r.stdout

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
    r = cli("verify", cwd=cwd)
    assert r.returncode == 1
    assert "corrupt" in r.stdout and "3 passed, 1 failed" in r.stdout
    status = {e["name"]: e["status"] for e in entries(cwd)}
    assert status == {"clip_text": "ok", "llama_text": "ok", "siglip_image": "corrupt",
                      "transformer": "ok"}

    r = cli("build", cwd=cwd, check=True)
    assert "1 built, 3 cached, 0 failed" in r.stdout
    rows = entries(cwd)
    assert all(e["status"] == "ok" for e in rows)
    assert next(e for e in rows if e["name"] == "siglip_image")["engine"] != siglip["engine"]

    r = cli("purge", "--all", "--yes", cwd=cwd, check=True)
    assert "removed 4 engine(s)" in r.stdout
    assert entries(cwd) == []
    assert list((cache / "engines").iterdir()) == []
