"""Background sampler of process and device metrics: CPU %, RSS, and GPU load through NVML.

A sample holds the GIL while the training thread may want it, so it is two cheap system calls
on CPU: RSS from ``/proc/self/statm`` (:class:`MemoryProbe`, ~2-5 us) and the process's CPU
time (``time.process_time_ns``, <1 us), where psutil's ``memory_info`` and ``cpu_percent``
took ~40 and ~85 us (they parse ``/proc`` in Python).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from profiler.capture.memory import MemoryProbe, StepPeak

SAMPLE_INTERVAL_S = 0.1  # 10 Hz: fine enough to see a stall between steps, ~0.1% of one core
MAX_SAMPLES = 36_000  # an hour at 10 Hz; older samples are dropped


class _Nvml:
    """GPU utilisation and memory for every visible NVIDIA device, or nothing if NVML is absent."""

    def __init__(self) -> None:
        self._lib: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml  # from nvidia-ml-py, the `gpu` extra
        except ImportError:
            return
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._lib = pynvml
        except Exception:  # no driver, no device: NVML raises its own error classes
            self._lib = None

    def sample(self) -> dict[str, float]:
        if self._lib is None:
            return {}
        values: dict[str, float] = {}
        for index, handle in enumerate(self._handles):
            util = self._lib.nvmlDeviceGetUtilizationRates(handle)
            memory = self._lib.nvmlDeviceGetMemoryInfo(handle)
            values[f"gpu{index}_util_pct"] = float(util.gpu)
            values[f"gpu{index}_memory_used_bytes"] = float(memory.used)
        return values

    def close(self) -> None:
        if self._lib is not None:
            self._lib.nvmlShutdown()
            self._lib = None


class SystemSampler:
    """Samples at ``interval_s`` on a daemon thread until :meth:`stop`.

    Samples are ``(perf_counter_ns, {name: value})``; :meth:`between` selects a window's worth.

    Args:
        interval_s: the time between samples.
        step_peak: where each RSS reading also goes, for the steps' ``peak_memory_bytes``.
    """

    def __init__(
        self, interval_s: float = SAMPLE_INTERVAL_S, *, step_peak: StepPeak | None = None
    ) -> None:
        self.interval_s = interval_s
        self._step_peak = step_peak
        self.samples: deque[tuple[int, dict[str, float]]] = deque(maxlen=MAX_SAMPLES)
        self.latest: dict[str, float] = {}
        # The figures per-step records carry: CPU %, and each GPU's utilisation and used memory
        # (RSS is the step's own memory_bytes on CPU).
        self.step_view: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._memory = MemoryProbe("cpu")  # the process's RSS (statm, or psutil elsewhere)
        self._cpu_at = (time.perf_counter_ns(), time.process_time_ns())
        self._nvml = _Nvml()

    def start(self) -> None:
        """Start the sampling thread."""
        self._cpu_at = (time.perf_counter_ns(), time.process_time_ns())  # CPU % counts from now
        self._thread = threading.Thread(target=self._run, name="trainprof-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and release NVML and the /proc file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.interval_s + 1)
            self._thread = None
        self._nvml.close()
        self._memory.close()

    def sample_once(self) -> dict[str, float]:
        """Take one sample now and keep it."""
        rss = self._memory.rss_bytes()
        if self._step_peak is not None:
            self._step_peak.feed(rss)
        now, cpu = time.perf_counter_ns(), time.process_time_ns()
        (then, cpu_then), self._cpu_at = self._cpu_at, (now, cpu)
        # As psutil's cpu_percent: the process's CPU time over wall time, 100 = one core busy.
        cpu_pct = round(100 * (cpu - cpu_then) / (now - then), 1) if now > then else 0.0
        values = {"cpu_pct": cpu_pct, "rss_bytes": float(rss), **self._nvml.sample()}
        self.samples.append((now, values))
        self.latest = values
        self.step_view = {k: v for k, v in values.items() if k == "cpu_pct" or k.startswith("gpu")}
        return values

    def between(self, start_ns: int, end_ns: int) -> list[tuple[int, dict[str, float]]]:
        """The samples taken in ``[start_ns, end_ns]``."""
        return [sample for sample in list(self.samples) if start_ns <= sample[0] <= end_ns]

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()
