"""The library's plans and reports that the CLI prints: the purge plan (what goes, the bytes
freed) and what executing it did, the listing (with the speed-ups auto measured joined on),
the verify plan and report (counts and the pass rule), and the build report. On small real
caches: real files and manifest entries (test_cache.make_entry), no engines to run."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from test_cache import BASE, make_entry

from framepack_trt.build import BuildReport, BuildResult
from framepack_trt.cache import Cache, Choice
from framepack_trt.errors import UsageError
from framepack_trt.listing import list_cache
from framepack_trt.purge import plan_purge
from framepack_trt.verify import VerifyReport, plan_verify


@pytest.fixture
def cache(tmp_path) -> Cache:
    c = Cache(tmp_path / "cache")
    c.ensure_writable()
    return c


def fields(**changes) -> dict:
    return {**copy.deepcopy(BASE), **changes}


def three_engines(cache: Cache):
    """ok (a), missing (b: its engine file deleted), stale (c: another torch), and an orphan."""
    a = make_entry(cache, "a", fields(weights="0a" * 32))
    b = make_entry(cache, "b", fields(weights="0b" * 32))
    c = make_entry(cache, "c", fields(weights="0c" * 32, torch="1.0.0"))
    for e in (a, b, c):
        cache.commit(e)
    (cache.root / b.engine.file).unlink()
    stray = cache.engines_dir / "stray.pt2"
    stray.write_bytes(b"x" * 100)
    return a, b, c, stray


def auto_choice(name: str, component: str, kept_key: str | None, speedup: float) -> Choice:
    return Choice.from_dict({"name": name, "component": component, "kept": kept_key, "min_speedup": 1.03,
            "created": "2026-12-07T00:00:00+0000",
            "candidates": [{"backend": "aoti", "backend_version": "x", "key": kept_key or "",
                            "outcome": "kept" if kept_key else "not-faster-than-eager",
                            "speedup": speedup, "cases": [], "error": ""}]})


def test_purge_plan_says_what_goes_and_the_bytes_freed(cache):
    a, b, c, stray = three_engines(cache)
    cache.record_choice("1" * 64, auto_choice("a", "clip_text", a.key, 1.5))
    plan = plan_purge(cache, ["a"])
    assert sorted(plan.engines) == sorted([a.key, b.key])  # a named; b's files are gone
    assert {k: st.state for k, (_, st) in plan.engines.items()} == {a.key: "ok", b.key: "missing"}
    assert list(plan.choices) == ["1" * 64] and plan.orphans == [stray] and not plan.unknown
    on_disk = (a.engine.size + a.golden.size + b.golden.size + 100)  # b's engine is gone
    assert plan.bytes_freed == on_disk
    doc = plan.to_dict()
    assert [e["name"] for e in doc["engines"]] == [e.name for e, _ in plan.engines.values()]
    assert doc["choices"] == ["a"] and doc["orphans"] == ["engines/stray.pt2"]
    assert doc["bytes_freed"] == on_disk

    stale = plan_purge(cache, stale=True)
    assert sorted(stale.engines) == sorted([b.key, c.key]) and not stale.choices
    everything = plan_purge(cache, everything=True)
    assert len(everything.engines) == 3 and everything.all_choices and everything.choices
    assert plan_purge(cache, ["nope", "c"]).unknown == ["nope"]

    done = plan.execute()
    assert (done.engines, done.forgotten, done.orphans, done.busy) == (2, 1, [stray], [])
    assert {p.name for p in done.files} == {
        p.split("/")[-1] for p in (a.engine.file, a.golden.file, b.golden.file)}
    assert list(cache.entries()) == [c.key] and cache.choices() == {} and cache.orphans() == []
    assert done.to_dict()["forgotten_choices"] == 1


def test_purge_leaves_an_engine_being_built(cache):
    a, _, _, _ = three_engines(cache)
    plan = plan_purge(cache, ["a"])
    with cache.entry_lock(a.key):
        done = plan.execute()
    assert [e.name for e in done.busy] == ["a"] and done.engines == 1  # b went, a stayed
    assert a.key in cache.entries()


def test_nothing_to_purge(cache):
    a = make_entry(cache)
    cache.commit(a)
    plan = plan_purge(cache, stale=True)
    assert plan.empty and plan.bytes_freed == 0 and plan.to_dict()["engines"] == []


def test_listing_joins_the_speedup_auto_measured(cache):
    a, b, c, _ = three_engines(cache)
    cache.record_choice("1" * 64, auto_choice("a", "clip_text", a.key, 1.5))
    cache.record_choice("2" * 64, auto_choice("b", "clip_text", None, 0.9))
    listing = list_cache(cache)
    rows = {e.name: e for e in listing.engines}
    assert [e.name for e in listing.engines] == ["a", "b", "c"]
    assert rows["a"].speedup == 1.5 and rows["b"].speedup is None and rows["c"].speedup is None
    assert [(r.status, bool(r.reason)) for r in listing.engines] == [
        ("ok", False), ("missing", True), ("stale", True)]
    assert rows["a"].dims == BASE["dims"] and rows["a"].build == BASE["build"]
    assert rows["a"].engine == a.engine.file and rows["a"].size == a.engine.size
    assert listing.orphans == ["engines/stray.pt2"]
    assert [ch.name for ch in listing.choices] == ["a", "b"]
    doc = listing.to_dict()
    assert doc["cache_dir"] == str(cache.root) and doc["warnings"] == []
    assert list(doc["entries"][0]) == ["key", "name", "component", "backend", "backend_version",
                                       "dtype", "dims", "build", "size", "device", "created",
                                       "status", "reason", "engine", "speedup"]


def test_listing_carries_the_manifests_warnings(cache):
    good = make_entry(cache)
    cache.commit(good)
    doc = cache.manifest_path.read_text().replace('"name": "clip_text"', '"name": 5')
    cache.manifest_path.write_text(doc)
    listing = list_cache(cache)
    assert listing.engines == [] and "malformed" in listing.warnings[0]


def test_verify_plan_and_the_pass_rule(cache):
    """Nothing here runs an engine: a stale engine is skipped and a missing one fails before
    any process starts (test_cli verifies real engines)."""
    stale = make_entry(cache, "stale", fields(torch="1.0.0"))
    cache.commit(stale)
    plan = plan_verify(cache)
    assert [e.name for e in plan.entries] == ["stale"] and plan.seed is None
    assert plan.mode == "quick"
    report = plan.run()
    assert report.counts == {"passed": 0, "failed": 0, "skipped": 1}
    assert report.nothing_checked and not report.passed  # skipped is never passed
    assert report.to_dict()["engines"][0]["result"] == "skipped"

    gone = make_entry(cache, "gone", fields(weights="0d" * 32))
    cache.commit(gone)
    (cache.root / gone.engine.file).unlink()
    report = plan_verify(cache).run()
    assert [r["name"] for r in report.engines] == ["gone", "stale"]
    assert report.counts == {"passed": 0, "failed": 1, "skipped": 1}
    assert not report.nothing_checked and not report.passed

    full = plan_verify(cache, ["stale"], full=True)
    assert full.mode == "full" and isinstance(full.seed, int)
    assert plan_verify(cache, full=True, seed=7).seed == 7
    with pytest.raises(UsageError, match="no engine named nope in .*it has: gone, stale"):
        plan_verify(cache, ["nope"])
    with pytest.raises(UsageError, match="--reference 'fp64' is not valid"):
        plan_verify(cache, reference="fp64")


def test_verify_report_counts():
    def result(name, verdict):
        return {"name": name, "result": verdict}

    report = VerifyReport(cache_dir=None, seed=3, engines=[result("a", "pass"),
                                                           result("b", "skipped")])
    assert report.counts == {"passed": 1, "failed": 0, "skipped": 1} and report.passed
    assert report.to_dict()["passed"] is True and report.to_dict()["seed"] == 3
    assert VerifyReport(None, None, []).passed  # nothing selected: nothing failed


def test_build_report_counts_and_json():
    results = [BuildResult("a", "built"), BuildResult("b", "cached"),
               BuildResult("c", "cached-by-other"), BuildResult("d", "failed", error="x")]
    report = BuildReport([], results)
    assert report.counts == {"built": 1, "cached": 2, "failed": 1} and not report.passed
    assert [r.name for r in report.failed] == ["d"]
    assert report.to_dict()["results"][3]["error"] == "x"
    dry = BuildReport([])
    assert dry.passed and dry.to_dict() == {"plan": [], "results": [], "passed": True}
    ok = dataclasses.replace(report, results=results[:3])
    assert ok.passed
