"""Read and check everything a TensorBoard export needs, before anything is written.

The input is a run directory of ours (trace files, ``meta/run.json``, ``meta/steps.<rank>.jsonl``),
a directory of plain torch.profiler traces, or one trace file. Every trace is loaded and analysed
and every step line parsed here, so a corrupt run fails before the export touches the logdir.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.analysis.run import Run
from profiler.analysis.steps import WHOLE_TRACE_NAME, step_table
from profiler.analysis.summary import merged_recommendations, step_log_report, trace_summary
from profiler.analysis.table import load_trace
from profiler.events import BASE_TIME_KEY, TRACE_SUFFIX

#: The plugin's run-file pattern (torch_tb_profiler ``consts.WORKER_PATTERN``): worker, then an
#: optional numeric span, e.g. ``host_123.1795447678157.pt.trace.json.gz``.
PLUGIN_TRACE_PATTERN = re.compile(r"^(.*?)(\.\d+)?\.pt\.trace\.json(?:\.gz)?$")
_UNIX_US_2001 = 978_307_200e6  # earlier "wall times" are clocks since boot, not unix time
_TRACE_ENDINGS = (".pt.trace.json.gz", ".pt.trace.json", ".json.gz", ".json")


class ExportError(ValueError):
    """The input cannot be exported: the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class Window:
    """One capture window (trace file) and what the export writes for it.

    Attributes:
        path: the trace file.
        rank: the trace's rank.
        target_name: its name in the export, ``<worker>.<n>.pt.trace.json.gz``.
        step: the TensorBoard step of its scalars: the window's last training step.
        wall_time: unix seconds at the end of that step (or the file's mtime when unknown).
        summary: its ``trainprof.summary/1`` entry (``step_breakdown_pct``, ``gpu``, ...).
    """

    path: Path
    rank: int
    target_name: str
    step: int
    wall_time: float
    summary: dict[str, Any]


@dataclass(frozen=True)
class RunInput:
    """A checked run, ready to export.

    Attributes:
        source: what was read (a directory or a trace file).
        name: the run's name in TensorBoard.
        meta: ``meta/run.json`` (None for plain traces).
        steps: rank to that rank's per-step records, in file order.
        windows: the capture windows, in file-name order.
        recommendations: the run's findings, once per rule (``merged_recommendations``).
        step_log_advice: the findings of the step logs alone (every step; see
            :func:`profiler.analysis.summary.step_log_report`).
    """

    source: Path
    name: str
    meta: dict[str, Any] | None
    steps: dict[int, tuple[dict[str, Any], ...]]
    windows: tuple[Window, ...]
    recommendations: tuple[dict[str, Any], ...]
    step_log_advice: tuple[dict[str, Any], ...] = ()


def read_run(source: str | os.PathLike[str], run_name: str | None = None) -> RunInput:
    """Load, parse and analyse everything at ``source``; raise on the first problem.

    Args:
        source: a run directory, a directory of trace files, or one trace file.
        run_name: the name in TensorBoard (default: the directory's name, or the file's stem).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: ``run_name`` is not a plain directory name.
        ExportError: ``meta/run.json`` or a step line (but a last one cut short) is corrupt,
            or there is nothing to export.
        TraceFormatError: a trace file cannot be read.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or directory")
    name = run_name or (source.name if source.is_dir() else _stem(source.name))
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"run name must be a plain directory name, got {name!r}")
    run = Run(source, name=name)
    files = list(run.trace_paths)
    meta = _read_meta(run) if source.is_dir() else None
    steps = _read_steps(run) if source.is_dir() else {}
    if not files and not steps:
        raise ExportError(f"{source}: no trace files and no meta/steps.<rank>.jsonl: not a run")
    windows = _windows(files, steps)
    summary = {"traces": [w.summary for w in windows]}
    merged = tuple(merged_recommendations(summary))
    return RunInput(source, name, meta, steps, tuple(windows), merged, _advice(run, merged))


def _advice(run: Run, merged: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    """The step logs' findings that the windows did not already give."""
    logs = step_log_report([run])
    found = {rec["id"] for rec in merged}
    recs = () if logs is None else logs.recommendations
    return tuple(rec.as_dict() for rec in recs if rec.id not in found)


