"""The options several commands share (one definition each), and the cache they open."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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


def open_cache(cache_dir: Path | None, framepack_dir: Path | None, profile=None):
    """The cache; ``--framepack-dir`` also becomes FramePack's folder for weights lookup
    (its hf_download) in this process and those it starts."""
    from framepack_trt.cache import Cache, resolve_cache_dir
    from framepack_trt.sources import use_framepack_dir

    use_framepack_dir(framepack_dir)
    return Cache(resolve_cache_dir(cache_dir, profile.cache_dir if profile else None, framepack_dir))


def profile_for_cache(profile: str | None):
    """The profile of ``--profile`` (read for its cache_dir), None without one."""
    if profile is None:
        return None
    from framepack_trt.profile import load_profile

    return load_profile(profile)
