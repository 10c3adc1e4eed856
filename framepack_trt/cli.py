"""The ``framepack-trt`` command line: parse, call one library function, print the result.

Each command calls the library for a plan or a report (``build_plan.plan`` and
``build.build``, ``listing.list_cache``, ``purge.plan_purge``, ``verify.plan_verify``,
``bench``, ``doctor.report``) and hands it to ``console`` to show, or prints its ``to_dict()``
with ``--json``. Heavy imports (torch, transformers, backends) happen inside the commands that
need them, so ``--help`` and ``list`` start fast. Expected failures print one red line on
stderr and exit with 2 (misuse) or 1 (failure); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape

from framepack_trt import __version__
from framepack_trt.cli_bench import bench
from framepack_trt.cli_options import (
    CacheDirOpt,
    CacheProfileOpt,
    ComponentsOpt,
    FramepackDirOpt,
    JsonOpt,
    ProfileOpt,
    open_cache,
    profile_for_cache,
)
from framepack_trt.console import err, errors, out, setup, show_warnings
from framepack_trt.errors import UsageError

app = typer.Typer(
    help="Build, list, verify and purge ahead-of-time engines (TensorRT, AOTInductor) for "
    "FramePack's models, from a YAML shape profile. Run `framepack-trt build` before the first "
    "FramePack run; `framepack-trt purge` forces a rebuild.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


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
    setup(debug)


# -- build -----------------------------------------------------------------------------------

@app.command()
@errors
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
            report = _build(profile, cache_dir, framepack_dir, components, backend, force,
                            dry_run, jobs)
        finally:
            out.file = sys.stdout
        print(json.dumps(report.to_dict(), indent=2))
    else:
        report = _build(profile, cache_dir, framepack_dir, components, backend, force, dry_run,
                        jobs)
    if not report.passed:
        raise typer.Exit(1)


def _build(profile, cache_dir, framepack_dir, components, backend, force, dry_run, jobs=1):
    from framepack_trt import console
    from framepack_trt.build import BuildReport, build
    from framepack_trt.build_jobs import build_with_jobs
    from framepack_trt.build_plan import plan
    from framepack_trt.profile import load_profile

    prof = load_profile(profile)
    if backend:
        prof = prof.with_backend(backend)
    cache = open_cache(cache_dir, framepack_dir, prof)
    if not dry_run:
        cache.ensure_writable()
    items = plan(prof, cache, components, force)
    show_warnings(cache)
    out.print(f"profile [bold]{prof.name}[/] ({prof.path})  cache [bold]{cache.root}[/]")
    out.print(console.plan_table(items))
    if dry_run:
        return BuildReport(items)
    todo = sum(i.action in ("build", "rebuild") for i in items)
    if todo:
        progress, bars = console.progress_bars(todo)
        with progress:
            report = BuildReport(items, build_with_jobs(prof, cache, items, bars, jobs))
    else:
        report = BuildReport(items, build(prof, cache, items))
    console.show_build(report)
    return report


# -- list ------------------------------------------------------------------------------------

@app.command("list")
@errors
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
    from framepack_trt.console import show_listing
    from framepack_trt.listing import list_cache

    listing = list_cache(open_cache(cache_dir, framepack_dir, profile_for_cache(profile)))
    if as_json:
        print(json.dumps(listing.to_dict(), indent=2))
    else:
        show_listing(listing)


# -- purge -----------------------------------------------------------------------------------

@app.command()
@errors
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
    as_json: Annotated[bool, typer.Option(
        "--json", help="The plan (what goes, the bytes freed) and what was removed, as JSON on "
        "stdout.")] = False,
) -> None:
    """Remove engines (and their manifest entries) so the next `build` recompiles them.

    Entries and files always go together; orphan files and entries whose files are missing are
    removed by every purge.
    """
    if not (components or stale or all_):
        raise UsageError("purge needs --component NAME, --stale or --all")
    from framepack_trt.console import show_purge_plan, show_purged
    from framepack_trt.purge import plan_purge

    cache = open_cache(cache_dir, framepack_dir, profile_for_cache(profile))
    plan = plan_purge(cache, components, stale=stale, everything=all_)
    show_warnings(cache)
    for name in plan.unknown:
        err.print(f"[yellow]warning:[/] no engine named {escape(repr(name))} in {cache.root}")
    if not as_json:
        show_purge_plan(plan, dry_run)
    if plan.empty or dry_run:
        if as_json:
            print(json.dumps({"plan": plan.to_dict(), "result": None}, indent=2))
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("purge asks for confirmation; pass --yes to confirm non-interactively")
        if not typer.confirm(f"Remove {len(plan.engines)} engine(s) and {len(plan.orphans)} "
                             "orphan(s)?", err=as_json):
            raise typer.Exit(1)
    done = plan.execute()
    if as_json:
        print(json.dumps({"plan": plan.to_dict(), "result": done.to_dict()}, indent=2))
    else:
        show_purged(done)


# -- verify ----------------------------------------------------------------------------------

@app.command()
@errors
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
    from framepack_trt.console import show_verify
    from framepack_trt.verify import plan_verify

    cache = open_cache(cache_dir, framepack_dir, profile_for_cache(profile))
    try:
        plan = plan_verify(cache, components, full=full, seed=seed, reference=reference)
    finally:  # the manifest's warnings, before an error about the names
        show_warnings(cache)
    if not as_json and plan.entries:
        out.print(f"verifying {', '.join(e.name for e in plan.entries)} ({plan.mode})...")
    report = plan.run()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        show_verify(report)
    if not report.passed:
        raise typer.Exit(1)


app.command()(errors(bench))


# -- doctor and components -------------------------------------------------------------------

@app.command()
@errors
def doctor(
    cache_dir: CacheDirOpt = None,
    framepack_dir: FramepackDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report torch, CUDA, the GPU, each backend (and why one is unavailable), and the cache;
    this environment against FramePack's: library versions against FramePack's pins, engines
    built with other versions (stale), and whether FramePack's folder imports here."""
    from framepack_trt.console import doctor_table
    from framepack_trt.doctor import report

    info = report(open_cache(cache_dir, framepack_dir), framepack_dir)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        out.print(doctor_table(info))


@app.command()
@errors
def components() -> None:
    """List the components a profile can name, with their dims and default dtype."""
    from framepack_trt.console import show_components

    show_components()


def main() -> None:
    from framepack_trt.util import quiet_torch_warnings

    quiet_torch_warnings()
    app()


if __name__ == "__main__":
    main()
