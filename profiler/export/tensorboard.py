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

Traces: a copy of each, gzipped, with our forward module ranges made the ``python_function``
module events the plugin's Module view reads (:mod:`profiler.export.tensorboard_modules`); the
run's own files stay as they are, and a trace without our ranges is copied byte for byte.

An export is built in a staging directory beside the logdir and swapped in for
``<logdir>/<run>/`` at once, so re-exporting never duplicates points and a failure leaves the
previous export as it was.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.analysis.steps import CATEGORIES
from profiler.export.live import EventWriter, LiveWriter, rank_dir, step_scalars, write_steps
from profiler.export.tensorboard_files import copy_trace, replace_dir, staging_dir, write_gzip
from profiler.export.tensorboard_input import ExportError, RunInput, read_run
from profiler.export.tensorboard_modules import plan_module_events, rewrite_module_events
from profiler.export.tensorboard_trace import Unstreamable, trace_parts

__all__ = [
    "ExportError",
    "ExportResult",
    "LiveWriter",
    "export_tensorboard",
    "rank_dir",
    "step_scalars",
    "window_scalars",
]

WINDOW_STEP_TIME_TAG = "trainprof/window/step_time_ms"
WINDOW_BREAKDOWN_TAG = "trainprof/window/breakdown_pct/{category}"
WINDOW_GPU_TAG = "trainprof/window/gpu/{metric}"
RECOMMENDATIONS_TAG = "trainprof/recommendations"


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


def window_scalars(summary: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one capture window, from its ``trainprof.summary/1`` trace entry."""
    values = {WINDOW_STEP_TIME_TAG: summary["steps"]["mean_us"] / 1e3}
    for category in CATEGORIES:
        values[WINDOW_BREAKDOWN_TAG.format(category=category)] = float(
            summary["step_breakdown_pct"][category]
        )
    for metric, value in (summary.get("gpu") or {}).items():
        if value is not None:
            values[WINDOW_GPU_TAG.format(metric=metric)] = float(value)
    return values


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
    writers = {rank: EventWriter(directory / rank_dir(rank)) for rank in ranks}
    try:
        steps = sum(write_steps(writers[rank], records) for rank, records in run.steps.items())
        for window in run.windows:
            scalars = window_scalars(window.summary)
            writers[window.rank].scalars(window.step, window.wall_time, scalars)
        writers[0].text(RECOMMENDATIONS_TAG, recommendations_markdown(run), *_last_point(run))
    finally:
        for writer in writers.values():
            writer.close()
    for window in run.windows:
        place_trace(window.path, directory / window.target_name)
    return steps, [w.target_name for w in run.windows]


def place_trace(source: Path, target: Path) -> int:
    """Put a copy of a trace where the profiler plugin reads it, our forward module ranges made
    the module events its Module view reads (:mod:`profiler.export.tensorboard_modules`).

    The trace is read twice, a piece at a time: once to find the ranges and nest them, once to
    write the copy. A trace with none of our ranges, or with module events of torch's own, is
    copied as it is.

    Returns:
        How many ranges were made module events.
    """
    try:
        added = plan_module_events(trace_parts(source))
    except Unstreamable:  # not Kineto's layout, so not one of ours: copied as it is
        added = {}
    if not added:
        copy_trace(source, target)
        return 0
    write_gzip(rewrite_module_events(trace_parts(source), added), target)
    return len(added)


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
    for rec in run.step_log_advice:
        lines.append(f"- **{rec['severity']}** `{rec['id']}`: {rec['message']} (step logs)")
    return "\n".join(lines)
