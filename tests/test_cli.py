"""The CLI through Typer's CliRunner: help, errors and exit codes, and a real build of one
engine followed by list / verify / purge."""

from __future__ import annotations

import json
import shutil

from conftest import write_profile
from typer.testing import CliRunner

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
                                    "orphans": [], "warnings": []}


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


def test_missing_weights_fail_that_component_exit_1(tmp_path):
    p = write_profile(tmp_path / "p.yaml", [{"component": "clip_text",
                                             "source": {"path": str(tmp_path / "absent")}}])
    r = run("build", "--profile", str(p), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 1
    assert f"weights directory {tmp_path / 'absent'} does not exist" in r.stderr


def test_no_gpu_is_a_clear_failure(tmp_path, tiny_weights):
    p = write_profile(tmp_path / "p.yaml", [{"component": "clip_text",
                                             "source": {"path": str(tiny_weights["clip_text"])}}],
                      device="cuda")
    r = run("build", "--profile", str(p), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 1 and "no cuda device on this machine" in r.stderr


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
    assert entries[0]["dims"] == {"batch": {"min": 1, "opt": 1, "max": 3}}
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
    assert cases[2]["sizes"] == {"batch": 3}
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
    golden = cache / entry["golden"]["file"]
    tensors = load_file(str(golden))
    key = next(k for k in tensors if ".output." in k)
    tensors[key] = tensors[key] * 1.1  # as if the engine computed something else
    save_file(tensors, str(golden))
    # Record the new file as the entry's own, so only the numbers (not the checksum) fail.
    from framepack_trt.cache import Cache

    entry["golden"] = Cache(cache).describe_file(golden)
    (cache / "manifest.json").write_text(json.dumps(manifest))
    r = run("verify", "--cache-dir", str(cache))
    assert r.exit_code == 1
    assert "rel_l2" in r.stdout and "fail" in r.stdout and "0 passed, 1 failed" in r.stdout
