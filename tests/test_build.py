"""Builds that go wrong: a crash between the engine file and the manifest, Ctrl-C during a
compile, and two build processes racing on one cache. Real engines (AOTInductor, CPU)."""

from __future__ import annotations

import json
import os
import shutil
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


def interruptible() -> None:
    """Ctrl-C as a terminal delivers it: SIGINT back to its default in the child. A command
    started in the background by a non-interactive shell (``cmd &``, as a CI script may start
    the suite) inherits SIGINT ignored, and Python then leaves it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def listing(cache):
    return json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)


CRASH = textwrap.dedent("""
    import os, subprocess, sys
    from framepack_trt.build import build
    from framepack_trt.build_plan import plan
    from framepack_trt.cache import Cache
    from framepack_trt.profile import load_profile

    real_run = subprocess.run

    def purge_then_run(*args, **kwargs):  # a `purge --stale` lands as the check starts
        Cache(sys.argv[2]).remove_orphans()
        return real_run(*args, **kwargs)

    def crash(self, entry):  # the process dies after the files, before the manifest
        os._exit(17)

    subprocess.run = purge_then_run  # the check's child process starts through it
    Cache.commit = crash
    profile = load_profile(sys.argv[1])
    cache = Cache(sys.argv[2])
    cache.ensure_writable()
    for result in build(profile, cache, plan(profile, cache)):  # it never got to its commit
        print(result.outcome, result.failed_stage, result.error, result.traceback)
""")


def test_crash_between_file_and_manifest_then_two_builds_at_once(tmp_path, one_engine_profile):
    """A purge that lands as a build's check starts spares the files of the engine being built
    (the check passes, so the build reaches its commit); the process then dies between its
    files and the manifest: the files are orphans, and purge --stale removes them. The cache
    then builds again, with two builds at once: the second starts while the first holds the
    engine's lock (it is compiling), plans a build, waits on the lock, then finds the engine
    the first one committed. (One test: the rebuild after the crash and the race built the
    same engine twice.)"""
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", CRASH, str(one_engine_profile), str(cache)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 17, proc.stdout + proc.stderr  # the check passed despite the purge
    assert any((cache / "engines").iterdir())  # the engine file was complete...
    state = listing(cache)
    assert state["entries"] == []  # ...but no entry points at it
    assert sorted(p.split("/")[0] for p in state["orphans"]) == ["engines", "golden"]
    r = cli("purge", "--cache-dir", str(cache), "--stale", "--yes", check=True)
    assert "2 orphan(s)" in r.stdout
    assert listing(cache)["orphans"] == []

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
    assert "1 built, 0 cached, 0 failed" in outs[0]
    assert "│ build " in outs[1] and "cached-by-other" in outs[1] and "0 built, 1 cached" in outs[1]
    state = listing(cache)
    assert [e["status"] for e in state["entries"]] == ["ok"] and state["orphans"] == []
    assert len(list((cache / "engines").iterdir())) == 1
    cli("verify", "--cache-dir", str(cache), check=True)


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                    (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_or_kill_during_compile_leaves_cache_consistent(tmp_path, one_engine_profile, sig,
                                                              code, word):
    """Ctrl-C, or SIGTERM (a CI timeout, `timeout`, `kill`), during the compile: the build
    removes its unfinished files, says so, and exits 130 or 143."""
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-m", "framepack_trt", "build", "--profile", str(one_engine_profile),
         "--cache-dir", str(cache)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=interruptible)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip().endswith(": compile"):
            proc.send_signal(sig)
            break
    rest, err = proc.communicate(timeout=600)
    assert seen[-1].strip().endswith(": compile"), "".join(seen)
    assert proc.returncode == code, err
    assert word in err and "consistent" in err
    state = listing(cache)
    assert state["entries"] == [] and state["orphans"] == []
    for d in ("engines", "golden", "tmp"):
        assert list((cache / d).iterdir()) == [], d


UNCHECKED = textwrap.dedent("""
    import sys
    import framepack_trt.build as build_module
    from framepack_trt.cli import main

    def unchecked(cache, entry, backend, **kwargs):  # the checking process sees another device
        return {"name": entry.name, "key": entry.key, "mode": "quick", "passed": False,
                "result": "skipped", "status": "stale", "cases": [], "error": "",
                "status_reason": "built for another device"}

    build_module.check_engine = unchecked
    sys.argv = ["framepack-trt", *sys.argv[1:]]
    main()
