"""``framepack-trt bench``: each engine against its eager model, or with ``--framepack``
FramePack's own section loop, eager against the engines (the command's largest set of
options; ``cli`` registers it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from framepack_trt.cli_options import CacheDirOpt, ComponentsOpt, FramepackDirOpt, JsonOpt, open_cache
from framepack_trt.console import err, out
from framepack_trt.errors import UsageError


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
    low_vram: Annotated[bool, typer.Option(
        "--low-vram", help="--framepack: FramePack's low-VRAM mode whatever the device has "
        "free (demo_gradio.py takes it where 60 GiB or less is free; --vram-budget makes a card "
        "that small); on a machine without CUDA, the only way to run it.")] = False,
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

    from framepack_trt.bench import bench_entry, markdown, markdown_file, selected

    cache = open_cache(cache_dir, framepack_dir)
    if framepack:
        _bench_sections(cache, framepack_dir, sections, steps, window, bucket, depth,
                        vram_budget, script, not no_teacache, with_cache, markdown_out, as_json,
                        modules, low_vram)
        return
    results = []
    for e, st in selected(cache, components):
        if st.state != "ok":
            err.print(f"[yellow]skipped:[/] {escape(e.name)}: {st.state} ({escape(st.reason)})")
            continue
        if not as_json:
            out.print(f"timing {e.name} ({e.backend})...")
        results.append(bench_entry(cache, e, warmup=warmup, iters=iters))
    date = datetime.date.today().isoformat()
    if markdown_out:
        markdown_out.write_text(markdown_file(cache, results, components, date))
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        out.print(markdown(results, date), markup=False)


def _bench_sections(cache, framepack_dir, sections, steps, window, bucket, depth, vram_budget,
                    script, teacache, with_cache, markdown_out, as_json, modules=None,
                    low_vram=False) -> None:
    import datetime

    from framepack_trt.bench import rows_markdown
    from framepack_trt.console import show_sections
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
                               if modules is not None else None, low_vram=low_vram)

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
        show_sections(f"FramePack {script}: {sections} sections, {steps} steps, {bucket}, "
                      f"{runs[0].device}", runs, head, rows)
    if markdown_out:
        markdown_out.write_text(rows_markdown(head, rows, datetime.date.today().isoformat()))
