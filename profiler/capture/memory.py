"""Memory readings cheap enough to take at every module boundary (no CUDA synchronisation)."""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import psutil

DeviceKind = Literal["cuda", "cpu"]
# What a reader returns: statm's raw text (bytes), RSS bytes (int), or CUDA (allocated, reserved).
Reading = bytes | int | tuple[int, int]
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_CUDA_CURRENT = ("allocated_bytes", "reserved_bytes")  # the statistics a CUDA reading holds
_STATM_BYTES = 64  # "size resident shared text lib data dt" in pages: well under 64 characters
# A reading of the RSS younger than this is as good as a new one: the RSS grows only as pages are
# first touched, one page fault at a time, and the fastest first touch measured (torch.ones of
# 64-256 MiB) grew it by ~1.25 GB/s on a 2-core VM: ~60 KiB in 50 us (under 1 MiB at 20 GB/s, a
# fast machine's memset with huge pages). A module boundary that soon after the last reading takes
# it again instead of a system call (~3-5 us with its cache misses; a small model's ReLU runs in
# less than that window). Not on CUDA: the caching allocator hands out gigabytes in a microsecond.
RSS_FRESH_NS = 50_000


class StepPeak:
    """The highest RSS the sampler thread read since the training thread last took it.

    Lock-free, as the training thread's side runs on every step: each side writes one attribute
    only. The training thread owns ``epoch`` (bumped by :meth:`take` at each step's end); the
    sampler owns ``window``, an ``(epoch, highest reading)`` tuple replaced whole, so a reader
    never sees half of it. A reading the sampler tags with an epoch that has already been taken
    (it read the epoch just before the step ended) counts for neither step: at most one reading
    in a step's last few microseconds is lost.
    """

    __slots__ = ("epoch", "window")

    def __init__(self) -> None:
        self.epoch = 0
        self.window = (0, 0)

    def feed(self, rss_bytes: int) -> None:
        """Count a reading in the current window (the sampler thread)."""
        epoch = self.epoch
        seen, highest = self.window
        self.window = (epoch, max(highest, rss_bytes) if seen == epoch else rss_bytes)

    def take(self) -> int:
        """The highest reading of the window now closing (0 if none), and start the next one."""
        seen, highest = self.window
        epoch = self.epoch
        self.epoch = epoch + 1
        return highest if seen == epoch else 0


class MemoryProbe:
    """Current and peak memory of the training device.

    On CUDA: the caching allocator's allocated and reserved bytes (host-side counters, no sync).
    On CPU: the process's resident set size, read from /proc/self/statm where it exists (a
    pread: 1-3 us with warm caches, up to ~20 us right after heavy tensor work; psutil costs more)
    and ``ru_maxrss`` as the peak, which covers the whole process life (a step's own peak comes
    from :class:`StepPeak`).
    """

    def __init__(self, device: DeviceKind) -> None:
        self.device: DeviceKind = device
        self._statm: int | None = None
        if device == "cpu" and sys.platform.startswith("linux"):
            try:
                self._statm = os.open("/proc/self/statm", os.O_RDONLY)
            except OSError:
                self._statm = None
        self._process = psutil.Process()
        # How old a reading may be and still be taken again (see RSS_FRESH_NS): RSS only.
        self.reuse_ns = 0 if device == "cuda" else RSS_FRESH_NS

    def rss_bytes(self) -> int:
        """Resident set size of this process."""
        if self._statm is not None:
            return int(os.pread(self._statm, _STATM_BYTES, 0).split()[1]) * _PAGE_BYTES
        return int(self._process.memory_info().rss)

    def reader(self) -> Callable[[], Reading]:
        """The cheapest call that takes a reading; :meth:`values` decodes it later.

        Module boundaries read memory dozens of times a step, so parsing statm's text (~0.6 us)
        waits until the window is written, and the call is bound once here.
        """
        if self.device == "cuda":
            import torch

            # memory_allocated and memory_reserved each build the allocator's statistics and
            # flatten them; one nested read gives both.
            stats = torch.cuda.memory_stats_as_nested_dict
            return lambda: _cuda_current(stats())
        if self._statm is not None:
            return partial(os.pread, self._statm, _STATM_BYTES, 0)
        return lambda: int(self._process.memory_info().rss)

    @staticmethod
    def values(reading: Reading) -> dict[str, float]:
        """The counter values for a memory counter event (units in the names)."""
        if isinstance(reading, tuple):
            return {"allocated_bytes": reading[0], "reserved_bytes": reading[1]}
        if isinstance(reading, bytes):
            return {"rss_bytes": int(reading.split()[1]) * _PAGE_BYTES}
        return {"rss_bytes": reading}

    def sample(self) -> dict[str, float]:
        """The counter values now (see :meth:`values`)."""
        return self.values(self.reader()())

    def current_bytes(self) -> int:
        """Allocated bytes on CUDA, RSS on CPU."""
        if self.device == "cuda":
            import torch

            return torch.cuda.memory_allocated()
        return self.rss_bytes()

    def peak_bytes(self, *, current: int | None = None) -> int:
        """Peak since the last :meth:`reset_peak` (CUDA) or over the process's life (CPU).

        Args:
            current: an RSS reading the caller just took (saves reading it again).
        """
        if self.device == "cuda":
            import torch

            return torch.cuda.max_memory_allocated()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB
        # The kernel updates ru_maxrss lazily; it can trail the RSS just read from statm.
        return max(peak, self.rss_bytes() if current is None else current)

    def cuda_step_bytes(self) -> tuple[int, int]:
        """CUDA's allocated bytes now and their peak since :meth:`reset_peak`, in one call.

        ``torch.cuda.memory_allocated`` and ``max_memory_allocated`` each build and flatten the
        allocator's whole statistics dict; the nested dict is one host-side call (no sync).
        """
        import torch

        stats = torch.cuda.memory_stats_as_nested_dict().get("allocated_bytes", {}).get("all", {})
        return int(stats.get("current", 0)), int(stats.get("peak", 0))

    def reset_peak(self) -> None:
        """Start a new peak window (CUDA only; RSS has no resettable peak).

        The allocator's own counters, on the host: no synchronisation.
        """
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()

    def close(self) -> None:
        """Release the /proc file descriptor."""
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None


def _cuda_current(stats: dict[str, Any]) -> tuple[int, int]:
    """Allocated and reserved bytes now, over all pools, from
    ``torch.cuda.memory_stats_as_nested_dict()`` (0 where absent, as ``memory_allocated``)."""
    allocated, reserved = (stats.get(key, {}).get("all", {}) for key in _CUDA_CURRENT)
    return int(allocated.get("current", 0)), int(reserved.get("current", 0))
