"""The CLI through Typer's CliRunner: help, errors and exit codes, and a real build of one
engine followed by list / verify / purge."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import cli, write_profile
from typer.testing import CliRunner

from framepack_trt.cache import Cache, Entry
from framepack_trt.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_help_explains_every_command():
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("build", "list", "purge", "verify", "doctor", "components"):
        assert cmd in r.stdout
    for cmd, words in {"build": ["--profile", "--dry-run", "--force", "--backend", "load"],
                       "list": ["stale", "corrupt", "--json"],
                       "purge": ["--stale", "--all", "--yes", "--dry-run"],
                       "verify": ["--full", "--json", "exit 1"]}.items():
        r = run(cmd, "--help")
        assert r.exit_code == 0
        for w in words:
            assert w in r.stdout, (cmd, w)


def test_components_lists_registry():
    r = run("components")
    assert r.exit_code == 0
    for name in ("clip_text", "llama_text", "siglip_image", "transformers.LlamaModel",
                 "max_autotune"):
        assert name in r.stdout


def test_list_empty(tmp_path):
    r = run("list", "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 0 and "no engines" in r.stdout
    r = run("list", "--cache-dir", str(tmp_path / "c"), "--json")
    assert json.loads(r.stdout) == {"cache_dir": str(tmp_path / "c"), "entries": [],
                                    "orphans": [], "choices": [], "warnings": []}


def test_bad_profile_exit_2_one_message(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("device: tpu\ncomponents: []\n")
    r = run("build", "--profile", str(p), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 2
    assert str(p) in r.stderr and "device: 'tpu' is not valid; valid: cpu, cuda" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("--debug", "build", "--profile", str(p), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 2 and "Traceback" in r.stderr


def test_missing_profile_and_unknown_component(tmp_path, tiny_weights):
    r = run("build", "--profile", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 2 and "not found" in r.stderr
    p = write_profile(tmp_path / "p.yaml", [{"component": "clip_text",
                                             "source": {"path": str(tiny_weights["clip_text"])}}])
    r = run("build", "--profile", str(p), "--component", "vae", "--dry-run")
    assert r.exit_code == 2 and "no component 'vae'" in r.stderr
    r = run("build", "--profile", str(p), "--backend", "nope", "--dry-run")
    assert r.exit_code == 2 and "unknown backend 'nope'" in r.stderr


def test_dry_run_plans_and_writes_nothing(tmp_path, tiny_weights):
    p = write_profile(tmp_path / "p.yaml", [
        {"component": "clip_text", "source": {"path": str(tiny_weights["clip_text"])},
         "dtype": "float32"},
        {"component": "siglip_image", "source": {"path": str(tiny_weights["siglip_image"])},
         "dtype": "float32"}])
    cache = tmp_path / "c"
    r = run("build", "--profile", str(p), "--cache-dir", str(cache), "--dry-run")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("not in cache") == 2
    assert not cache.exists()


def test_missing_weights_path_is_misuse_at_load(tmp_path):
    p = write_profile(tmp_path / "p.yaml", [{"component": "clip_text",
                                             "source": {"path": str(tmp_path / "absent")}}])
    r = run("build", "--profile", str(p), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 2
    assert f"components[0].source.path: '{tmp_path / 'absent'}' is not a directory" in r.stderr


def test_backend_option_for_another_device_is_misuse(tmp_path):
    p = write_profile(tmp_path / "p.yaml", [{"component": "clip_text", "source": {"random": {}}}])
    r = run("build", "--profile", str(p), "--backend", "tensorrt", "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 2 and "builds for cuda only" in r.stderr


def test_cache_dir_that_is_a_file_is_an_error_everywhere(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for args in (["list"], ["verify"], ["purge", "--all", "--yes"]):
        r = run(*args, "--cache-dir", str(f))
        assert r.exit_code == 1 and "exists and is not a directory" in r.stderr, (args, r.output)
    r = run("doctor", "--cache-dir", str(f), "--json")
    assert json.loads(r.stdout)["cache"].startswith("not a directory")


def test_doctor_table_keeps_the_install_hints_extras(tmp_path, monkeypatch):
    """Rich took the hint's [tensorrt-rtx] for markup and dropped it."""
    monkeypatch.setenv("COLUMNS", "600")
    info = json.loads(run("doctor", "--cache-dir", str(tmp_path / "c"), "--json").stdout)
    hints = [v for v in info["backend tensorrt"].values() if "pip install" in v]
    r = run("doctor", "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 0
    for hint in hints:  # none where TensorRT is installed
        assert "'framepack-trt[tensorrt-rtx]'" in hint and hint in r.stdout


def test_no_gpu_is_a_clear_failure(tmp_path, tiny_weights):
    p = write_profile(tmp_path / "p.yaml", [{"component": "clip_text",
                                             "source": {"path": str(tiny_weights["clip_text"])}}],
                      device="cuda")
    # No GPU visible, on a machine with or without one.
    r = cli("build", "--profile", str(p), "--cache-dir", str(tmp_path / "c"),
            env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 1 and "no cuda device on this machine" in r.stderr


def test_unwritable_cache_dir(tmp_path, tiny_weights):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = write_profile(tmp_path / "p.yaml", [{"component": "clip_text",
                                             "source": {"path": str(tiny_weights["clip_text"])}}])
    r = run("build", "--profile", str(p), "--cache-dir", str(blocker / "c"))
    assert r.exit_code == 1 and "is not writable" in r.stderr


def test_purge_needs_a_selector(tmp_path):
    r = run("purge", "--cache-dir", str(tmp_path))
    assert r.exit_code == 2 and "--component NAME, --stale or --all" in r.stderr


def test_doctor(tmp_path):
    r = run("doctor", "--cache-dir", str(tmp_path / "c"), "--json")
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert info["backend aoti"]["cpu"] == "available"
    assert info["torch"].startswith("2.")
    assert info["cache"] == "does not exist yet"


def test_build_list_verify_purge(built_cache, tmp_path):
    profile, original = built_cache
    cache = tmp_path / "cache"
    shutil.copytree(original, cache)
    r = run("build", "--profile", str(profile), "--cache-dir", str(cache))
    assert r.exit_code == 0 and "0 built, 1 cached" in r.stdout
    r = run("list", "--cache-dir", str(cache), "--json")
    entries = json.loads(r.stdout)["entries"]
    assert [(e["name"], e["status"], e["backend"]) for e in entries] == [("siglip_image", "ok", "aoti")]
    assert entries[0]["dims"] == {"batch": {"min": 1, "opt": 1, "max": 2}}
    r = run("verify", "--cache-dir", str(cache), "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["passed"] and res["engines"][0]["result"] == "pass"
    outs = [o for c in res["engines"][0]["cases"] for o in c["outputs"]]
    assert outs and all(o["rel_l2"] <= 1e-4 and o["cosine"] >= 0.99999 for o in outs)
    r = run("verify", "--cache-dir", str(cache), "--full", "--seed", "3", "--json")
    assert r.exit_code == 0, r.output
    cases = json.loads(r.stdout)["engines"][0]["cases"]
    assert [c["case"] for c in cases] == ["min", "opt", "max", "random"]
    assert cases[2]["sizes"] == {"batch": 2}
    r = run("verify", "--cache-dir", str(cache), "--component", "nope")
    assert r.exit_code == 2
    r = run("purge", "--cache-dir", str(cache), "--component", "siglip_image", "--dry-run")
    assert r.exit_code == 0 and "would remove" in r.stdout
    assert len(json.loads(run("list", "--cache-dir", str(cache), "--json").stdout)["entries"]) == 1
    r = run("purge", "--cache-dir", str(cache), "--component", "siglip_image")
    assert r.exit_code == 2 and "--yes" in r.stderr  # no terminal to confirm on
    r = run("purge", "--cache-dir", str(cache), "--component", "siglip_image", "--yes")
    assert r.exit_code == 0, r.output
    listing = json.loads(run("list", "--cache-dir", str(cache), "--json").stdout)
    assert listing["entries"] == [] and listing["orphans"] == []
    assert not any((cache / "engines").iterdir()) and not any((cache / "golden").iterdir())


def test_verify_reports_wrong_engine(built_cache, tmp_path):
    """An engine whose golden outputs no longer match fails verify with the numbers."""
    from safetensors.torch import load_file, save_file

    _, original = built_cache
    cache = tmp_path / "cache"
    shutil.copytree(original, cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    (entry,) = manifest["entries"].values()
    golden = cache / Entry.from_dict(entry).golden.file
    tensors = load_file(str(golden))
    key = next(k for k in tensors if ".output." in k)
    tensors[key] = tensors[key] * 1.1  # as if the engine computed something else
    save_file(tensors, str(golden))
    # Record the new file as the entry's own, so only the numbers (not the checksum) fail.
    entry["golden"] = Cache(cache).describe_file(golden).to_dict()
    (cache / "manifest.json").write_text(json.dumps(manifest))
    r = run("verify", "--cache-dir", str(cache))
    assert r.exit_code == 1
    assert "rel_l2" in r.stdout and "fail" in r.stdout and "0 passed, 1 failed, 0 skipped" in r.stdout


def _copy(built_cache, tmp_path):
    profile, original = built_cache
    cache = tmp_path / "cache"
    shutil.copytree(original, cache)
    return profile, cache


def test_verify_never_passes_what_it_did_not_check(built_cache, tmp_path):
    _, cache = _copy(built_cache, tmp_path)
    manifest = json.loads((cache / "manifest.json").read_text())
    (entry,) = manifest["entries"].values()
    entry["key_fields"]["torch"] = "0.0"  # built with another torch: stale here
    (cache / "manifest.json").write_text(json.dumps(manifest))
    r = run("verify", "--cache-dir", str(cache))
    assert r.exit_code == 1
    assert "0 passed, 0 failed, 1 skipped" in r.stdout and "no engine was checked" in r.stderr
    res = json.loads(run("verify", "--cache-dir", str(cache), "--json").stdout)
    assert res["passed"] is False and res["counts"] == {"passed": 0, "failed": 0, "skipped": 1}
    assert res["engines"][0]["result"] == "skipped" and res["engines"][0]["passed"] is False


@pytest.mark.parametrize("bad", [
    {"format": 1, "entries": [1, 2]},
    "engine-is-a-string",
    "empty-key-fields",
])
def test_wrong_shape_manifest_is_reported_by_every_command(built_cache, tmp_path, bad):
    profile, cache = _copy(built_cache, tmp_path)
    manifest = json.loads((cache / "manifest.json").read_text())
    (entry,) = manifest["entries"].values()
    if bad == "engine-is-a-string":
        entry["engine"] = entry["engine"]["file"]
    elif bad == "empty-key-fields":
        entry["key_fields"] = {}
    else:
        manifest = bad
    (cache / "manifest.json").write_text(json.dumps(manifest))
    for args in (["list"], ["list", "--json"], ["verify"], ["purge", "--stale", "--dry-run"],
                 ["build", "--profile", str(profile), "--dry-run"]):
        r = run(*args, "--cache-dir", str(cache))
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.output)
        assert "malformed" in r.output or "'entries' is a list" in r.output, (args, r.output)
    r = run("verify", "--cache-dir", str(cache))
    assert r.exit_code == 0 and "no engines" in r.stdout  # nothing valid to check
    r = run("build", "--profile", str(profile), "--dry-run", "--cache-dir", str(cache))
    assert "not in cache" in r.stdout  # treated as missing: it will be rebuilt


def test_newer_manifest_format_is_left_alone(built_cache, tmp_path):
    profile, cache = _copy(built_cache, tmp_path)
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["format"] = 2
    text = json.dumps(manifest)
    (cache / "manifest.json").write_text(text)
    files = sorted(p for p in cache.rglob("*") if p.is_file() and "locks" not in p.parts)
    for args in (["build", "--profile", str(profile)], ["purge", "--stale", "--yes"], ["list"],
                 ["verify"]):
        r = run(*args, "--cache-dir", str(cache))
        assert r.exit_code == 1 and "has format 2" in r.stderr and "changes nothing" in r.stderr, \
            (args, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit)
    assert (cache / "manifest.json").read_text() == text
    assert sorted(p for p in cache.rglob("*") if p.is_file() and "locks" not in p.parts) == files


def test_purge_and_verify_on_a_cache_they_cannot_write(built_cache, tmp_path):
    """verify only reads (its scratch files live outside the cache); purge says, in one line,
    that it cannot write. (As root, chmod does not stop writes: a file where locks/ should be
    does the same to the lock files.)"""
    _, cache = _copy(built_cache, tmp_path)
    shutil.rmtree(cache / "locks")
    shutil.rmtree(cache / "tmp")
    (cache / "locks").write_text("not a folder")
    (cache / "tmp").write_text("not a folder")
    r = run("verify", "--cache-dir", str(cache))
    assert r.exit_code == 0 and "1 passed" in r.stdout, r.output
    r = run("purge", "--cache-dir", str(cache), "--all", "--yes")
    assert r.exit_code == 1 and "cannot write in cache dir" in r.stderr, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_build_json_is_the_only_thing_on_stdout(built_cache, tmp_path):
    profile, cache = _copy(built_cache, tmp_path)
    r = cli("build", "--profile", str(profile), "--cache-dir", str(cache), "--json", check=True)
    doc = json.loads(r.stdout)
    assert doc["passed"] and [(x["name"], x["outcome"]) for x in doc["results"]] == [
        ("siglip_image", "cached")]
    assert "plan" in r.stderr


def test_verify_shares_one_process_and_recovers_from_its_crash(tiny_build, monkeypatch):
    """AOTInductor engines are verified in one fresh process together; when that process dies
    (here: made to, as a crash in an engine would), each engine is verified again in a
    process of its own, and every result comes back."""
    import framepack_trt.verify as verify_module
    from framepack_trt.util import ChildFailed

    cache = Cache(tiny_build[0])
    entries = sorted((e for e in cache.entries().values()
                      if e.name in ("clip_text", "siglip_image")), key=lambda e: e.name)
    real, calls, crash = verify_module.run_in_fresh_process, [], [False]

    def spy(module, entry, args, timeout):
        calls.append([e["name"] for e in entry] if isinstance(entry, list) else entry["name"])
        if crash[0] and isinstance(entry, list):
            raise ChildFailed("died (killed by signal 11)")
        return real(module, entry, args, timeout)

    monkeypatch.setattr(verify_module, "run_in_fresh_process", spy)
    results = verify_module.verify_all_isolated(cache, entries)
    assert calls == [["clip_text", "siglip_image"]]
    assert [(r["name"], r["result"]) for r in results] == [("clip_text", "pass"),
                                                            ("siglip_image", "pass")]
    calls.clear()
    crash[0] = True
    results = verify_module.verify_all_isolated(cache, entries)
    assert calls == [["clip_text", "siglip_image"], "clip_text", "siglip_image"]
    assert [(r["name"], r["result"]) for r in results] == [("clip_text", "pass"),
                                                            ("siglip_image", "pass")]


@pytest.mark.skipif(bool(os.environ.get("HF_HOME") or os.environ.get("HF_HUB_CACHE")),
                    reason="HF_HOME or HF_HUB_CACHE is set: the user's choice, looked in alone")
def test_framepack_dir_finds_weights_in_its_hf_download(tmp_path, tiny_weights):
    """`build --framepack-dir` without HF_HOME: the profile's repo sources are looked up in
    FramePack's hf_download (as demo_gradio.py sets HF_HOME), and one that is not there is a
    plan error naming where it looked. Through the console entry point (a fresh process)."""
    from test_sources import _fake_hub_cache, _framepack_folder

    framepack = _framepack_folder(tmp_path / "FramePack")
    _fake_hub_cache(framepack / "hf_download" / "hub", "lllyasviel/flux_redux_bfl",
                    "image_encoder", "d" * 40, tiny_weights["siglip_image"])
    p = write_profile(tmp_path / "p.yaml", [
        {"component": "siglip_image", "dtype": "float32",
         "source": {"repo": "lllyasviel/flux_redux_bfl", "subfolder": "image_encoder"}},
        {"component": "clip_text", "dtype": "float32",
         "source": {"repo": "hunyuanvideo-community/HunyuanVideo", "subfolder": "text_encoder_2"}}])
    r = cli("build", "--profile", str(p), "--framepack-dir", str(framepack), "--dry-run", "--json",
            cwd=tmp_path)
    plan = {i["name"]: i for i in json.loads(r.stdout)["plan"]}
    assert plan["siglip_image"]["action"] == "build", plan
    assert plan["clip_text"]["action"] == "error"
    assert (f"hf:hunyuanvideo-community/HunyuanVideo/text_encoder_2 is not in the local Hugging Face "
            f"cache (looked in: {framepack.resolve() / 'hf_download' / 'hub'}") in plan["clip_text"]["reason"]
    # The same without --framepack-dir, from another folder: FramePack's hf_download is unknown.
    r = cli("build", "--profile", str(p), "--dry-run", "--json", cwd=tmp_path)
    plan = {i["name"]: i for i in json.loads(r.stdout)["plan"]}
    assert plan["siglip_image"]["action"] == "error" and "hf_download" not in plan["siglip_image"]["reason"]


def test_doctor_names_version_mismatches_stale_engines_and_framepack_folder(built_cache,
                                                                            tmp_path):
    """One line each: a library whose version differs from FramePack's pin (read from the
    FramePack folder's requirements.txt), the engines built with other library versions
    (the SigLIP engine's manifest entry as another environment would have written it), and
    whether the FramePack folder imports here (a copy of FramePack's code; then broken)."""
    from framepack_trt.device import library_versions, package_version
    from framepack_trt.framepack_worker import VENDORED

    _, original = built_cache
    cache = tmp_path / "cache"
    shutil.copytree(original, cache)
    doc = json.loads((cache / "manifest.json").read_text())
    (entry,) = doc["entries"].values()
    here = library_versions()
    other = {"diffusers": "0.33.1" if here["diffusers"] != "0.33.1" else "0.42.1",
             "transformers": here["transformers"]}
    entry["key_fields"]["libraries"] = other
    (cache / "manifest.json").write_text(json.dumps(doc))
    framepack = tmp_path / "FramePack"
    shutil.copytree(VENDORED, framepack)
    (framepack / "requirements.txt").write_text(
        f"accelerate=={package_version('accelerate')}\ndiffusers==0.1.0\ngradio==5.23.0\n"
        f"transformers=={here['transformers']}\neinops\n")

    info = json.loads(cli("doctor", "--cache-dir", str(cache), "--framepack-dir", str(framepack),
                          "--json", check=True).stdout)
    assert info["version mismatch: diffusers"].startswith(
        f"diffusers {here['diffusers']} here, FramePack pins 0.1.0 ({framepack / 'requirements.txt'})")
    assert [k for k in info if k.startswith("version mismatch")] == ["version mismatch: diffusers"]
    assert info["stale engines"].startswith(
        f"1: siglip_image: built with other model libraries (diffusers {other['diffusers']} -> "
        f"{here['diffusers']}); they cannot be used here: `framepack-trt build` builds them")
    assert info["FramePack folder"] == f"{framepack.resolve()}: imports (8 of FramePack's modules)"
    assert all("\n" not in str(v) for v in info.values())

    helper = framepack / "diffusers_helper" / "bucket_tools.py"
    helper.write_text("import no_such_module_here\n" + helper.read_text())
    info = json.loads(cli("doctor", "--cache-dir", str(cache), "--framepack-dir", str(framepack),
                          "--json", check=True).stdout)
    assert info["FramePack folder"] == (
        f"{framepack.resolve()}: does not import here: ModuleNotFoundError: No module named "
        "'no_such_module_here' (install FramePack's requirements.txt in this environment)")


def test_supported_versions_and_framepacks_pins():
    """pyproject.toml's ranges as doctor checks them, and FramePack's requirements.txt read."""
    import tomllib

    from framepack_trt.versions import FRAMEPACK_PINS, SUPPORTED, unsupported

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    for name, (low, below) in SUPPORTED.items():
        spec = next(d for d in deps["dependencies"] if d.startswith(name + ">"))
        assert spec == f"{name}>={low}" + (f",<{below}" if below else ""), spec
    for name, pinned in FRAMEPACK_PINS.items():  # pip keeps FramePack's pins
        assert unsupported(name, pinned) is None
    assert "older than framepack-trt supports (>=4.46.2)" in unsupported("transformers", "4.45.0")
    assert "newer than framepack-trt supports (<6)" in unsupported("transformers", "6.0.0")
    assert unsupported("diffusers", None) == (
        "diffusers is not installed; framepack-trt needs diffusers>=0.33.1")


def test_purge_json_is_the_plan_and_what_it_removed(built_cache, tmp_path):
    _, cache = _copy(built_cache, tmp_path)
    (cache / "engines" / "stray.pt2").write_bytes(b"x" * 10)
    (entry,) = Cache(cache).entries().values()
    size = entry.engine.size + entry.golden.size + 10
    r = run("purge", "--cache-dir", str(cache), "-c", "siglip_image", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["result"] is None and doc["plan"]["bytes_freed"] == size
    assert [e["name"] for e in doc["plan"]["engines"]] == ["siglip_image"]
    assert doc["plan"]["orphans"] == ["engines/stray.pt2"]
    r = run("purge", "--cache-dir", str(cache), "-c", "siglip_image", "--yes", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)["result"]
    assert result["engines"] == 1 and len(result["files"]) == 2 and len(result["orphans"]) == 1
    assert json.loads(run("list", "--cache-dir", str(cache), "--json").stdout)["entries"] == []