""")


def test_force_rebuild_never_loses_the_cached_engine(tmp_path, built_cache):
    """build --force: the old engine (a copy of the session's built one) stays usable through a
    Ctrl-C and an unchecked rebuild, and goes only when a checked new one is committed."""
    profile, original = built_cache
    cache = tmp_path / "cache"
    shutil.copytree(original, cache)
    (old,) = listing(cache)["entries"]
    assert old["status"] == "ok"

    proc = subprocess.Popen(
        [sys.executable, "-m", "framepack_trt", "build", "--profile", str(profile),
         "--cache-dir", str(cache), "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=interruptible)
    for line in proc.stdout:
        if line.strip().endswith(": compile"):
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=600)
    assert proc.returncode == 130
    state = listing(cache)
    assert [(e["engine"], e["status"]) for e in state["entries"]] == [(old["engine"], "ok")]
    assert state["orphans"] == []

    r = subprocess.run([sys.executable, "-c", UNCHECKED, "build", "--profile", str(profile),
                        "--cache-dir", str(cache), "--force"], capture_output=True, text=True,
                       timeout=900, env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 1 and "was not checked, so it is not cached" in r.stderr, r.stderr
    state = listing(cache)
    assert [(e["engine"], e["status"]) for e in state["entries"]] == [(old["engine"], "ok")]
    assert state["orphans"] == []

    r = cli("build", "--profile", str(profile), "--cache-dir", str(cache), "--force", check=True)
    assert "1 built" in r.stdout
    state = listing(cache)
    (new,) = state["entries"]
    assert new["status"] == "ok" and new["engine"] != old["engine"] and state["orphans"] == []
    assert not (cache / old["engine"]).exists()
    assert sorted(p.name for p in (cache / "engines").iterdir()) == [new["engine"].split("/")[-1]]
    cli("verify", "--cache-dir", str(cache), check=True)


SEVERAL_CHECKS = textwrap.dedent("""
    import json, sys
    import framepack_trt.build as build_module
    from framepack_trt.backends.aoti import AotiBackend
    from framepack_trt.build import build
    from framepack_trt.build_plan import plan
    from framepack_trt.cache import Cache
    from framepack_trt.profile import load_profile

    AotiBackend.check_processes = 3  # as TensorRT's: its kernels are chosen per process
    real_check = build_module.verify_in_fresh_process
    calls = []

    def check(cache, entry, **kwargs):
        calls.append(kwargs)
        result = real_check(cache, entry, **kwargs)  # a real child process checks the engine
        passed = result["passed"]
        if len(calls) == 3:  # the third process computed it wrong
            result.update(passed=False, result="fail", error="rel L2 3.1e-02 > 1.0e-04")
        print(json.dumps({"call": len(calls), "really_passed": passed}))
        return result

    build_module.verify_in_fresh_process = check
    profile, cache = load_profile(sys.argv[1]), Cache(sys.argv[2])
    cache.ensure_writable()
    (result,) = build(profile, cache, plan(profile, cache))
    print(json.dumps({"result": result.to_dict(),
                      "entries": [e.to_dict() for e in cache.entries().values()]}))
""")


def test_check_in_several_processes(tmp_path, one_engine_profile):
    """A backend whose engine may compute differently per process (TensorRT: check_processes
    3) is checked in that many fresh processes, one after the other; a wrong third process
    refuses the engine, is named, and nothing is cached."""
    from framepack_trt.backends.tensorrt import TensorRTBackend

    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", SEVERAL_CHECKS, str(one_engine_profile),
                           str(cache)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert lines[:3] == [{"call": n, "really_passed": True} for n in (1, 2, 3)]
    result = lines[3]["result"]
    assert result["outcome"] == "failed" and "(check process 3 of 3)" in result["error"]
    assert "3.1e-02" in result["error"] and lines[3]["entries"] == []
    assert list((cache / "engines").iterdir()) == []
    assert TensorRTBackend.check_processes == 3


def test_a_check_that_runs_out_of_device_memory_is_not_called_a_mismatch():
    # The words of a build whose check ran out of GPU memory (six builds verifying at once on
    # one H200, 2026-11-30) against those of a real mismatch.
    from framepack_trt.build import check_failure

    oom = {"passed": False, "error": "AcceleratorError: CUDA error: out of memory\nSearch for "
                                      "`cudaErrorMemoryAllocation' in https://docs.nvidia.com"}
    text = check_failure("vae_decode_whole", oom, full=False, seed=3)
    assert "ran out of device memory" in text and "not found wrong" in text
    assert "does not match eager" not in text and "CUDA error: out of memory" in text
    assert "cudaErrorMemoryAllocation" not in text  # the first line of the error only

    wrong = {"passed": False, "cases": [{"case": "max", "sizes": {"latent_frames": 5}, "outputs": [
        {"output": "sample", "passed": False, "reason": "rel L2 3.1e-02 > 1.0e-02"}]}]}
    text = check_failure("vae_decode_whole", wrong, full=True, seed=3, where=" (check process 1 of 2)")
    assert text == ("vae_decode_whole: the engine does not match eager at the sizes of verify "
                    "--full (inputs drawn with seed 3) (check process 1 of 2): max "
                    "{'latent_frames': 5} sample: rel L2 3.1e-02 > 1.0e-02")


def test_one_checking_process_serves_a_builds_checks(built_cache):
    """The build's CheckServer: one process checks engine after engine (here the same one twice,
    quick then full), each result as a fresh process gives it; a process that was killed is
    replaced at the next check; a broken engine file fails that check only."""
    import signal as signals
    from dataclasses import replace

    from framepack_trt.cache import Cache
    from framepack_trt.verify import CheckServer

    _, cache = built_cache
    (entry,) = Cache(cache).entries().values()
    with CheckServer(cache) as server:
        first = server.check(entry)
        pid = server._proc.pid
        second = server.check(entry, full=True, seed=3)
        assert server._proc.pid == pid
        os.kill(pid, signals.SIGKILL)
        server._proc.wait()
        third = server.check(entry)
        assert server._proc.pid != pid
        missing = server.check(replace(entry, engine=replace(entry.engine, file="engines/none.pt2")))
    assert first["passed"] and first["mode"] == "quick" and len(first["cases"]) == 2
    assert second["passed"] and second["mode"] == "full" and len(second["cases"]) >= 4
    assert third["passed"]
    assert not missing["passed"] and missing["status"] == "missing"


def test_jobs_build_a_failed_engine_again_alone(tmp_path):
    """Engines side by side share the GPU's memory, so one that fails beside others may fail
    for them: ``--jobs`` builds it once more alone and says so; a real failure stays one."""
    bad = {"hidden_size": 30, "num_attention_heads": 7}  # 30 is not a multiple of 7
    profile = write_profile(tmp_path / "bad.yaml", [
        {"component": "clip_text", "name": f"clip_{seed}", "dtype": "float32",
         "source": {"random": {"seed": seed, "config": bad}}, "dims": {"batch": 1, "text_len": 77}}
        for seed in (1, 2)])
    r = cli("build", "--profile", str(profile), "--cache-dir", str(tmp_path / "cache"),
            "--jobs", "2", "--json")
    assert r.returncode == 1, r.stderr
    results = json.loads(r.stdout)["results"]
    assert [x["name"] for x in results] == ["clip_1", "clip_2"]
    for x in results:
        assert x["outcome"] == "failed" and x["failed_stage"] == "load", x
        assert "30" in x["error"] and "7" in x["error"], x["error"]  # the config's own error
        assert x["notes"][0].startswith("built again alone: beside other builds it failed at "
                                        "load: "), x["notes"]


def test_the_build_writes_the_manifest_fields_it_wrote_before(built_cache):
    """The typed manifest entry changed nothing on disk: this build's SigLIP entry has the
    fields, at every level, and the JSON types of the one the tiny build wrote before entries
    were typed (tests/data, read back in test_cache)."""
    from pathlib import Path

    def form(value):
        if isinstance(value, dict):
            return {k: form(v) for k, v in value.items()}
        if isinstance(value, list):
            return [form(v) for v in value]
        return type(value).__name__

    recorded = Path(__file__).parent / "data" / "tiny-manifest-2026-12-07.json"
    old = next(e for e in json.loads(recorded.read_text())["entries"].values()
               if e["name"] == "siglip_image")
    _, cache = built_cache
    (new,) = json.loads((cache / "manifest.json").read_text())["entries"].values()
    assert form(new) == form(old)
