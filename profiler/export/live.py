"""Per-step TensorBoard scalars as training runs (``profile(tensorboard_logdir=...)``).

Capture writes through this module while the run trains, so it imports the event-file writer and
nothing of the analysis (docs/architecture.md, "Data flows one way"); the full export
(:mod:`profiler.export.tensorboard`) runs once the run has stopped, and replaces what was written
here. The tags are those of the full export.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from profiler.export.event_file import EventFile

__all__ = ["LiveWriter", "EventWriter", "rank_dir", "step_scalars", "write_steps"]

#: Step-record field -> (tag, scale).
STEP_FIELDS: dict[str, tuple[str, float]] = {
    "dur_us": ("trainprof/step/time_ms", 1e-3),
    "data_wait_us": ("trainprof/step/data_wait_ms", 1e-3),
    "forward_us": ("trainprof/step/forward_ms", 1e-3),
    "backward_us": ("trainprof/step/backward_ms", 1e-3),
    "optimizer_us": ("trainprof/step/optimizer_ms", 1e-3),
    "memory_bytes": ("trainprof/memory/current_bytes", 1.0),
    "peak_memory_bytes": ("trainprof/memory/peak_bytes", 1.0),
    "cpu_pct": ("trainprof/system/cpu_pct", 1.0),
}
GPU_UTIL_TAG = "trainprof/gpu/{index}/utilization_pct"
FILE_VERSION = "brain.Event:2"
MAX_PENDING_EVENTS = 10_000  # an export writes in batches of this many events
_GPU_PREFIX, _GPU_SUFFIX = "gpu", "_util_pct"  # the sampler's gpu<i>_util_pct fields


def rank_dir(rank: int) -> str:
    """Where a rank's scalars go inside the run's export: rank 0 at its top, others below it."""
    return "" if rank == 0 else f"rank{rank}"


def step_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one ``steps.<rank>.jsonl`` record, by tag (fields that are absent or None
    are left out)."""
    values = {}
    for key, value in record.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key in STEP_FIELDS:
            tag, scale = STEP_FIELDS[key]
            values[tag] = value * scale
        elif key.startswith(_GPU_PREFIX) and key.endswith(_GPU_SUFFIX):
            index = key[len(_GPU_PREFIX) : -len(_GPU_SUFFIX)]
            if index.isdigit():
                values[GPU_UTIL_TAG.format(index=index)] = float(value)
    return values


class EventWriter:
    """One event file: scalars batched one event per step, and text; written at each flush."""

    def __init__(self, directory: Path) -> None:
        try:  # tensorboard's protos need no torch: the CLI stays quick to start
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.plugins.text.summary_v2 import text_pb
        except ImportError as exc:
            hint = "the TensorBoard export needs tensorboard: pip install tensorboard"
            raise ImportError(f"{hint} ({exc})") from exc
        self._event, self._summary, self._text_pb = event_pb2.Event, summary_pb2.Summary, text_pb
        version = self._event(wall_time=time.time(), file_version=FILE_VERSION)
        self._file = EventFile(directory, version.SerializeToString())
        self._pending: list[bytes] = []

    def scalars(self, step: int, wall_time: float, values: Mapping[str, float]) -> None:
        """Add ``values`` (tag to number) as one event at ``step``."""
        if values:
            tagged = [self._summary.Value(tag=t, simple_value=v) for t, v in values.items()]
            summary = self._summary(value=tagged)
            self._add(self._event(wall_time=wall_time, step=step, summary=summary))

    def text(self, tag: str, markdown: str, step: int, wall_time: float) -> None:
        """Add a Markdown text summary."""
        self._add(self._event(wall_time=wall_time, step=step, summary=self._text_pb(tag, markdown)))

    def _add(self, event: Any) -> None:
        self._pending.append(event.SerializeToString())
        if len(self._pending) >= MAX_PENDING_EVENTS:
            self.flush()

    def flush(self) -> None:
        """Write what was added, so readers see it."""
        self._file.append(self._pending)
        self._pending = []

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        self._file.close()


def write_steps(writer: EventWriter, records: Iterable[Mapping[str, Any]]) -> int:
    """Add one scalars event per finished step of ``records``; return how many."""
    written = 0
    for record in records:
        if record.get("completed", True) is False:  # the loop raised inside this step
            continue
        end_s = (float(record.get("start_unix_us") or 0.0) + float(record["dur_us"])) / 1e6
        writer.scalars(int(record["step"]), end_s, step_scalars(record))
        written += 1
    return written


class LiveWriter:
    """Per-step scalars written while training runs (``profile(tensorboard_logdir=...)``).

    Capture hands it each batch of step records at its ~1 s flush; once the run has stopped the
    session runs the full export (:func:`profiler.export.tensorboard.export_tensorboard`, in a
    child process), which replaces what this wrote.

    Args:
        logdir: the TensorBoard log directory.
        run_name: the run's name there.
        rank: whose steps these are.
    """

    def __init__(self, logdir: str | os.PathLike[str], run_name: str, *, rank: int = 0) -> None:
        self.directory = Path(logdir) / run_name / rank_dir(rank)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._writer = EventWriter(self.directory)

    def add_steps(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write the steps' scalars and flush them so a running TensorBoard sees them."""
        if write_steps(self._writer, records):
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()
