"""backend: auto: every available backend is built, verified and timed against eager; the
fastest verified engine that beats eager by auto.MIN_SPEEDUP is kept, the choice and every
candidate's numbers are recorded, and the next build builds nothing. On this CPU machine the
one candidate is AOTInductor; which way its timing goes is not asserted (timing claims stay
out of tests), only that the choice follows the numbers it recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import cli, write_profile

from framepack_trt import auto
from framepack_trt.cache.choices import Candidate, TimedCase
from framepack_trt.components.base import get_component


@pytest.fixture
def auto_profile(tmp_path, tiny_weights):
    return write_profile(tmp_path / "auto.yaml", [
        {"component": "siglip_image", "source": {"path": str(tiny_weights["siglip_image"])},
         "dtype": "float32"}], backend="auto")


def listing(cache):
    return json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)


FAILING = textwrap.dedent("""
    import sys
    from framepack_trt.backends.aoti import AotiBackend
    from framepack_trt.cli import main

    def broken(self, request, out_path):
        raise RuntimeError("the compiler broke")

    AotiBackend.build = broken
    sys.argv = ["framepack-trt", *sys.argv[1:]]
    main()
""")


def test_failure_is_not_retried_without_force_then_auto_keeps_what_its_numbers_say(tmp_path, auto_profile):
    """One real build serves both stories (it used to be two tests that built the same engine):
    a compiler failure is recorded and not retried without --force; a candidate built before
    is timed without being built again, kept or dropped by the numbers recorded, and the next
    build builds nothing."""
    cache = tmp_path / "cache"
    args = ["build", "--profile", str(auto_profile), "--cache-dir", str(cache)]
    r = subprocess.run([sys.executable, "-c", FAILING, *args], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 1 and "the compiler broke" in r.stderr, r.stdout + r.stderr
    (choice,) = listing(cache)["choices"]
    assert choice["kept"] is None
    assert [(c["backend"], c["outcome"]) for c in choice["candidates"]] == [("aoti", "failed")]
    assert "at compile: RuntimeError: the compiler broke" in choice["candidates"][0]["error"]
    r = cli(*args, check=True)  # the compiler works again, but nothing is retried
    assert "0 built, 1 cached" in r.stdout and ": compile" not in r.stdout
    assert "aoti failed" in r.stdout

    r = cli(*args, "--force", "--dry-run", check=True)  # --force would try it again
    assert "rebuild" in r.stdout and "--force" in r.stdout

    # Forget the choice and build the candidate on its own (as --backend does, or an auto
    # build interrupted after building it): auto then times it without building it again.
    cli("purge", "--cache-dir", str(cache), "--component", "siglip_image", "--yes", check=True)
    r = cli(*args, "--backend", "aoti", check=True)
    assert "1 built" in r.stdout
    (prebuilt,) = listing(cache)["entries"]
    r = cli(*args, check=True)
    assert ": time" in r.stdout and "auto:" in r.stdout and ": compile" not in r.stdout
    state = listing(cache)
    (choice,) = state["choices"]
    (cand,) = choice["candidates"]
    assert cand["backend"] == "aoti" and cand["outcome"] in ("kept", "not-faster-than-eager")
    assert cand["cases"] and cand["key"] == prebuilt["key"]
    case = cand["cases"][0]
    assert case["case"] == "opt" and case["eager_ms"] > 0 and case["engine_ms"] > 0
    assert case["speedup"] == pytest.approx(case["eager_ms"] / case["engine_ms"], rel=1e-2)
    cases = [TimedCase.from_dict(c) for c in cand["cases"]]
    assert cand["speedup"] == pytest.approx(auto.speedup(cases), rel=1e-3)
    if cand["speedup"] >= auto.MIN_SPEEDUP:
        assert cand["outcome"] == "kept" and choice["kept"] == cand["key"]
        (entry,) = state["entries"]
        assert entry["key"] == cand["key"] and entry["status"] == "ok"
        assert entry["speedup"] == cand["speedup"]
    else:
        assert cand["outcome"] == "not-faster-than-eager" and choice["kept"] is None
        assert state["entries"] == [] and state["orphans"] == []
    r = cli(*args, check=True)
    assert "0 built, 1 cached" in r.stdout and ": compile" not in r.stdout
    assert listing(cache)["choices"] == [choice]
    md = tmp_path / "bench.md"
    cli("bench", "--cache-dir", str(cache), "--iters", "1", "--warmup", "0", "--markdown", str(md),
        check=True)
    row = next(line for line in md.read_text().splitlines()
               if line.startswith(f"| siglip_image | aoti | {cand['backend_version']} | {cand['outcome']} |"))
    assert f"| {case['eager_ms']:.3f} | {case['engine_ms']:.3f} |" in row
    r = cli("purge", "--cache-dir", str(cache), "--component", "siglip_image", "--yes", check=True)
    assert listing(cache)["choices"] == [] and listing(cache)["entries"] == []


def test_decide_keeps_the_fastest_only_above_the_bar():
    def rec(backend, speedup, outcome="verified"):
        return Candidate(backend, "x", key=backend, outcome=outcome, speedup=speedup)

    records = [rec("aoti", 1.31), rec("tensorrt", 0.68), rec("x", None, "failed")]
    assert auto.decide(records).backend == "aoti"
    assert [r.outcome for r in records] == ["kept", "not-faster-than-eager", "failed"]
    records = [rec("aoti", 1.02), rec("tensorrt", 0.9)]
    assert auto.decide(records) is None
    assert [r.outcome for r in records] == ["not-faster-than-eager"] * 2
    records = [rec("aoti", 1.5), rec("tensorrt", 1.2)]
    assert auto.decide(records).backend == "aoti"
    assert [r.outcome for r in records] == ["kept", "slower"]


def test_transformer_is_timed_at_three_buckets():
    tx = get_component("transformer")
    sizes = tx.timing_sizes(tx.default_dims)
    labels = [label for label, _ in sizes]
    assert labels[0] == "opt" and sizes[0][1]["latent_height"] == 68  # 544x704
    assert "bucket 416x960" in labels and "bucket 640x608" in labels
    assert "bucket 544x704" not in labels  # the same sizes as opt
    assert len(sizes) == 3