def _stem(file_name: str) -> str:
    for ending in _TRACE_ENDINGS:
        if file_name.endswith(ending):
            return file_name[: -len(ending)]
    return file_name


def _read_meta(run: Run) -> dict[str, Any] | None:
    if run.meta.problem is not None:
        raise ExportError(f"{run.meta.path}: {run.meta.problem}")
    return run.meta.meta


def _read_steps(run: Run) -> dict[int, tuple[dict[str, Any], ...]]:
    """Every rank's step records; a last line cut short (a run killed mid-write) is left out,
    any other problem (a bad line, a value dropped) refuses the export."""
    for steps in run.step_files.values():
        if steps.problem is not None:
            raise ExportError(f"{steps.path}: {steps.problem}")
        if steps.reported:
            number, why = steps.reported[0]
            raise ExportError(f"{steps.path}:{number}: corrupt step record: line {number} {why}")
    return {rank: steps.records for rank, steps in run.step_files.items()}


def _windows(files: list[Path], steps: dict[int, tuple[dict[str, Any], ...]]) -> list[Window]:
    names = _target_names(files)
    windows = []
    for index, path in enumerate(files):
        trace = load_trace(path)
        step, end_us = _window_step(trace, index)
        windows.append(
            Window(
                path=path,
                rank=trace.rank,
                target_name=names[path],
                step=step,
                wall_time=_wall_time(trace, step, end_us, steps.get(trace.rank, ())),
                summary=trace_summary(trace),
            )
        )
    return windows


def _target_names(files: list[Path]) -> dict[Path, str]:
    """``<worker>.<n>.pt.trace.json.gz`` per file: the plugin's worker and span, kept where the
    name already has them; otherwise the file's stem and its 1-based position among that
    worker's files (zero-padded: the plugin sorts spans as strings)."""
    parsed = {}
    for path in files:
        match = PLUGIN_TRACE_PATTERN.match(path.name)
        worker = match.group(1) if match else _stem(path.name)
        parsed[path] = (worker, match.group(2)[1:] if match and match.group(2) else None)
    names = {}
    for worker in dict.fromkeys(w for w, _ in parsed.values()):
        mine = [p for p, (w, _) in parsed.items() if w == worker]
        width = len(str(len(mine)))
        keep = all(parsed[p][1] for p in mine) and len({parsed[p][1] for p in mine}) == len(mine)
        for position, path in enumerate(mine, 1):
            number = parsed[path][1] if keep else str(position).zfill(width)
            names[path] = f"{worker}.{number}{TRACE_SUFFIX}"
    return names


def _window_step(trace: Any, index: int) -> tuple[int, float | None]:
    """The window's last training step, and where its last step ends (trace microseconds).

    Ours record the window's steps in the ``trainprof`` key; plain traces number their
    ``ProfilerStep#N`` ranges; a trace with neither counts as step ``index`` of the export.
    """
    table = step_table(trace)
    named = table[table["name"] != WHOLE_TRACE_NAME]
    end_us = float(table["end_us"].max()) if len(table) else None
    window = (trace.trainprof or {}).get("window")
    if isinstance(window, dict) and type(window.get("last_step")) is int:
        return window["last_step"], end_us
    return (int(named["step"].max()) if len(named) else index), end_us


def _wall_time(
    trace: Any, step: int, end_us: float | None, records: tuple[dict[str, Any], ...]
) -> float:
    for record in records:
        start, dur = record.get("start_unix_us"), record.get("dur_us")
        if record["step"] == step and isinstance(start, int | float) and dur is not None:
            return float(start + dur) / 1e6
    # Kineto's timestamps count from baseTimeNanoseconds; older traces' are unix microseconds.
    base_ns = trace.meta.get(BASE_TIME_KEY)
    base_us = base_ns / 1e3 if type(base_ns) is int and 0 < base_ns < 2**63 else 0.0
    if end_us is not None and base_us + end_us > _UNIX_US_2001:
        return (base_us + end_us) / 1e6
    return trace.path.stat().st_mtime
