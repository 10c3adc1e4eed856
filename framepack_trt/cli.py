"""The ``framepack-trt`` command line: parse, call one library function, print the result.

Heavy imports (torch, transformers, backends) happen inside the commands that need them, so
``--help`` and ``list`` start fast. Expected failures print one red line on stderr and exit
with 2 (misuse) or 1 (failure); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from framepack_trt import __version__
from framepack_trt.errors import FramepackTrtError, UsageError
from framepack_trt.names import entry_matches, selects

app = typer.Typer(
    help="Build, list, verify and purge ahead-of-time engines (TensorRT, AOTInductor) for "
    "FramePack's models, from a YAML shape profile. Run `framepack-trt build` before the first "
    "FramePack run; `framepack-trt purge` forces a rebuild.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": False}

CacheDirOpt = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Engine cache folder. Default: $FRAMEPACK_TENSORRT_CACHE_DIR, else the "
    "profile's cache_dir, else Cache/tensorrt_engines under --framepack-dir.",
    show_default=False)]
FramepackDirOpt = Annotated[Path | None, typer.Option(
    "--framepack-dir", help="FramePack folder whose Cache/tensorrt_engines is the default cache. "
    "Default: the current folder.", show_default=False)]
ProfileOpt = Annotated[str | None, typer.Option(
    "--profile", "-p", help="Profile YAML file, or a built-in profile name (tiny, framepack). "
    "Default: tiny.", show_default=False)]
ComponentsOpt = Annotated[list[str] | None, typer.Option(
    "--component", "--components", "-c", help="Only these profile entries (name or component; "
    "repeat the option for several).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
CacheProfileOpt = Annotated[str | None, typer.Option(
    "--profile", "-p", help="Read the cache dir from this profile.", show_default=False)]


def _errors(fn):
    """Turn expected failures into one red line and an exit code; keep bugs' tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FramepackTrtError as exc:
            if _state["debug"]:
                err.print(traceback.format_exc(), markup=False)
            err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            how = "terminated" if isinstance(exc, Terminated) else "interrupted"
            err.print(f"[yellow]{how}[/]: the cache is consistent (no half-written engine "
                      "was added); run the command again to continue")
            raise typer.Exit(143 if how == "terminated" else 130) from None

    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job's timeout, `timeout`, `kill`): unwinds like Ctrl-C, so a build cleans
    up its unfinished files instead of leaving orphans."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _version(value: bool) -> None:
    if value:
        out.print(f"framepack-trt {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _state["debug"] = debug
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    # A log (CI, a pipe) is not a terminal: give tables room instead of Rich's 80 columns.
    for console in (out, err):
        if not console.is_terminal:
            cols = os.environ.get("COLUMNS", "")
            console.width = int(cols) if cols.isdigit() else 160


def _cache(cache_dir: Path | None, framepack_dir: Path | None, profile=None):
    """The cache; ``--framepack-dir`` also becomes FramePack's folder for weights lookup
    (its hf_download) in this process and those it starts."""
    from framepack_trt.cache import Cache, resolve_cache_dir
    from framepack_trt.sources import use_framepack_dir

    use_framepack_dir(framepack_dir)
    return Cache(resolve_cache_dir(cache_dir, profile.cache_dir if profile else None, framepack_dir))


def _profile_for_cache(profile: str | None):
    if profile is None:
        return None
    from framepack_trt.profile import load_profile

    return load_profile(profile)


def _print_warnings(cache) -> None:
    for w in cache.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}")
    cache.warnings.clear()


# -- build -----------------------------------------------------------------------------------

