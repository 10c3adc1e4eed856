"""Run ``framepack-trt`` with inductor config options set for the whole run: to try an option
on an AOTInductor build before it becomes a build setting. The engine's cache key does not
record the options, so build into a cache of its own.

    python scripts/inductor_config_build.py triton.prefer_nd_tiling=true triton.max_tiles=3 \\
        -- build -p realwidth-vae -c vae_decode_whole --cache-dir /tmp/nd-tiling

Values are parsed as Python literals (true/false accepted), else kept as strings.
"""

from __future__ import annotations

import ast
import sys


def parse(item: str) -> tuple[str, object]:
    name, _, raw = item.partition("=")
    if not name or not raw:
        raise SystemExit(f"inductor_config_build: {item!r} is not NAME=VALUE")
    raw = {"true": "True", "false": "False", "none": "None"}.get(raw.lower(), raw)
    try:
        return name, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return name, raw


def main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    options = dict(parse(a) for a in argv[:split])
    import torch._inductor.config as config

    from framepack_trt.cli import main as cli_main

    print(f"inductor config for this run: {options}", file=sys.stderr)
    with config.patch(options):
        sys.argv = ["framepack-trt", *argv[split + 1:]]
        return cli_main() or 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
