"""A trace root holding one run of each status, written by the store's own ``RunStore`` and
``StepLog`` as capture writes them (no trace files: the Runs page reads ``meta/`` alone)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from profiler.events import RunStatus
from profiler.store.step_log import StepLog
from profiler.store.trace_store import RunStore

STARTED_S = 1_700_000_000.0  # each run's first step: STARTED_S + its index in RUNS


@dataclass(frozen=True)
class StatusRun:
    """A run to write: its name, how it ends, and its step times (µs) and data waits."""

    name: str
    status: str
    step_us: tuple[float, ...]
    wait_us: float
    gpu_util_pct: float | None = None


RUNS = (
    StatusRun("done", "complete", (10_000.0, 12_000.0, 14_000.0), 1_000.0, gpu_util_pct=80.0),
    StatusRun("crashed", "failed", (30_000.0, 50_000.0), 15_000.0),
    StatusRun("live", "running", (5_000.0, 5_000.0, 6_000.0, 8_000.0), 0.0),
    StatusRun("killed", "interrupted", (20_000.0,), 10_000.0),
    StatusRun("full_disk", "degraded", (40_000.0, 44_000.0), 4_000.0),
)
PEAK_BYTES = 1 << 30


def write_run(root: Path, index: int, spec: StatusRun) -> RunStore:
    """Write ``spec`` under ``root`` as capture would; the store of a ``running`` run stays
    open (its heartbeat is the caller's to keep)."""
    store = RunStore(root, spec.name)
    store.create({"schedule": None}, {"device": "cpu"})
    log = StepLog(store.steps_path)
    start_us = (STARTED_S + index) * 1e6
    log.write(
        {
            "step": step, "start_unix_us": start_us + step * 1e5, "dur_us": dur_us,
            "data_wait_us": spec.wait_us, "peak_memory_bytes": PEAK_BYTES + step,
            **({} if spec.gpu_util_pct is None else {"gpu0_util_pct": spec.gpu_util_pct}),
        }
        for step, dur_us in enumerate(spec.step_us)
    )  # fmt: skip
    log.close()
    steps = len(spec.step_us)
    if spec.status == "complete":
        store.finish(RunStatus.COMPLETE, steps=steps)
    elif spec.status == "failed":
        store.finish(RunStatus.FAILED, steps=steps, error=RuntimeError("loss is NaN"))
    elif spec.status == "interrupted":
        store.mark_interrupted("SIGTERM", at_step=steps)
    elif spec.status == "degraded":
        store.mark_degraded("no space left on device", at_step=1)
        store.finish(RunStatus.DEGRADED, steps=steps)
    return store


@contextmanager
def status_root(root: Path, beat_s: float = 0.5) -> Iterator[Path]:
    """``root`` with every run of :data:`RUNS`; the running one beats its heartbeat (every
    ``beat_s``) until the block ends, as a live capture session does."""
    stores = [write_run(root, index, spec) for index, spec in enumerate(RUNS)]
    live = next(store for store, spec in zip(stores, RUNS, strict=True) if spec.status == "running")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(beat_s):
            live.heartbeat()

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        yield root
    finally:
        stop.set()
        beater.join()
