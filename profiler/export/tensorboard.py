"""Export a run to TensorBoard: per-step scalars, window metrics, advice, and the traces.

Written with TensorBoard's own event writer (no torch import), under ``<logdir>/<run>/``::

    events.out.tfevents.*                    rank 0's scalars and the recommendations text
    rank<N>/events.out.tfevents.*            rank N's scalars (N > 0)
    <worker>.<n>.pt.trace.json.gz            every capture window, for the PyTorch profiler plugin

Scalars, one point per training step (TensorBoard step = the training step; wall time = the end
of that step); steps that never finished (the loop raised) are left out:

* ``trainprof/step/time_ms``, ``trainprof/step/data_wait_ms``, ``trainprof/step/forward_ms``,
  ``trainprof/step/backward_ms``, ``trainprof/step/optimizer_ms`` (the last three where known)
* ``trainprof/memory/current_bytes``, ``trainprof/memory/peak_bytes``
* ``trainprof/system/cpu_pct`` and ``trainprof/gpu/<i>/utilization_pct`` (where sampled)

One point per capture window, at the window's last training step (plain traces: the last
``ProfilerStep#N``; a trace without steps: its position in the export):

* ``trainprof/window/step_time_ms`` (mean step time of the window)
* ``trainprof/window/breakdown_pct/<category>`` for kernel, memcpy, memset, communication,
  runtime, dataloader, cpu_exec, other (as the plugin's Overview defines them)
* ``trainprof/window/gpu/<metric>`` for utilization_pct, sm_efficiency_pct,
  achieved_occupancy_pct, tensor_core_pct (GPU traces only)

Text: ``trainprof/recommendations`` (Markdown), at the run's last step.

An export is built in a staging directory beside the logdir and swapped in for
``<logdir>/<run>/`` at once, so re-exporting never duplicates points and a failure leaves the
previous export as it was.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.analysis.summary import BREAKDOWN_KEYS
from profiler.export.event_file import EventFile
from profiler.export.tensorboard_files import copy_trace, replace_dir, staging_dir
from profiler.export.tensorboard_input import ExportError, RunInput, read_run

__all__ = [
    "ExportError",
    "ExportResult",
    "LiveWriter",
    "export_tensorboard",
    "rank_dir",
    "step_scalars",
    "window_scalars",
]

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
WINDOW_STEP_TIME_TAG = "trainprof/window/step_time_ms"
WINDOW_BREAKDOWN_TAG = "trainprof/window/breakdown_pct/{category}"
WINDOW_GPU_TAG = "trainprof/window/gpu/{metric}"
RECOMMENDATIONS_TAG = "trainprof/recommendations"
FILE_VERSION = "brain.Event:2"
MAX_PENDING_EVENTS = 10_000  # an export writes in batches of this many events
_GPU_PREFIX, _GPU_SUFFIX = "gpu", "_util_pct"  # the sampler's gpu<i>_util_pct fields


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        run_dir: ``<logdir>/<run>``: the TensorBoard run (and the profiler plugin's run).
        run_name: the run's name in TensorBoard.
        steps: per-step points written, over all ranks.
        windows: capture windows exported.
        trace_files: the trace files placed for the profiler plugin.
    """

    run_dir: Path
    run_name: str
    steps: int
    windows: int
    trace_files: tuple[Path, ...]


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