@app.command()
@_errors
def build(
    profile: ProfileOpt = None,
    cache_dir: CacheDirOpt = None,
    framepack_dir: FramepackDirOpt = None,
    components: ComponentsOpt = None,
    backend: Annotated[str | None, typer.Option(
        "--backend", "-b", help="Build every component with this backend, overriding the "
        "profile: aoti, tensorrt, or auto (build each backend available here, verify and time "
        "each against eager, keep the fastest that beats eager by 3%).",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if cached.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; build nothing.")] = False,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=1, help="Build up to this many engines at once, each in a process "
        "of its own (compiling is mostly one thread: many cores finish sooner). Each process "
        "loads its model, and its check loads it again, on the build's device.")] = 1,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Machine-readable results on stdout (the plan and progress go to "
        "stderr).")] = False,
) -> None:
    """Compile every engine of a profile into the cache; cached engines are skipped.

    Stages per engine: load (weights, offline), export (torch.export with the profile's dims),
    compile (the backend), save (engine + golden samples), verify (engine vs eager on the golden
    samples). The manifest entry is written last, so an interrupted build leaves no half entry.
    """
    if as_json:  # everything for people goes to stderr; stdout carries the JSON alone
        out.file = sys.stderr
        try:
            items, results = _build(profile, cache_dir, framepack_dir, components, backend, force,
                                    dry_run, jobs)
        finally:
            out.file = sys.stdout
        print(json.dumps({"plan": [{"name": i.spec.name, "component": i.spec.component,
                                    "action": i.action, "reason": i.reason, "key": i.key}
                                   for i in items],
                          "results": [r.to_dict() for r in results or []],
                          "passed": not any(r.outcome == "failed" for r in results or [])},
                         indent=2))
    else:
        _, results = _build(profile, cache_dir, framepack_dir, components, backend, force,
                            dry_run, jobs)
    if any(r.outcome == "failed" for r in results or []):
        raise typer.Exit(1)


def _build(profile, cache_dir, framepack_dir, components, backend, force, dry_run, jobs=1):
    from framepack_trt.build import plan
    from framepack_trt.profile import load_profile

    prof = load_profile(profile)
    if backend:
        prof = prof.with_backend(backend)
    cache = _cache(cache_dir, framepack_dir, prof)
    if not dry_run:
        cache.ensure_writable()
    items = plan(prof, cache, components, force)
    _print_warnings(cache)
    out.print(f"profile [bold]{prof.name}[/] ({prof.path})  cache [bold]{cache.root}[/]")
    out.print(_plan_table(items))
    if dry_run:
        return items, None
    todo = [i for i in items if i.action in ("build", "rebuild")]
    if todo:
        results = _run_build(prof, cache, items, todo, jobs)
    else:
        from framepack_trt.build import build as run_build

        results = run_build(prof, cache, items)
    out.print(_summary_table(results))
    failed = [r for r in results if r.outcome == "failed"]
    built = sum(r.outcome == "built" for r in results)
    cached = sum(r.outcome.startswith("cached") for r in results)
    out.print(f"{built} built, {cached} cached, {len(failed)} failed")
    for r in results:
        for note in r.notes:
            out.print(f"[yellow]note:[/] {escape(r.name)}: {escape(note)}")
    for r in failed:
        err.print(f"[red]failed:[/] {escape(r.name)}: {escape(r.error)}"
                  + (f" (at {r.failed_stage})" if r.failed_stage else ""))
        if _state["debug"] and r.traceback:
            err.print(r.traceback, markup=False)
    return items, results


def _plan_table(items) -> Table:
    from framepack_trt.shapes import format_dims

    t = Table(title="plan", title_justify="left")
    for col in ("engine", "component", "backend", "dtype", "device", "dims", "action", "why"):
        t.add_column(col, overflow="fold")
    colors = {"cached": "green", "build": "cyan", "rebuild": "yellow", "error": "red"}
    for i in items:
        s = i.spec
        why = i.reason + (f" (fallback; {i.fallback_from})" if i.fallback_from else "")
        t.add_row(s.name, s.component, s.backend, s.dtype, s.device, format_dims(s.dims),
                  f"[{colors[i.action]}]{i.action}[/]", escape(why))
    return t


def _run_build(prof, cache, items, todo, jobs=1):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from framepack_trt.build import STAGES, Listener
    from framepack_trt.build import build as run_build

    progress = Progress(SpinnerColumn(), TextColumn("{task.description:<24}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[stage]}"),
                        TimeElapsedColumn(), console=out, transient=False)
    live = out.is_terminal

    class Bars(Listener):
        def __init__(self):
            self.overall = progress.add_task("all engines", total=max(len(todo), 1), stage="")
            self.tasks = {}

        def start(self, item):
            label = f"{item.spec.name} ({item.spec.backend})"
            if item.spec.name in self.tasks:  # the fallback backend, or --jobs's retry alone
                progress.reset(self.tasks[item.spec.name], description=label, stage="again")
            else:
                self.tasks[item.spec.name] = progress.add_task(label, total=len(STAGES),
                                                               stage="starting")

        def stage(self, item, stage):
            task = self.tasks[item.spec.name]
            progress.update(task, completed=STAGES.index(stage), stage=stage)
            if not live:
                out.print(f"  {item.spec.name}: {stage}")

        def finish(self, item, result):
            if item.spec.name in self.tasks:
                task = self.tasks[item.spec.name]
                progress.update(task, completed=len(STAGES), stage=result.outcome)
                progress.advance(self.overall)

    with progress:
        listener = Bars()
        return run_build(prof, cache, items, listener, jobs)


