"""Cached calls into ``profiler.analysis``: the dashboard's only import of ``profiler``.

Runs are directories under the trace root that hold trace files or ``meta/run.json``; a run's
name is its path relative to the root. Results are cached per trace file, keyed by the file's
path, size and mtime, and per run, keyed by those of every file in the run, so returning to a
run is instant while a new capture window or a rewritten file is read afresh.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from profiler.analysis.steps import step_breakdown
from profiler.analysis.summary import SCHEMA, trace_summary
from profiler.analysis.table import is_trace_file, load_trace
from profiler.store.chrome_trace import TraceFormatError

META_DIR = "meta"
RUN_META = "run.json"
ROOT_CONFIG_KEY = "TRAINPROF_ROOT"
_STEPS_FILE = re.compile(r"^steps\.(\d+)\.jsonl$")
_TRACE_CACHE_SIZE = 128
_RUN_CACHE_SIZE = 32

# (path, size, mtime_ns): what a cached result depends on.
Fingerprint = tuple[str, int, int]


@dataclass(frozen=True)
class RunInfo:
    """A run the dashboard can show.

    Attributes:
        name: the run directory relative to the root, with ``/`` separators.
        path: the run directory.
        trace_files: how many trace files lie directly in it.
        has_meta: whether it has ``meta/run.json``.
    """

    name: str
    path: Path
    trace_files: int
    has_meta: bool


@dataclass(frozen=True)
class RunData:
    """Everything the overview shows of one run. Shared by the cache: treat as read-only.

    Attributes:
        name: the run's name.
        summary: the ``trainprof.summary/1`` dict of the trace files that loaded.
        breakdown: one row per step per trace: ``trace`` (file name), ``rank``, ``step``,
            ``dur_us`` and ``<category>_us`` for each breakdown category.
        steps: the always-on per-step metrics of every ``meta/steps.<rank>.jsonl`` line, each
            with its ``rank``.
        run_meta: ``meta/run.json``, or None when the run has none.
        errors: one message per file that could not be read, naming the file.
    """

    name: str
    summary: dict[str, Any]
    breakdown: tuple[dict[str, Any], ...]
    steps: tuple[dict[str, Any], ...]
    run_meta: dict[str, Any] | None
    errors: tuple[str, ...]


def list_runs(root: str | Path) -> list[RunInfo]:
    """Every run under ``root`` (the root itself too, named ``.``, if it holds traces).

    Symlinked directories are not followed, so nothing outside the root is listed.

    Args:
        root: the trace store root.

    Returns:
        The runs, sorted by name; empty when the root does not exist.
    """
    base = Path(root)
    runs: list[RunInfo] = []
    for dirpath, dirnames, _ in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != META_DIR and not d.startswith("."))
        run = _run_info(base, Path(dirpath))
        if run is not None:
            runs.append(run)
    return sorted(runs, key=lambda r: r.name)


def resolve_run(root: str | Path, name: str) -> Path:
    """The directory of run ``name``, refusing any name that leads outside ``root``.

    Args:
        root: the trace store root.
        name: a run name as :func:`list_runs` gives it.

    Returns:
        The run directory (which may not exist).

    Raises:
        ValueError: the name is empty, absolute, has a ``..`` part or a NUL, or resolves
            (through symlinks) outside the root.
    """
    if not name or "\x00" in name:
        raise ValueError("a run name must be a non-empty path under the trace root")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise ValueError(f"run name {name!r} is absolute; names are relative to the trace root")
    if ".." in posix.parts or ".." in windows.parts:
        raise ValueError(f"run name {name!r} leads outside the trace root")
    base = Path(root).resolve()
    candidate = (base / posix).resolve()
    if not candidate.is_relative_to(base):
        raise ValueError(f"run name {name!r} leads outside the trace root")
    return candidate


def run_summary(root: str | Path, name: str) -> RunData:
    """The analysis of run ``name``, cached until any of its files changes.

    Args:
        root: the trace store root.
        name: the run's name.

    Returns:
        The run's summary, breakdown rows, per-step metrics, run.json and load errors.

    Raises:
        ValueError: the name leads outside the root (see :func:`resolve_run`).
        LookupError: there is no run of that name.
    """
    run_dir = resolve_run(root, name)
    if not run_dir.is_dir() or _run_info(Path(root).resolve(), run_dir) is None:
        raise LookupError(f"no run named {name!r} under the trace root")
    return _cached_run(name, str(run_dir), _run_fingerprints(run_dir))


def current_root() -> Path:
    """The trace root of the Dash app serving the current request."""
    import flask

    return Path(flask.current_app.config[ROOT_CONFIG_KEY])


def _run_info(root: Path, directory: Path) -> RunInfo | None:
    traces = _trace_files(directory)
    has_meta = (directory / META_DIR / RUN_META).is_file()
    if not traces and not has_meta:
        return None
    name = directory.relative_to(root).as_posix()
    return RunInfo(name=name, path=directory, trace_files=len(traces), has_meta=has_meta)


def _trace_files(directory: Path) -> list[Path]:
    # Only the run's own files: a nested run's traces belong to that run.
    return sorted(p for p in directory.iterdir() if is_trace_file(p))


def _meta_files(run_dir: Path) -> list[Path]:
    meta = run_dir / META_DIR
    if not meta.is_dir():
        return []
    return sorted(p for p in meta.iterdir() if p.name == RUN_META or _STEPS_FILE.match(p.name))


def _fingerprint(path: Path) -> Fingerprint:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def _run_fingerprints(run_dir: Path) -> tuple[Fingerprint, ...]:
    return tuple(_fingerprint(p) for p in [*_trace_files(run_dir), *_meta_files(run_dir)])


@lru_cache(maxsize=_RUN_CACHE_SIZE)
def _cached_run(name: str, run_dir: str, files: tuple[Fingerprint, ...]) -> RunData:
    base = Path(run_dir)
    entries, breakdown, errors = [], [], []
    for fingerprint in files:
        path = Path(fingerprint[0])
        if path.parent.name == META_DIR and path.parent.parent == base:
            continue
        result = _cached_trace(*fingerprint)
        if isinstance(result, str):
            errors.append(result)
            continue
        entries.append(result[0])
        breakdown.extend(result[1])
    run_meta, meta_errors = _read_run_meta(base)
    steps, step_errors = _read_steps(base)
    return RunData(
        name=name,
        summary={"schema": SCHEMA, "traces": entries},
        breakdown=tuple(breakdown),
        steps=tuple(steps),
        run_meta=run_meta,
        errors=tuple(errors + meta_errors + step_errors),
    )


@lru_cache(maxsize=_TRACE_CACHE_SIZE)
def _cached_trace(
    path: str, size: int, mtime_ns: int
) -> tuple[dict[str, Any], list[dict[str, Any]]] | str:
    """One trace file's summary entry and breakdown rows, or the message why it failed."""
    file = Path(path)
    try:
        trace = load_trace(file)
        entry = trace_summary(trace)
        frame = step_breakdown(trace)
    except TraceFormatError as exc:
        return f"{file.name}: {exc.problem}"
    except Exception as exc:  # one bad file must not take the page down
        return f"{file.name}: cannot be analysed ({type(exc).__name__}: {exc})"
    columns = ["step", "dur_us", *(c for c in frame.columns if c.endswith("_us"))]
    rows = [
        {"trace": file.name, "rank": entry["rank"], **row}
        for row in frame[list(dict.fromkeys(columns))].to_dict("records")
    ]
    return entry, rows


def _read_run_meta(run_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    path = run_dir / META_DIR / RUN_META
    if not path.is_file():
        return None, []
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{META_DIR}/{RUN_META}: not readable JSON ({exc})"]
    if not isinstance(meta, dict):
        return None, [f"{META_DIR}/{RUN_META}: expected a JSON object"]
    return meta, []


def _read_steps(run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in _meta_files(run_dir):
        match = _STEPS_FILE.match(path.name)
        if match is None:
            continue
        rank = int(match.group(1))
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{META_DIR}/{path.name}: not readable ({exc})")
            continue
        for number, line in enumerate(lines, start=1):
            row = _parse_step_line(line)
            if row is None:
                # The last line may be half-written while the run is still going.
                if line.strip() and number < len(lines):
                    errors.append(f"{META_DIR}/{path.name}: line {number} is not a JSON object")
                continue
            rows.append({**row, "rank": rank})
    return rows, errors


def _parse_step_line(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None
