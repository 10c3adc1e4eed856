"""The engine cache: deterministic keys, manifest, status, orphans, removal, cache dir."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import pytest

from framepack_trt.backends.aoti import AotiBackend
from framepack_trt.cache import Cache, Choice, Entry, resolve_cache_dir
from framepack_trt.cache.keys import KEY_FIELDS, engine_key
from framepack_trt.cache.storage import ENV_VAR, MANIFEST_FORMAT
from framepack_trt.device import current_device, library_versions, torch_version
from framepack_trt.engine_status import code_fingerprint, entry_status
from framepack_trt.errors import CacheError

BASE = {
    "component": "clip_text",
    "code": code_fingerprint("clip_text", "aoti"),
    "weights": "ab" * 32,
    "dims": {"batch": {"min": 1, "opt": 1, "max": 2}, "text_len": {"min": 77, "opt": 77, "max": 77}},
    "dtype": "float16",
    "backend": "aoti",
    "backend_version": AotiBackend().version(),
    "torch": torch_version(),
    "libraries": library_versions(),
    "device": current_device("cpu"),
    "build": {"max_autotune": False},
}

CHANGES = {
    "component": "llama_text",
    "code": "12" * 32,
    "weights": "cd" * 32,
    "dims": {"batch": {"min": 1, "opt": 2, "max": 2}, "text_len": {"min": 77, "opt": 77, "max": 77}},
    "dtype": "bfloat16",
    "backend": "tensorrt",
    "backend_version": "torch-0.0",
    "torch": "0.0",
    "libraries": {"diffusers": "0.0", "transformers": "0.0"},
    "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "capability": "9.0"},
    "build": {"max_autotune": True},
}


def test_key_is_deterministic_and_order_free():
    reordered = dict(reversed(list(copy.deepcopy(BASE).items())))
    assert engine_key(BASE) == engine_key(copy.deepcopy(BASE)) == engine_key(reordered)
    assert len(engine_key(BASE)) == 64


@pytest.mark.parametrize("field", KEY_FIELDS)
def test_any_one_field_changes_the_key(field):
    assert set(CHANGES) == set(KEY_FIELDS)
    changed = {**copy.deepcopy(BASE), field: CHANGES[field]}
    assert engine_key(changed) != engine_key(BASE)


def test_key_refuses_missing_or_extra_fields():
    with pytest.raises(ValueError, match="missing"):
        engine_key({k: v for k, v in BASE.items() if k != "weights"})
    with pytest.raises(ValueError, match="unexpected"):
        engine_key({**BASE, "name": "x"})


def make_entry(cache: Cache, name: str = "clip_text", fields: dict | None = None,
               payload: bytes | None = None) -> Entry:
    """Write an engine file and a golden file, and return a manifest entry for them."""
    fields = fields or copy.deepcopy(BASE)
    key = engine_key(fields)
    stem = cache.file_stem(name, key)
    engine = cache.engines_dir / f"{stem}.pt2"
    golden = cache.golden_dir / f"{stem}.safetensors"
    engine.write_bytes(payload or os.urandom(4096))
    golden.write_bytes(os.urandom(512))
    return Entry(key, name, fields["component"], fields, cache.describe_file(engine),
                 cache.describe_file(golden))


@pytest.fixture
def cache(tmp_path) -> Cache:
    c = Cache(tmp_path / "cache")
    c.ensure_writable()
    return c


def test_commit_and_status_ok(cache):
    entry = make_entry(cache)
    cache.commit(entry)
    doc = json.loads(cache.manifest_path.read_text())
    assert doc["format"] == MANIFEST_FORMAT and list(doc["entries"]) == [entry.key]
    assert entry_status(cache, cache.entries()[entry.key]).state == "ok"
    assert cache.orphans() == []


def test_commit_refuses_entry_without_file(cache):
    entry = make_entry(cache)
    (cache.root / entry.engine.file).unlink()
    with pytest.raises(CacheError, match="is missing"):
        cache.commit(entry)
    assert cache.entries() == {}


def test_missing_corrupt_and_stale(cache):
    ok = make_entry(cache, "a")
    cache.commit(ok)
    gone = make_entry(cache, "b", {**copy.deepcopy(BASE), "weights": "01" * 32})
    cache.commit(gone)
    (cache.root / gone.engine.file).unlink()
    flipped = make_entry(cache, "c", {**copy.deepcopy(BASE), "weights": "02" * 32})
    cache.commit(flipped)
    path = cache.root / flipped.engine.file
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    old = make_entry(cache, "d", {**copy.deepcopy(BASE), "torch": "1.0.0"})
    cache.commit(old)
    states = {e.name: entry_status(cache, e) for e in cache.entries().values()}
    assert states["a"].state == "ok"
    assert states["b"].state == "missing" and "missing" in states["b"].reason
    assert states["c"].state == "corrupt" and "sha256" in states["c"].reason
    assert states["d"].state == "stale" and "torch 1.0.0" in states["d"].reason


def test_corruption_with_same_mtime_needs_deep_check(cache):
    entry = make_entry(cache)
    cache.commit(entry)
    path = cache.root / entry.engine.file
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert entry_status(cache, entry).state == "ok"  # quick check trusts size + mtime
    assert entry_status(cache, entry, deep=True).state == "corrupt"


def test_stale_device(cache):
    fields = {**copy.deepcopy(BASE), "device": {"type": "cpu", "arch": "riscv64", "isa": "base"}}
    entry = make_entry(cache, fields=fields)
    st = entry_status(cache, entry)
    assert st.state == "stale" and "riscv64" in st.reason


def test_orphans_and_remove(cache):
    keep = make_entry(cache, "keep")
    drop = make_entry(cache, "drop", {**copy.deepcopy(BASE), "weights": "03" * 32})
    cache.commit(keep)
    cache.commit(drop)
    stray = cache.engines_dir / "stray.pt2"
    stray.write_bytes(b"x")
    half = cache.tmp_dir / "half-written.pt2"
    half.write_bytes(b"x")
    assert set(cache.orphans()) == {stray, half}
    deleted, busy = cache.remove([drop.key])
    assert busy == []
    assert {p.name for p in deleted} == {Path(drop.engine.file).name,
                                         Path(drop.golden.file).name}
    assert list(cache.entries()) == [keep.key]
    assert set(cache.orphans()) == {stray, half}


def test_unreadable_manifest_is_a_miss_with_warning(cache):
    cache.manifest_path.write_text("{not json")
    assert cache.entries() == {}
    assert "unreadable" in cache.warnings[0]


def test_manifest_of_another_format_is_never_rewritten(cache):
    """A newer framepack-trt's manifest: this version refuses to read it as empty and write
    its own over it (the other entries' files would become orphans and be purged)."""
    entry = make_entry(cache)
    text = json.dumps({"format": 999, "entries": {"k": {"anything": 1}}})
    cache.manifest_path.write_text(text)
    for action in (cache.entries, cache.orphans, cache.remove_orphans, lambda: cache.commit(entry),
                   lambda: cache.remove(["k"]), cache.ensure_writable):
        with pytest.raises(CacheError, match="format 999.*format 1 only.*changes nothing"):
            action()
    assert cache.manifest_path.read_text() == text
    assert Path(cache.root / entry.engine.file).exists()


def test_malformed_entry_is_skipped(cache):
    good = make_entry(cache)
    cache.commit(good)
    doc = json.loads(cache.manifest_path.read_text())
    doc["entries"]["zz"] = {"key": "zz"}
    cache.manifest_path.write_text(json.dumps(doc))
    assert list(cache.entries()) == [good.key]
    assert "malformed" in cache.warnings[0]


def _bad(entry: dict, path: str, value) -> dict:
    bad = copy.deepcopy(entry)
    *parents, last = path.split(".")
    target = bad
    for part in parents:
        target = target[part]
    target[last] = value
    return bad


@pytest.mark.parametrize("path, value, problem", [
    ("engine", "engines/x.pt2", "field 'engine'"),
    ("key_fields", {}, "key_fields lacks component"),
    ("key_fields.device", "cpu", "key_fields.device"),
    ("golden.size", "12", "golden.size"),
    ("name", None, "field 'name'"),
])
def test_wrong_shape_entries_are_reported_and_missing(cache, path, value, problem):
    good = make_entry(cache)
    cache.commit(good)
    doc = json.loads(cache.manifest_path.read_text())
    doc["entries"][good.key] = _bad(good.to_dict(), path, value)
    cache.manifest_path.write_text(json.dumps(doc))
    assert cache.entries() == {}
    assert problem in cache.warnings[0] and "rebuilt" in cache.warnings[0]


def test_entries_of_the_wrong_type_are_reported(cache):
    cache.manifest_path.write_text(json.dumps({"format": 1, "entries": [1, 2]}))
    assert cache.entries() == {} and "'entries' is a list" in cache.warnings[0]
    cache.manifest_path.write_text(json.dumps([1]))
    assert cache.entries() == {} and "not a JSON object" in cache.warnings[-1]


def test_commit_replaces_and_then_deletes_the_old_files(cache):
    old = make_entry(cache)
    cache.commit(old)
    new = make_entry(cache)  # same key, new build: its own file names
    assert new.engine.file != old.engine.file
    assert cache.commit(new).engine.file == old.engine.file
    assert cache.entries()[new.key].engine == new.engine
    assert not (cache.root / old.engine.file).exists()
    assert not (cache.root / old.golden.file).exists()
    assert cache.orphans() == [] and entry_status(cache, new).state == "ok"


def test_remove_leaves_an_engine_being_built(cache):
    entry = make_entry(cache)
    cache.commit(entry)
    with cache.entry_lock(entry.key):
        deleted, busy = cache.remove([entry.key])
    assert (deleted, busy) == ([], [entry.key])
    assert list(cache.entries()) == [entry.key]
    assert entry_status(cache, entry).state == "ok"


def test_unwritable_locks_are_one_clear_error(cache):
    """What a read-only cache gives purge and verify: a CacheError naming the cache, not an
    OSError traceback (as root, chmod does not stop writes; a file where locks/ should be
    does)."""
    entry = make_entry(cache)
    cache.commit(entry)
    (cache.locks_dir / "manifest.lock").unlink()
    cache.locks_dir.rmdir()
    cache.locks_dir.write_text("not a folder")
    with pytest.raises(CacheError, match=r"cannot write in cache dir .*--cache-dir"):
        cache.remove([entry.key])
    with pytest.raises(CacheError, match=r"cannot write in cache dir"):
        cache.remove_orphans() if cache.orphans() else cache.commit(entry)


def test_manifest_write_is_atomic(cache, monkeypatch):
    """A failure while writing the manifest leaves the previous manifest intact."""
    first = make_entry(cache, "first")
    cache.commit(first)
    before = cache.manifest_path.read_text()
    second = make_entry(cache, "second", {**copy.deepcopy(BASE), "weights": "04" * 32})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(CacheError, match="disk full"):
        cache.commit(second)
    monkeypatch.undo()
    assert cache.manifest_path.read_text() == before
    assert [p.name for p in cache.root.iterdir() if p.name.endswith(".tmp")] == []


def test_ensure_writable_errors(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CacheError, match="is not a directory"):
        Cache(f).ensure_writable()
    # A folder that cannot be created (its parent is a file): works even as root.
    with pytest.raises(CacheError, match="is not writable.*--cache-dir"):
        Cache(f / "cache").ensure_writable()


def test_resolve_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    fp = tmp_path / "FramePack"
    assert resolve_cache_dir(framepack_dir=fp) == fp / "Cache" / "tensorrt_engines"
    monkeypatch.chdir(tmp_path)
    assert resolve_cache_dir() == tmp_path / "Cache" / "tensorrt_engines"
    assert resolve_cache_dir(profile_dir=tmp_path / "p") == tmp_path / "p"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_cache_dir(profile_dir=tmp_path / "p") == tmp_path / "env"
    assert resolve_cache_dir(cli=tmp_path / "cli", profile_dir=tmp_path / "p") == tmp_path / "cli"


def test_remove_orphans_spares_engines_being_built(cache):
    """A build moves its files into place before its manifest entry exists; purge must not
    delete them while that build holds its lock."""
    stray = cache.engines_dir / "old-0123456789abcdef.pt2"
    stray.write_bytes(b"x")
    key = "fedcba9876543210" + "0" * 48
    # A profile name with dots and dashes, and a key-like part in it, must not fool the parse.
    building = cache.engines_dir / f"{cache.file_stem('llama.short-0123456789abcdef.v2', key)}.pt2"
    building.write_bytes(b"y")
    with cache.entry_lock(key):
        assert cache.remove_orphans() == [stray]
    assert building.exists() and not stray.exists()
    assert cache.remove_orphans() == [building]


@pytest.mark.parametrize("field, value, reason", [
    ("libraries", {"diffusers": "0.1", "transformers": "0.2"}, "other model libraries (diffusers 0.1 ->"),
    ("code", "00" * 32, "the code that exports or compiles it has changed"),
])
def test_changed_libraries_or_code_make_an_engine_stale(cache, field, value, reason):
    entry = make_entry(cache, fields={**copy.deepcopy(BASE), field: value})
    st = entry_status(cache, entry)
    assert st.state == "stale" and reason in st.reason


def test_entry_of_an_older_version_is_stale_not_malformed(cache):
    fields = {k: v for k, v in copy.deepcopy(BASE).items() if k not in ("code", "libraries")}
    entry = dataclasses.replace(make_entry(cache), key_fields=fields)
    cache.commit(entry)
    assert list(cache.entries()) == [entry.key]
    st = entry_status(cache, entry)
    assert st.state == "stale" and "older framepack-trt" in st.reason and "code" in st.reason


def test_code_fingerprint_follows_the_source():
    """The fingerprint is the modules' source: it differs per component and backend and
    covers the modules a component exports through."""
    from framepack_trt.components.base import get_component

    assert code_fingerprint("clip_text", "aoti") != code_fingerprint("llama_text", "aoti")
    assert code_fingerprint("clip_text", "aoti") != code_fingerprint("clip_text", "tensorrt")
    assert "framepack_trt.transformer.export" in get_component("transformer").code_modules
    assert "framepack_trt.export" in get_component("clip_text").code_modules
    assert "framepack_trt.backends.aoti_host" in AotiBackend.code_modules


def test_entry_matches_the_profile_entry_it_came_from(cache):
    """``-c NAME`` in list / verify / purge: an engine of a ``static: true`` entry (or a block
    engine) is selected by the profile entry that asked for it, as by its own name."""
    from framepack_trt.names import entry_matches, selects

    built = dataclasses.replace(make_entry(cache, "vd_544x704_latent_frames5"),
                                component="vae_decode", profile_entry="vd")
    assert entry_matches(built, ["vd"]) and entry_matches(built, ["vd_544x704_latent_frames5"])
    assert not entry_matches(built, ["vd_544x704_latent_frames4"])
    older = dataclasses.replace(built, name="vae_decode", profile_entry=None)  # before the field
    assert entry_matches(older, ["vae_decode"]) and not entry_matches(older, ["vd"])
    # A whole selects its pieces; an auto choice (no profile entry) by name or component.
    assert selects(["transformer"], "tb", "transformer_dual_block_fp8")
    assert selects(["clip"], "clip", "clip_text") and not selects(["vd"], "clip", "clip_text")


RECORDED = Path(__file__).parent / "data" / "tiny-manifest-2026-12-07.json"


def test_a_manifest_written_before_the_typed_entry_reads_and_writes_back_the_same(cache):
    """The manifest of the tiny build as framepack-trt wrote it before entries were typed (its
    build.py wrote each entry as a dict literal): every entry reads into an Entry whose
    accessors answer, writes back the same JSON, and a write of the manifest (here: recording
    an auto choice) leaves every entry as it was. Its engine files are not here: they read as
    missing, so list shows them and build rebuilds them."""
    doc = json.loads(RECORDED.read_text())
    assert doc["format"] == MANIFEST_FORMAT and len(doc["entries"]) == 7
    for raw in doc["entries"].values():
        entry = Entry.from_dict(raw)
        assert entry.to_dict() == raw and entry.extra == {}
        assert entry.backend == "aoti" and entry.device_type == "cpu" and entry.dims
        assert entry.ranges.keys() >= entry.dims.keys() and entry.raw_input_names
        assert entry.input_names == [i["name"] for i in raw["inputs"]]
        assert entry.golden_cases[0].sizes == raw["golden_cases"][0]["sizes"]
    cache.manifest_path.write_text(RECORDED.read_text())
    entries = cache.entries()
    assert cache.warnings == [] and sorted(entries) == sorted(doc["entries"])
    assert {entry_status(cache, e).state for e in entries.values()} == {"missing"}
    cache.record_choice("c" * 64, Choice("x", "clip_text", None, ()))
    after = json.loads(cache.manifest_path.read_text())
    assert after["entries"] == doc["entries"]


def test_an_entry_is_read_by_its_attributes_never_by_string_key(tiny_build):
    """Every entry of the tiny build's manifest, as the cache reads it, is typed: it is not a
    mapping, so code left reading the manifest's dict form (``entry["name"]``,
    ``entry.get(...)``, ``{**entry}``) fails at once instead of reading a field by name. So is
    a recorded ``backend: auto`` choice."""
    entries = Cache(tiny_build[0]).entries()
    assert len(entries) == 7
    for entry in entries.values():
        for name in ("name", "key_fields", "inputs", "engine"):
            with pytest.raises(TypeError):
                entry[name]
            with pytest.raises(TypeError):
                name in entry  # noqa: B015
        with pytest.raises(TypeError):
            _ = {**entry}
        assert not hasattr(entry, "get") and not hasattr(entry, "keys")
        assert entry.to_dict()["name"] == entry.name  # the JSON form, asked for by name
    choice = Choice("x", "clip_text", None, ())
    with pytest.raises(TypeError):
        choice["name"]
    assert not hasattr(choice, "get")


def test_a_choice_reads_and_writes_back_the_same(cache):
    """A recorded ``backend: auto`` choice as build writes it (and as an older build wrote it,
    without the fields the runtime reads) is the same JSON after a read and a write of the
    manifest; a malformed one is skipped with a warning."""
    case = {"case": "opt", "sizes": {"batch": 1}, "eager_ms": 2.0, "engine_ms": 1.0,
            "speedup": 2.0, "rel_l2": 1e-6}
    full = {"name": "clip", "component": "clip_text", "kept": "k" * 64, "min_speedup": 1.03,
            "created": "2026-12-07T00:00:00+0000", "source": {"path": "/w"}, "dtype": "float16",
            "device": "cpu", "candidates": [
                {"backend": "aoti", "backend_version": "torch 2.13", "key": "k" * 64,
                 "outcome": "kept", "speedup": 2.0, "cases": [case], "error": ""},
                {"backend": "tensorrt", "backend_version": "", "key": "", "outcome": "unavailable",
                 "speedup": None, "cases": [], "error": "not installed"}]}
    older = {k: v for k, v in full.items() if k not in ("source", "dtype", "device")}
    bad = {**full, "candidates": [{"backend": "aoti"}]}
    cache.manifest_path.write_text(json.dumps({"format": MANIFEST_FORMAT, "entries": {},
                                               "choices": {"1": full, "2": older, "3": bad}}))
    choices = cache.choices()
    assert sorted(choices) == ["1", "2"] and "manifest choice 3 is malformed" in cache.warnings[0]
    assert choices["1"].kept_candidate.cases[0].speedup == 2.0 and choices["2"].source is None
    cache.commit(make_entry(cache))  # a write of the manifest
    after = json.loads(cache.manifest_path.read_text())["choices"]
    assert after == {"1": full, "2": older}


def test_a_field_this_version_does_not_know_is_kept(cache):
    """A newer framepack-trt's extra field survives a read and a write of the manifest."""
    entry = make_entry(cache)
    raw = {**entry.to_dict(), "made_by_a_newer_version": {"x": [1, 2]}}
    assert Entry.from_dict(raw).extra == {"made_by_a_newer_version": {"x": [1, 2]}}
    assert Entry.from_dict(raw).to_dict() == raw
    cache.manifest_path.write_text(json.dumps({"format": MANIFEST_FORMAT,
                                               "entries": {entry.key: raw}}))
    cache.commit(make_entry(cache, "other", {**copy.deepcopy(BASE), "weights": "05" * 32}))
    assert json.loads(cache.manifest_path.read_text())["entries"][entry.key] == raw


@pytest.mark.parametrize("field, value, problem", [
    ("inputs", [{"name": "x"}], "field 'inputs' has an input"),
    ("golden_cases", "opt", "field 'golden_cases' is not a list"),
    ("raw_inputs", [1], "field 'raw_inputs' is not a list of strings"),
    ("engine_dims", {"batch": {"min": 2, "opt": 1, "max": 1}}, "field 'engine_dims'"),
    ("created", 5, "field 'created' is not a str"),
])
def test_a_wrong_optional_field_is_one_malformed_warning(cache, field, value, problem):
    good = make_entry(cache)
    cache.commit(good)
    doc = json.loads(cache.manifest_path.read_text())
    doc["entries"][good.key][field] = value
    cache.manifest_path.write_text(json.dumps(doc))
    assert cache.entries() == {}
    assert problem in cache.warnings[0] and "rebuilt" in cache.warnings[0]
