"""What this machine can build: torch, CUDA, the GPU, each backend, the cache."""

from __future__ import annotations

import platform
import sys
from typing import Any

from framepack_trt import __version__
from framepack_trt.backends import BACKENDS
from framepack_trt.cache import Cache
from framepack_trt.util import human_size


def report(cache: Cache) -> dict[str, Any]:
    info: dict[str, Any] = {
        "framepack-trt": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = f"{torch.__version__} (CUDA build: {torch.version.cuda or 'no'})"
        if torch.cuda.is_available():
            from framepack_trt.fp8 import fp8_unsupported_reason

            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                fp8 = fp8_unsupported_reason(f"cuda:{i}")
                info[f"gpu {i}"] = (f"{p.name}, sm {p.major}.{p.minor}, "
                                    f"{p.total_memory / 2**30:.1f} GiB, fp8 block engines: "
                                    f"{'yes' if fp8 is None else 'no (below 8.9)'}")
        else:
            info["gpu"] = "none (torch.cuda.is_available() is False)"
    except Exception as exc:  # report, do not crash: doctor is for broken set-ups
        info["torch"] = f"cannot import: {exc}"
    for name, cls in BACKENDS.items():
        backend = cls()
        status = {}
        for device in backend.devices:
            try:
                reason = backend.unavailable_reason(device)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            status[device] = "available" if reason is None else f"unavailable: {reason}"
        info[f"backend {name}"] = {"version": backend.version(), **status}
    info["cache dir"] = str(cache.root)
    if cache.root.exists() and not cache.root.is_dir():
        info["cache"] = "not a directory: choose another cache dir"
    elif cache.root.is_dir():
        entries = cache.entries()
        info["cache"] = f"{len(entries)} engine(s), {human_size(cache.size())}"
    else:
        info["cache"] = "does not exist yet"
    return info