def _summary_table(results) -> Table:
    from framepack_trt.build import STAGES
    from framepack_trt.util import human_size

    t = Table(title="summary", title_justify="left")
    for col in ("engine", "backend", "result", *STAGES, "total", "size"):
        t.add_column(col, justify="left" if col in ("engine", "backend", "result") else "right")
    colors = {"built": "green", "cached": "green", "cached-by-other": "green", "failed": "red"}
    for r in results:
        times = [f"{r.times[s]:.1f}s" if s in r.times else "-" for s in STAGES]
        total = f"{sum(r.times.values()):.1f}s" if r.times else "-"
        t.add_row(r.name, r.backend, f"[{colors.get(r.outcome, 'white')}]{r.outcome}[/]", *times, total,
                  human_size(r.engine_size) if r.engine_size else "-")
    return t


# -- list ------------------------------------------------------------------------------------

@app.command("list")
@_errors
def list_(
    cache_dir: CacheDirOpt = None,
    framepack_dir: FramepackDirOpt = None,
    profile: CacheProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the engines in the cache and whether each can run here.

    The backend column names the build settings an engine was built with on (for example
    [nd_tiling, share_weights]); `--json` has them all as "build".

    Status: ok; stale (built for another device, torch or backend version); missing (a file is
    gone); corrupt (a file fails its size or sha256 check). Files no entry references are
    listed as orphans (`purge` removes them).
    """
    from framepack_trt.engine_status import entry_status
    from framepack_trt.shapes import dims_from_dict, format_dims
    from framepack_trt.util import human_size

    cache = _cache(cache_dir, framepack_dir, _profile_for_cache(profile))
    entries = cache.entries()
    rows = []
    for key, e in sorted(entries.items(), key=lambda kv: (kv[1].name, kv[0])):
        st = entry_status(cache, e)
        rows.append({
            "key": key, "name": e.name, "component": e.component, "backend": e.backend,
            "backend_version": e.backend_version, "dtype": e.dtype,
            "dims": {n: r.to_dict() for n, r in e.dims.items()}, "build": e.engine_settings,
            "size": e.engine.size, "device": e.device_name or "",
            "created": e.created or "", "status": st.state, "reason": st.reason,
            "engine": e.engine.file,
        })
    orphans = [p.relative_to(cache.root).as_posix() for p in cache.orphans(entries)]
    choices = sorted(cache.choices().values(), key=lambda c: c["name"])
    for r in rows:  # the speed-up auto measured for the engines it kept
        kept = next((c for ch in choices for c in ch["candidates"] if c.get("key") == r["key"]
                     and c["outcome"] == "kept"), None)
        r["speedup"] = kept["speedup"] if kept else None
    if as_json:
        print(json.dumps({"cache_dir": str(cache.root), "entries": rows, "orphans": orphans,
                          "choices": choices, "warnings": cache.warnings}, indent=2))
        return
    _print_warnings(cache)
    if not rows:
        out.print(f"no engines in {cache.root}")
    else:
        t = Table(title=f"engines in {cache.root}", title_justify="left")
        for col in ("engine", "component", "backend", "dtype", "dims", "size", "device",
                    "created", "status"):
            t.add_column(col, overflow="fold")
        colors = {"ok": "green", "stale": "yellow", "missing": "red", "corrupt": "red"}
        for r in rows:
            dims = format_dims(dims_from_dict(r["dims"]))
            status = f"[{colors[r['status']]}]{r['status']}[/]"
            if r["reason"]:
                status += f" ({escape(r['reason'])})"
            backend = f"{r['backend']} {r['backend_version']}"
            on = [n if v is True else f"{n}={v}" for n, v in sorted(r["build"].items())
                  if v not in (False, None)]  # the settings turned on (nd_tiling, ...)
            if on:
                backend += escape(f" [{', '.join(on)}]")  # brackets, not rich markup
            if r["speedup"]:
                backend += f" (auto, {r['speedup']:.2f}x eager)"
            t.add_row(r["name"], r["component"], backend,
                      r["dtype"], dims, human_size(r["size"]), r["device"],
                      r["created"][:19].replace("T", " "), status)
        out.print(t)
    from framepack_trt.auto import describe

    for c in choices:
        out.print(f"{escape(c['name'])}: {escape(describe(c))}")
    if orphans:
        out.print(f"[yellow]{len(orphans)} orphan file(s)[/] (no manifest entry; "
                  f"`framepack-trt purge --stale` removes them): {', '.join(orphans)}")


# -- purge -----------------------------------------------------------------------------------

@app.command()
@_errors
def purge(
    cache_dir: CacheDirOpt = None,
    framepack_dir: FramepackDirOpt = None,
    profile: CacheProfileOpt = None,
    components: ComponentsOpt = None,
    stale: Annotated[bool, typer.Option(
        "--stale", help="Engines that cannot run here (stale, missing or corrupt).")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Every engine.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go; delete nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove engines (and their manifest entries) so the next `build` recompiles them.

    Entries and files always go together; orphan files and entries whose files are missing are
    removed by every purge.
    """
    if not (components or stale or all_):
        raise UsageError("purge needs --component NAME, --stale or --all")
    from framepack_trt.engine_status import entry_status
    from framepack_trt.util import human_size

    cache = _cache(cache_dir, framepack_dir, _profile_for_cache(profile))
    entries = cache.entries()
    _print_warnings(cache)
    chosen = {}
    for key, e in entries.items():
        st = entry_status(cache, e)
        if (all_ or st.state == "missing" or (stale and st.state != "ok")
                or (components and entry_matches(e, components))):
            chosen[key] = (e, st)
    choices = {k: c for k, c in cache.choices().items()
               if all_ or (components and selects(components, c["name"], c["component"]))}
    if components:
        known = ({n for e in entries.values() for n in (e.name, e.component)}
                 | {c[f] for c in choices.values() for f in ("name", "component")})
        for c in components:
            if c not in known:
                err.print(f"[yellow]warning:[/] no engine named {escape(repr(c))} in {cache.root}")
    orphans = cache.orphans(entries)
    if not chosen and not orphans and not choices:
        out.print(f"nothing to purge in {cache.root}")
        return
    t = Table(title=("would remove" if dry_run else "will remove"), title_justify="left")
    for col in ("what", "status", "size"):
        t.add_column(col)
    for e, st in chosen.values():
        t.add_row(f"{e.name} ({e.engine.file})", st.state, human_size(e.engine.size))
    for c in choices.values():
        t.add_row(f"backend: auto choice of {c['name']}", "-", "-")
    for p in orphans:
        t.add_row(f"orphan {p.relative_to(cache.root).as_posix()}", "-",
                  human_size(p.stat().st_size) if p.is_file() else "-")
    out.print(t)
    if dry_run:
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("purge asks for confirmation; pass --yes to confirm non-interactively")
        if not typer.confirm(f"Remove {len(chosen)} engine(s) and {len(orphans)} orphan(s)?"):
            raise typer.Exit(1)
    deleted, busy = cache.remove(list(chosen))
    # A purged component's backend: auto choice goes too, so the next build chooses again.
    forgotten = cache.remove_choices(None if all_ else list(choices)) if choices else 0
    removed = cache.remove_orphans()
    out.print(f"removed {len(chosen) - len(busy)} engine(s) ({len(deleted)} file(s)) and "
              f"{len(removed)} orphan(s)")
    if forgotten:
        out.print(f"forgot {forgotten} backend: auto choice(s)")
    for key in busy:
        out.print(f"[yellow]kept[/] {escape(chosen[key][0].name)}: it is being built right now; "
                  f"purge it again when that build ends")
    if len(removed) < len(orphans):
        out.print(f"kept {len(orphans) - len(removed)} file(s) of engines being built now")


# -- verify ----------------------------------------------------------------------------------

@app.command()
@_errors
def verify(
    cache_dir: CacheDirOpt = None,
    framepack_dir: FramepackDirOpt = None,
    profile: CacheProfileOpt = None,
    components: ComponentsOpt = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Load the eager model from its recorded source and compare at min, opt, "
        "max and a random in-range shape (default: the golden samples saved at build time).")] = False,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed for --full's random inputs and shape (default: random, printed).",
        show_default=False)] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", help="eager: compare with the eager model in the engine's dtype; fp32: "
        "compare the engine and eager (fp16/bf16) with the model in float32, and pass the engine "
        "if its error is within the tolerance's reference_factor (default 2) of eager's own. "
        "Default: what each engine's tolerance says (eager unless the profile set it).",
        show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check engines against eager PyTorch; exit 1 if any fails.

    Reports max abs error, relative L2, cosine similarity and NaN/Inf per output, with
    pass/fail against each engine's tolerance. Files are checked against their sha256 first.
    Stale engines (built for another device or software) are skipped and said so; they never
    count as passed, and a run that checks no engine at all exits 1.
    """
    import random

    from framepack_trt.components.base import REFERENCES
    from framepack_trt.verify import verify_all_isolated

    cache = _cache(cache_dir, framepack_dir, _profile_for_cache(profile))
    entries = cache.entries()
    _print_warnings(cache)
    selected = [e for e in entries.values() if entry_matches(e, components)]
    if components and not selected:
        raise UsageError(f"no engine named {', '.join(components)} in {cache.root}; it has: "
                         f"{', '.join(sorted(e.name for e in entries.values())) or 'none'}")
    if full and seed is None:
        seed = random.randrange(2**31)
    if reference is not None and reference not in REFERENCES:
        raise UsageError(f"--reference {reference!r} is not valid; expected one of: "
                         f"{', '.join(REFERENCES)}")
    selected.sort(key=lambda e: e.name)
    if not as_json and selected:
        out.print(f"verifying {', '.join(e.name for e in selected)} "
                  f"({'full' if full else 'quick'})...")
    results = verify_all_isolated(cache, selected, full=full, seed=seed, reference=reference)
    skipped = [r for r in results if r["result"] == "skipped"]
    failed = [r for r in results if r["result"] == "fail"]
    # Stale engines are reported, never counted as passed; checking none at all is a failure.
    nothing_checked = bool(results) and len(skipped) == len(results)
    if as_json:
        print(json.dumps({"cache_dir": str(cache.root), "seed": seed,
                          "passed": not failed and not nothing_checked,
                          "counts": {"passed": len(results) - len(failed) - len(skipped),
                                     "failed": len(failed), "skipped": len(skipped)},
                          "engines": results}, indent=2))
    else:
        if not results:
            out.print(f"no engines in {cache.root}")
        else:
            out.print(_verify_table(results, seed))
            out.print(f"{len(results) - len(failed) - len(skipped)} passed, {len(failed)} failed, "
                      f"{len(skipped)} skipped")
            if nothing_checked:
                err.print("[red]error:[/] no engine was checked: every selected engine is stale "
                          "(built for another device or software); rebuild them here with "
                          "`framepack-trt build`")
    if failed or nothing_checked:
        raise typer.Exit(1)


def _verify_table(results: list[dict], seed) -> Table:
    t = Table(title="verify" + (f" (seed {seed})" if seed is not None else ""), title_justify="left")
    for col in ("engine", "case", "sizes", "output", "max_abs", "max/std", "rel_l2", "cosine",
                "finite", "result"):
        t.add_column(col, overflow="fold")

    def num(v, spec):
        return "-" if v is None else format(v, spec)

    for r in results:
        if r["status"] != "ok" or r["error"]:
            label = "[yellow]skipped[/]" if r["result"] == "skipped" else "[red]fail[/]"
            t.add_row(r["name"], "-", "-", "-", "-", "-", "-", "-", "-",
                      f"{label} {r['status']}: {escape(r['status_reason'] or r['error'])}")
            continue
        for c in r["cases"]:
            sizes = " ".join(f"{k}={v}" for k, v in c["sizes"].items())
            if c["error"]:
                t.add_row(r["name"], c["case"], sizes, "-", "-", "-", "-", "-", "-",
                          f"[red]fail[/] {escape(c['error'])}")
            for o in c["outputs"]:
                res = "[green]pass[/]" if o["passed"] else f"[red]fail[/] {escape(o['reason'])}"
                output = o["output"]
                if o.get("reference") == "fp32":
                    output += (f" vs fp32 (eager's own: rel_l2 {o['eager_rel_l2']:.3g}, "
                               f"max/std {o['eager_max_abs_std']:.3g})")
                t.add_row(r["name"], c["case"], sizes, output, num(o["max_abs"], ".3g"),
                          num(o.get("max_abs_std"), ".3g"), num(o["rel_l2"], ".3g"), num(o["cosine"], ".6f"),
                          "yes" if o["finite"] else "[red]no[/]", res)
    return t


# -- bench -----------------------------------------------------------------------------------

@app.command()
@_errors
def bench(
    cache_dir: CacheDirOpt = None,
    framepack_dir: FramepackDirOpt = None,
    components: ComponentsOpt = None,
    iters: Annotated[int, typer.Option("--iters", help="Timed runs per engine and eager.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs first.")] = 3,
    markdown_out: Annotated[Path | None, typer.Option(
        "--markdown", help="Also write the table as Markdown to this file, with every candidate "
        "that `backend: auto` timed when it chose.", show_default=False)] = None,
    as_json: JsonOpt = False,
    framepack: Annotated[bool, typer.Option(
        "--framepack", help="FramePack's section loop instead: demo_gradio.py's own worker "
        "(from --framepack-dir, an importable diffusers_helper, or this repository's copy) "
        "makes a video, eager and through the cache's engines, each in a fresh process.")] = False,
    sections: Annotated[int, typer.Option("--sections", help="--framepack: video sections.")] = 4,
    steps: Annotated[int, typer.Option("--steps", help="--framepack: sampling steps.")] = 25,
    window: Annotated[int, typer.Option("--latent-window-size",
                                        help="--framepack: FramePack's latent window.")] = 9,
    bucket: Annotated[str, typer.Option("--bucket", help="--framepack: the input image's "
                                        "height x width (a 640 bucket).")] = "544x704",
    depth: Annotated[tuple[int, int] | None, typer.Option(
        "--depth", help="--framepack: grow the transformer to DUAL SINGLE blocks after the "
        "engines attach (FramePack's: 20 40).", show_default=False)] = None,
    vram_budget: Annotated[float | None, typer.Option(
        "--vram-budget", help="--framepack: GiB of the card left free (the rest held), so that "
        "FramePack runs its low-VRAM mode as on a card that small.", show_default=False)] = None,
    script: Annotated[str, typer.Option("--script", help="--framepack: demo_gradio.py or "
                                        "demo_gradio_f1.py.")] = "demo_gradio.py",
    no_teacache: Annotated[bool, typer.Option("--no-teacache",
                                              help="--framepack: TeaCache off.")] = False,
    with_cache: Annotated[list[Path] | None, typer.Option(
        "--with-cache", help="--framepack: one more engines run with this cache's engines "
        "(e.g. bf16 and fp8 block engines against one eager run; repeat for several).",
        show_default=False)] = None,
    modules: Annotated[str | None, typer.Option(
        "--modules", help="--framepack: FramePack's modules that get engines, comma-separated "
        "(transformer, text_encoder, text_encoder_2, image_encoder, vae; default: each whose "
        "model is an engine's checkpoint in the cache).", show_default=False)] = None,
) -> None:
    """Time each engine against its eager model at the engine's opt sizes, in the same run.

    Reports medians and the ratio eager/engine (above 1: the engine is faster). Engines that
    cannot run here (stale, missing, corrupt) are skipped. With --framepack: FramePack's
    section loop, eager against the engines (seconds to ready, per section, block-stack steps,
    peak GPU memory, rel L2 of the latents).
    """
    import datetime

    from framepack_trt.bench import bench_entry, markdown
    from framepack_trt.engine_status import entry_status

    cache = _cache(cache_dir, framepack_dir)
    if framepack:
        _bench_sections(cache, framepack_dir, sections, steps, window, bucket, depth,
                        vram_budget, script, not no_teacache, with_cache, markdown_out, as_json,
                        modules)
        return
    entries = [e for e in sorted(cache.entries().values(), key=lambda e: (e.name, e.key))
               if entry_matches(e, components)]
    results = []
    for e in entries:
        st = entry_status(cache, e)
        if st.state != "ok":
            err.print(f"[yellow]skipped:[/] {escape(e.name)}: {st.state} ({escape(st.reason)})")
            continue
        if not as_json:
            out.print(f"timing {e.name} ({e.backend})...")
        results.append(bench_entry(cache, e, warmup=warmup, iters=iters))
    date = datetime.date.today().isoformat()
    table = markdown(results, date)
    if markdown_out:
        from framepack_trt.auto import markdown as auto_markdown

        choices = [c for c in cache.choices().values()
                   if selects(components, c["name"], c["component"])]
        extra = ("\n\nWhat `backend: auto` measured when it chose (every candidate):\n\n"
                 + auto_markdown(choices)) if choices else ""
        markdown_out.write_text(table + extra + "\n")
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        out.print(table, markup=False)


def _bench_sections(cache, framepack_dir, sections, steps, window, bucket, depth, vram_budget,
                    script, teacache, with_cache, markdown_out, as_json, modules=None) -> None:
    import datetime

    from framepack_trt.framepack_bench import SectionSettings, run_sections, table_rows

    try:
        size = tuple(int(v) for v in bucket.lower().split("x"))
        assert len(size) == 2 and min(size) > 0
    except (ValueError, AssertionError):
        raise UsageError(f"--bucket {bucket}: HEIGHTxWIDTH in pixels, e.g. 544x704") from None
    settings = SectionSettings(str(cache.root), str(framepack_dir) if framepack_dir else None,
                               script, sections, steps, window, size, depth, vram_budget,
                               teacache, engine_caches=[str(cache.root)] + [
                                   str(c) for c in with_cache or []] if with_cache else [],
                               modules=[m.strip() for m in modules.split(",") if m.strip()]
                               if modules is not None else None)

    def said(run) -> None:
        if not as_json:
            out.print(f"{run.mode}: ready in {run.ready_s:.1f} s, sections "
                      f"{' '.join(f'{s:.1f}' for s in run.sections_s)} s")

    runs = run_sections(settings, on_run=said)
    head, rows = table_rows(runs)
    if as_json:
        print(json.dumps({"settings": settings.__dict__, "runs": [r.to_dict() for r in runs]},
                         indent=2))
    else:
        t = Table(title=f"FramePack {script}: {sections} sections, {steps} steps, {bucket}, "
                  f"{runs[0].device}", title_justify="left")
        for h in head:
            t.add_column(h)
        for row in rows:
            t.add_row(*map(escape, row))
        out.print(t)
        for r in runs:
            if r.report:
                out.print(f"{r.mode}: {escape(r.report)}")
        out.print("models: " + "; ".join(f"{k}: {v}" for k, v in runs[0].models.items()),
                  markup=False)
    if markdown_out:
        lines = ["| " + " | ".join(head) + " | date |", "|" + "---|" * (len(head) + 1)]
        lines += ["| " + " | ".join(row) + f" | {datetime.date.today().isoformat()} |"
                  for row in rows]
        markdown_out.write_text("\n".join(lines) + "\n")


# -- doctor and components -------------------------------------------------------------------

@app.command()
@_errors
def doctor(
    cache_dir: CacheDirOpt = None,
    framepack_dir: FramepackDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report torch, CUDA, the GPU, each backend (and why one is unavailable), and the cache;
    this environment against FramePack's: library versions against FramePack's pins, engines
    built with other versions (stale), and whether FramePack's folder imports here."""
    from framepack_trt.doctor import report

    cache = _cache(cache_dir, framepack_dir)
    info = report(cache, framepack_dir)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    t = Table(show_header=False, title="framepack-trt doctor", title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in info.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                t.add_row(f"{k}.{kk}", escape(str(vv)))
        else:
            t.add_row(k, escape(str(v)))
    out.print(t)


@app.command()
@_errors
def components() -> None:
    """List the components a profile can name, with their dims and default dtype."""
    from framepack_trt.backends import BACKENDS
    from framepack_trt.components.base import registry

    t = Table(title="components", title_justify="left")
    for col in ("component", "model class", "dtype", "dims (default)", "outputs"):
        t.add_column(col, overflow="fold")
    for name, cls in sorted(registry().items()):
        dims = ", ".join(f"{n}={r}" for n, r in cls.default_dims.items())
        t.add_row(name, cls.model_class, cls.default_dtype, dims, ", ".join(cls.output_names))
    out.print(t)
    for name, cls in BACKENDS.items():
        fields = ", ".join(cls.settings_class.field_names()) or "none"
        out.print(f"backend [bold]{name}[/]: build settings: {fields}")


def main() -> None:
    from framepack_trt.util import quiet_torch_warnings

    quiet_torch_warnings()
    app()


if __name__ == "__main__":
    main()
