"""Peak memory of a build, sampled from outside the allocators.

``torch.cuda.max_memory_allocated`` misses what TensorRT and the CUDA context allocate, and
``ru_maxrss`` cannot be reset between the engines of one build. ``PeakMemory`` samples the
GPU's used memory (``cudaMemGetInfo``: every process on that GPU, so the number is exact only
on a GPU nobody else uses) and this process's resident set on a background thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from framepack_trt.timing import rss_bytes

GIB = 2**30


@dataclass
class MemoryPeaks:
    host_gib: float
    gpu_used_gib: float | None      # device-wide used memory, CUDA only
    gpu_torch_gib: float | None     # torch's caching allocator only, CUDA only

    def to_dict(self) -> dict[str, float]:
        out = {"peak_host_gib": self.host_gib}
        if self.gpu_used_gib is not None:
            out["peak_gpu_used_gib"] = self.gpu_used_gib
        if self.gpu_torch_gib is not None:
            out["peak_gpu_gib"] = self.gpu_torch_gib
        return out

    def describe(self) -> str:
        from framepack_trt.platforms import is_linux

        parts = [f"host RSS {self.host_gib} GiB" if is_linux() else
                 "host RSS not measured (read from /proc: Linux only)"]
        if self.gpu_used_gib is not None:
            parts.append(f"GPU used {self.gpu_used_gib} GiB (torch allocator {self.gpu_torch_gib} GiB)")
        return "peak memory during the build: " + ", ".join(parts)


class PeakMemory:
    """Context manager sampling peak host RSS and GPU used memory every ``interval`` seconds."""

    def __init__(self, cuda: bool, interval: float = 0.05):
        self.cuda = cuda
        self.interval = interval
        self._host = 0
        self._gpu = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self._host = max(self._host, rss_bytes())
        if self.cuda:
            import torch

            free, total = torch.cuda.mem_get_info()
            self._gpu = max(self._gpu, total - free)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except Exception:  # a failing probe must never break the build it watches
                return

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            import torch

            self.cuda = torch.cuda.is_available()  # else the build reports the missing GPU
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def peaks(self) -> MemoryPeaks:
        torch_peak = None
        if self.cuda:
            import torch

            torch_peak = round(torch.cuda.max_memory_allocated() / GIB, 2)
        return MemoryPeaks(round(self._host / GIB, 2),
                           round(self._gpu / GIB, 2) if self.cuda else None, torch_peak)
