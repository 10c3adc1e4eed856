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
    """The second build starts while the first holds the engine's lock (it is compiling), plans
    a build, waits on the lock, then finds the engine the first one committed."""
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "framepack_trt", "build", "--profile", str(one_engine_profile),
            "--cache-dir", str(cache)]
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    head = []
    for line in first.stdout:
        head.append(line)
        if line.strip().endswith(": compile"):
            break
    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    outs = [("".join(head) + first.communicate(timeout=900)[0]), second.communicate(timeout=900)[0]]
    assert first.returncode == 0 and second.returncode == 0, outs
    assert "1 built, 0 cached" in outs[0]
    assert "│ build " in outs[1] and "cached-by-other" in outs[1] and "0 built, 1 cached" in outs[1]
    state = listing(cache)
    assert [e["status"] for e in state["entries"]] == ["ok"] and state["orphans"] == []
    assert len(list((cache / "engines").iterdir())) == 1
    cli("verify", "--cache-dir", str(cache), check=True)


PATCHED = textwrap.dedent("""
    import subprocess, sys
    import framepack_trt.build as build_module
    from framepack_trt.cache import Cache
    from framepack_trt.cli import main

    mode, cache_dir = sys.argv[1], sys.argv[2]
    real_run = subprocess.run

    def purge_then_run(*args, **kwargs):  # a `purge --stale` lands as the check starts
        Cache(cache_dir).remove_orphans()
        return real_run(*args, **kwargs)

    def unchecked(cache, entry, **kwargs):  # the checking process sees another device
        return {"name": entry["name"], "key": entry["key"], "mode": "quick", "passed": False,
                "result": "skipped", "status": "stale", "cases": [], "error": "",
                "status_reason": "built for another device"}

    if mode == "purge-during-verify":
        subprocess.run = purge_then_run  # the check's child process starts through it
    elif mode == "unchecked":
        build_module.verify_in_fresh_process = unchecked
    sys.argv = ["framepack-trt", *sys.argv[3:]]
    main()
""")


def patched_build(mode, profile, cache, *extra):
    return subprocess.run([sys.executable, "-c", PATCHED, mode, str(cache), "build", "--profile",
                           str(profile), "--cache-dir", str(cache), *extra],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})


def test_force_rebuild_never_loses_the_cached_engine(tmp_path, one_engine_profile):
    """build --force: the old engine stays usable through a purge, a Ctrl-C and an unchecked
    rebuild, and goes only when a checked new one is committed."""
    cache = tmp_path / "cache"
    # The first build, with a purge landing just as its check starts.
    r = patched_build("purge-during-verify", one_engine_profile, cache)
    assert r.returncode == 0 and "1 built" in r.stdout, r.stdout + r.stderr
    (old,) = listing(cache)["entries"]
    assert old["status"] == "ok"

    proc = subprocess.Popen(
        [sys.executable, "-m", "framepack_trt", "build", "--profile", str(one_engine_profile),
         "--cache-dir", str(cache), "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if line.strip().endswith(": compile"):
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=600)
    assert proc.returncode == 130
    state = listing(cache)
    assert [(e["engine"], e["status"]) for e in state["entries"]] == [(old["engine"], "ok")]
    assert state["orphans"] == []

    r = patched_build("unchecked", one_engine_profile, cache, "--force")
    assert r.returncode == 1 and "was not checked, so it is not cached" in r.stderr, r.stderr
    state = listing(cache)
    assert [(e["engine"], e["status"]) for e in state["entries"]] == [(old["engine"], "ok")]
    assert state["orphans"] == []
    cli("verify", "--cache-dir", str(cache), check=True)

    r = cli("build", "--profile", str(one_engine_profile), "--cache-dir", str(cache), "--force",
            check=True)
    assert "1 built" in r.stdout
    state = listing(cache)
    (new,) = state["entries"]
    assert new["status"] == "ok" and new["engine"] != old["engine"] and state["orphans"] == []
    assert not (cache / old["engine"]).exists()
    assert sorted(p.name for p in (cache / "engines").iterdir()) == [new["engine"].split("/")[-1]]
    cli("verify", "--cache-dir", str(cache), check=True)
