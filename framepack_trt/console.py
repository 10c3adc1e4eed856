"""The terminal side of the command line: the two consoles, how failures and interrupts are
shown (one red line and an exit code; the traceback with ``--debug``), and the tables and
lines that show the plans and reports the library returns. No decisions here: ``cli`` calls
the library and hands what it returned to a ``show_*`` function.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import traceback
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from framepack_trt.errors import FramepackTrtError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": False}
STATE_COLORS = {"ok": "green", "stale": "yellow", "missing": "red", "corrupt": "red"}


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job's timeout, `timeout`, `kill`): unwinds like Ctrl-C, so a build cleans
    up its unfinished files instead of leaving orphans."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def setup(debug: bool) -> None:
    """For one command: ``--debug``; SIGTERM unwinds like Ctrl-C; a log (CI, a pipe) is not
    a terminal: tables get room ($COLUMNS, else 160) instead of Rich's 80 columns."""
    _state["debug"] = debug
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    for console in (out, err):
        if not console.is_terminal:
            cols = os.environ.get("COLUMNS", "")
            console.width = int(cols) if cols.isdigit() else 160


def errors(fn):
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


def show_warnings(cache) -> None:
    """The cache's warnings (unreadable manifest, malformed entries), once."""
    for w in cache.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}")
    cache.warnings.clear()


# -- build -----------------------------------------------------------------------------------

def plan_table(items) -> Table:
    """``build``'s plan: one row per profile entry, with its action and why."""
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


def summary_table(results) -> Table:
    """``build``'s results: each stage's seconds and the engine's size."""
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


def show_build(report) -> None:
    """``build``'s results: the summary table, the counts, each note, each failure."""
    out.print(summary_table(report.results))
    counts = report.counts
    out.print(f"{counts['built']} built, {counts['cached']} cached, {counts['failed']} failed")
    for r in report.results:
        for note in r.notes:
            out.print(f"[yellow]note:[/] {escape(r.name)}: {escape(note)}")
    for r in report.failed:
        err.print(f"[red]failed:[/] {escape(r.name)}: {escape(r.error)}"
                  + (f" (at {r.failed_stage})" if r.failed_stage else ""))
        if _state["debug"] and r.traceback:
            err.print(r.traceback, markup=False)


def progress_bars(todo: int):
    """A Rich ``Progress`` and a build ``Listener`` that draws one bar per engine and one for
    all (``todo`` engines). On a console that is not a terminal (a log), each stage is also
    printed as a line ``  NAME: STAGE``."""
    console = out
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from framepack_trt.build import STAGES, Listener

    progress = Progress(SpinnerColumn(), TextColumn("{task.description:<24}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[stage]}"),
                        TimeElapsedColumn(), console=console, transient=False)
    live = console.is_terminal

    class Bars(Listener):
        def __init__(self):
            self.overall = progress.add_task("all engines", total=max(todo, 1), stage="")
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
                console.print(f"  {item.spec.name}: {stage}")

        def finish(self, item, result):
            if item.spec.name in self.tasks:
                task = self.tasks[item.spec.name]
                progress.update(task, completed=len(STAGES), stage=result.outcome)
                progress.advance(self.overall)

    return progress, Bars()


# -- list, purge, verify ---------------------------------------------------------------------

def show_listing(listing) -> None:
    from framepack_trt.auto import describe

    for w in listing.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}")
    if not listing.engines:
        out.print(f"no engines in {listing.cache_dir}")
    else:
        out.print(listing_table(listing))
    for c in listing.choices:
        out.print(f"{escape(c.name)}: {escape(describe(c))}")
    if listing.orphans:
        out.print(f"[yellow]{len(listing.orphans)} orphan file(s)[/] (no manifest entry; "
                  f"`framepack-trt purge --stale` removes them): {', '.join(listing.orphans)}")


def listing_table(listing) -> Table:
    """``list``: the engines, their backend (with the settings turned on and auto's measured
    speed-up) and their state here."""
    from framepack_trt.shapes import dims_from_dict, format_dims
    from framepack_trt.util import human_size

    t = Table(title=f"engines in {listing.cache_dir}", title_justify="left")
    for col in ("engine", "component", "backend", "dtype", "dims", "size", "device",
                "created", "status"):
        t.add_column(col, overflow="fold")
    for r in listing.engines:
        dims = format_dims(dims_from_dict(r.dims))
        status = f"[{STATE_COLORS[r.status]}]{r.status}[/]"
        if r.reason:
            status += f" ({escape(r.reason)})"
        backend = f"{r.backend} {r.backend_version}"
        on = [n if v is True else f"{n}={v}" for n, v in sorted(r.build.items())
              if v not in (False, None)]  # the settings turned on (nd_tiling, ...)
        if on:
            backend += escape(f" [{', '.join(on)}]")  # brackets, not rich markup
        if r.speedup:
            backend += f" (auto, {r.speedup:.2f}x eager)"
        t.add_row(r.name, r.component, backend, r.dtype, dims, human_size(r.size), r.device,
                  r.created[:19].replace("T", " "), status)
    return t