def window_scalars(summary: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one capture window, from its ``trainprof.summary/1`` trace entry."""
    values = {WINDOW_STEP_TIME_TAG: summary["steps"]["mean_us"] / 1e3}
    for category in BREAKDOWN_KEYS:
        values[WINDOW_BREAKDOWN_TAG.format(category=category)] = float(
            summary["step_breakdown_pct"][category]
        )
    for metric, value in (summary.get("gpu") or {}).items():
        if value is not None:
            values[WINDOW_GPU_TAG.format(metric=metric)] = float(value)
    return values


class _EventWriter:
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


def _write_steps(writer: _EventWriter, records: Iterable[Mapping[str, Any]]) -> int:
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

    Capture hands it each batch of step records at its ~1 s flush; at the end the session runs
    :func:`export_tensorboard`, which replaces what this wrote with the full export.

    Args:
        logdir: the TensorBoard log directory.
        run_name: the run's name there.
        rank: whose steps these are.
    """

    def __init__(self, logdir: str | os.PathLike[str], run_name: str, *, rank: int = 0) -> None:
        self.directory = Path(logdir) / run_name / rank_dir(rank)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._writer = _EventWriter(self.directory)

    def add_steps(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write the steps' scalars and flush them so a running TensorBoard sees them."""
        if _write_steps(self._writer, records):
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


def export_tensorboard(
    source: str | os.PathLike[str], logdir: str | os.PathLike[str], *, run_name: str | None = None
) -> ExportResult:
    """Export a run (or plain torch.profiler traces) into ``<logdir>/<run>/``, replacing any
    earlier export of that run.

    Args:
        source: a run directory, a directory of trace files, or one trace file.
        logdir: the TensorBoard log directory (created if missing).
        run_name: the run's name in TensorBoard (default: the directory's or file's name).

    Returns:
        What was written.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: ``run_name`` is not a plain directory name.
        ExportError: the run's metadata or step log is corrupt, or there is nothing to export.
        TraceFormatError: a trace file cannot be read.
        OSError: the logdir cannot be written.
    """
    run = read_run(source, run_name)  # everything is checked before anything is written
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    target = logdir / run.name
    staging = staging_dir(logdir, run.name)
    try:
        steps, traces = _write_export(run, staging)
        replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(
        run_dir=target,
        run_name=run.name,
        steps=steps,
        windows=len(run.windows),
        trace_files=tuple(target / name for name in traces),
    )


def _write_export(run: RunInput, directory: Path) -> tuple[int, list[str]]:
    ranks = sorted(set(run.steps) | {w.rank for w in run.windows} | {0})
    writers = {rank: _EventWriter(directory / rank_dir(rank)) for rank in ranks}
    try:
        steps = sum(_write_steps(writers[rank], records) for rank, records in run.steps.items())
        for window in run.windows:
            scalars = window_scalars(window.summary)
            writers[window.rank].scalars(window.step, window.wall_time, scalars)
        writers[0].text(RECOMMENDATIONS_TAG, recommendations_markdown(run), *_last_point(run))
    finally:
        for writer in writers.values():
            writer.close()
    for window in run.windows:
        copy_trace(window.path, directory / window.target_name)
    return steps, [w.target_name for w in run.windows]


def _last_point(run: RunInput) -> tuple[int, float]:
    """The run's last step and end time: where the recommendations text sits."""
    steps = [r["step"] for records in run.steps.values() for r in records]
    step = max(steps + [w.step for w in run.windows])
    ended = (run.meta or {}).get("ended_unix_s")
    if isinstance(ended, int | float):
        return step, float(ended)
    return step, max([w.wall_time for w in run.windows], default=0.0)


def recommendations_markdown(run: RunInput) -> str:
    """The run's findings as the Markdown text TensorBoard's Text tab shows."""
    status = (run.meta or {}).get("status", "plain torch.profiler trace")
    steps = sum(len(records) for records in run.steps.values())
    lines = [
        f"**trainprof** run `{run.name}` ({status}): {steps} steps recorded, "
        f"{len(run.windows)} capture window(s).",
        "",
    ]
    if not run.windows:
        lines.append("No capture window: only the per-step metrics were recorded.")
    elif not run.recommendations:
        lines.append("No bottleneck found in the captured windows.")
    for rec in run.recommendations:
        seen = f"seen in {len(rec['seen_in'])} of {len(run.windows)} window(s)"
        lines.append(f"- **{rec['severity']}** `{rec['id']}`: {rec['message']} ({seen})")
    return "\n".join(lines)
