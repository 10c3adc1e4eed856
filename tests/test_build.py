"""Builds that go wrong: a crash between the engine file and the manifest, Ctrl-C during a
compile, and two build processes racing on one cache. Real engines (AOTInductor, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import cli, write_profile


@pytest.fixture
def one_engine_profile(tmp_path, tiny_weights):
    return write_profile(tmp_path / "one.yaml", [
        {"component": "siglip_image", "source": {"path": str(tiny_weights["siglip_image"])},
         "dtype": "float32"}])


def listing(cache):
    return json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)


CRASH = textwrap.dedent("""
    import os, sys
    from framepack_trt.build import build, plan
    from framepack_trt.cache import Cache
    from framepack_trt.profile import load_profile

    def crash(self, entry):  # the process dies after the files, before the manifest
        os._exit(17)

    Cache.commit = crash
    profile = load_profile(sys.argv[1])
    cache = Cache(sys.argv[2])
    cache.ensure_writable()
    build(profile, cache, plan(profile, cache))
""")


def test_crash_between_file_and_manifest(tmp_path, one_engine_profile):
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", CRASH, str(one_engine_profile), str(cache)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 17, proc.stderr
    assert any((cache / "engines").iterdir())  # the engine file was complete...
    state = listing(cache)
    assert state["entries"] == []  # ...but no entry points at it
    assert sorted(p.split("/")[0] for p in state["orphans"]) == ["engines", "golden"]
    r = cli("purge", "--cache-dir", str(cache), "--stale", "--yes", check=True)
    assert "2 orphan(s)" in r.stdout
    assert listing(cache)["orphans"] == []
    r = cli("build", "--profile", str(one_engine_profile), "--cache-dir", str(cache), check=True)
    assert "1 built, 0 cached, 0 failed" in r.stdout
    state = listing(cache)
    assert [e["status"] for e in state["entries"]] == ["ok"] and state["orphans"] == []


def test_ctrl_c_during_compile_leaves_cache_consistent(tmp_path, one_engine_profile):
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-m", "framepack_trt", "build", "--profile", str(one_engine_profile),
         "--cache-dir", str(cache)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip().endswith(": compile"):
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=600)
    assert seen[-1].strip().endswith(": compile"), "".join(seen)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "consistent" in err
    state = listing(cache)
    assert state["entries"] == [] and state["orphans"] == []
    for d in ("engines", "golden", "tmp"):
        assert list((cache / d).iterdir()) == [], d


def test_two_builds_at_once_build_each_engine_once(tmp_path, one_engine_profile):
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "framepack_trt", "build", "--profile", str(one_engine_profile),
            "--cache-dir", str(cache)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "COLUMNS": "200"}) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err
    built = sum("1 built" in out for out, _ in outs)
    cached = sum("0 built, 1 cached" in out for out, _ in outs)
    assert (built, cached) == (1, 1), [o for o, _ in outs]
    state = listing(cache)
    assert [e["status"] for e in state["entries"]] == ["ok"] and state["orphans"] == []
    assert len(list((cache / "engines").iterdir())) == 1
    cli("verify", "--cache-dir", str(cache), check=True)