def show_purge_plan(plan, dry_run: bool) -> None:
    """What purge will remove (would, with ``--dry-run``), or that there is nothing."""
    if plan.empty:
        out.print(f"nothing to purge in {plan.cache.root}")
    else:
        out.print(purge_table(plan, dry_run))


def show_purged(done) -> None:
    out.print(f"removed {done.engines} engine(s) ({len(done.files)} file(s)) and "
              f"{len(done.orphans)} orphan(s)")
    if done.forgotten:
        out.print(f"forgot {done.forgotten} backend: auto choice(s)")
    for e in done.busy:
        out.print(f"[yellow]kept[/] {escape(e.name)}: it is being built right now; "
                  f"purge it again when that build ends")
    if done.orphans_kept:
        out.print(f"kept {done.orphans_kept} file(s) of engines being built now")


def purge_table(plan, dry_run: bool) -> Table:
    """``purge``: what goes (would go, with ``--dry-run``)."""
    from framepack_trt.util import human_size

    t = Table(title=("would remove" if dry_run else "will remove"), title_justify="left")
    for col in ("what", "status", "size"):
        t.add_column(col)
    for e, st in plan.engines.values():
        t.add_row(f"{e.name} ({e.engine.file})", st.state, human_size(e.engine.size))
    for c in plan.choices.values():
        t.add_row(f"backend: auto choice of {c.name}", "-", "-")
    for p in plan.orphans:
        t.add_row(f"orphan {p.relative_to(plan.cache.root).as_posix()}", "-",
                  human_size(p.stat().st_size) if p.is_file() else "-")
    return t


def show_verify(report) -> None:
    """The table, the counts, and the one line that says when nothing was checked."""
    if not report.engines:
        out.print(f"no engines in {report.cache_dir}")
        return
    out.print(verify_table(report))
    counts = report.counts
    out.print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    if report.nothing_checked:
        err.print("[red]error:[/] no engine was checked: every selected engine is stale "
                  "(built for another device or software); rebuild them here with "
                  "`framepack-trt build`")


def verify_table(report) -> Table:
    """``verify``: one row per output of each case of each engine, or one row for an engine
    that was skipped or could not run."""
    seed = report.seed
    t = Table(title="verify" + (f" (seed {seed})" if seed is not None else ""), title_justify="left")
    for col in ("engine", "case", "sizes", "output", "max_abs", "max/std", "rel_l2", "cosine",
                "finite", "result"):
        t.add_column(col, overflow="fold")

    def num(v, spec):
        return "-" if v is None else format(v, spec)

    for r in report.engines:
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


# -- bench, doctor, components --------------------------------------------------------------

def show_sections(title: str, runs, head: list[str], rows: list[list[str]]) -> None:
    """``bench --framepack``: the table, each run's report, the models it used."""
    out.print(sections_table(title, head, rows))
    for r in runs:
        if r.report:
            out.print(f"{r.mode}: {escape(r.report)}")
    out.print("models: " + "; ".join(f"{k}: {v}" for k, v in runs[0].models.items()),
              markup=False)


def sections_table(title: str, head: list[str], rows: list[list[str]]) -> Table:
    """``bench --framepack``: one row per run (eager, engines)."""
    t = Table(title=title, title_justify="left")
    for h in head:
        t.add_column(h)
    for row in rows:
        t.add_row(*map(escape, row))
    return t


def doctor_table(info: dict[str, Any]) -> Table:
    """``doctor``: one row per finding (a nested dict: one row per key)."""
    t = Table(show_header=False, title="framepack-trt doctor", title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in info.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                t.add_row(f"{k}.{kk}", escape(str(vv)))
        else:
            t.add_row(k, escape(str(v)))
    return t


def show_components() -> None:
    """Each registered component, and each backend's build settings."""
    from framepack_trt.backends import BACKENDS

    out.print(components_table())
    for name, cls in BACKENDS.items():
        fields = ", ".join(cls.settings_class.field_names()) or "none"
        out.print(f"backend [bold]{name}[/]: build settings: {fields}")


def components_table() -> Table:
    """``components``: each registered component, its model class, dtype and dims."""
    from framepack_trt.components.base import registry

    t = Table(title="components", title_justify="left")
    for col in ("component", "model class", "dtype", "dims (default)", "outputs"):
        t.add_column(col, overflow="fold")
    for name, cls in sorted(registry().items()):
        dims = ", ".join(f"{n}={r}" for n, r in cls.default_dims.items())
        t.add_row(name, cls.model_class, cls.default_dtype, dims, ", ".join(cls.output_names))
    return t
