"""The runs under the trace root: discovery, name confinement, their files and metadata.

Runs are directories under the trace root that hold trace files or ``meta/run.json``; a run's
name is its path relative to the root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from profiler.analysis.table import is_trace_file

META_DIR = "meta"
RUN_META = "run.json"
ROOT_CONFIG_KEY = "TRAINPROF_ROOT"
_STEPS_FILE = re.compile(r"^steps\.(\d+)\.jsonl$")

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


def existing_run(root: str | Path, name: str) -> Path:
    """The directory of run ``name``, which must exist and be a run.

    Raises:
        ValueError: the name leads outside the root (see :func:`resolve_run`).
        LookupError: there is no run of that name.
    """
    run_dir = resolve_run(root, name)
    if not run_dir.is_dir() or _run_info(Path(root).resolve(), run_dir) is None:
        raise LookupError(f"no run named {name!r} under the trace root")
    return run_dir


def trace_fingerprints(root: str | Path, name: str) -> tuple[Fingerprint, ...]:
    """The fingerprint of every trace file of run ``name``, in file-name order.

    Raises:
        ValueError: the name leads outside the root (see :func:`resolve_run`).
        LookupError: there is no run of that name.
    """
    return tuple(fingerprint(p) for p in trace_files(existing_run(root, name)))


def run_version(root: str | Path, name: str, *, with_meta: bool) -> str | None:
    """A token that changes whenever run ``name``'s files change: a new capture window, a
    rewritten file or, ``with_meta``, a new line of per-step metrics.

    Returns:
        The token, or None when the name is refused or there is no such run.
    """
    try:
        run_dir = existing_run(root, name)
    except (ValueError, LookupError):
        return None
    files = [*trace_files(run_dir), *(meta_files(run_dir) if with_meta else [])]
    try:
        stamp = repr([fingerprint(p) for p in files])
    except OSError:  # a file went away between listing and stat: the next poll sees it
        return None
    return hashlib.blake2b(stamp.encode(), digest_size=8).hexdigest()


def current_root() -> Path:
    """The trace root of the Dash app serving the current request."""
    import flask

    return Path(flask.current_app.config[ROOT_CONFIG_KEY])


def trace_files(directory: Path) -> list[Path]:
    """The trace files lying directly in ``directory``: a nested run's belong to that run."""
    return sorted(p for p in directory.iterdir() if is_trace_file(p))


def meta_files(run_dir: Path) -> list[Path]:
    """``meta/run.json`` and ``meta/steps.<rank>.jsonl`` of a run, those that exist."""
    meta = run_dir / META_DIR
    if not meta.is_dir():
        return []
    return sorted(p for p in meta.iterdir() if p.name == RUN_META or _STEPS_FILE.match(p.name))


def fingerprint(path: Path) -> Fingerprint:
    """``(path, size, mtime_ns)`` of a file."""
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def read_run_meta(run_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """``meta/run.json`` of a run (None when absent), and why it could not be read."""
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


def read_steps(run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every line of a run's ``meta/steps.<rank>.jsonl`` files with its ``rank``, and errors.

    The last line of a file may be half-written while the run is still going: it is skipped
    quietly; any other line that is not a JSON object is reported.
    """
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in meta_files(run_dir):
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
                if line.strip() and number < len(lines):
                    errors.append(f"{META_DIR}/{path.name}: line {number} is not a JSON object")
                continue
            rows.append({**row, "rank": rank})
    return rows, errors


def _run_info(root: Path, directory: Path) -> RunInfo | None:
    traces = trace_files(directory)
    has_meta = (directory / META_DIR / RUN_META).is_file()
    if not traces and not has_meta:
        return None
    name = directory.relative_to(root).as_posix()
    return RunInfo(name=name, path=directory, trace_files=len(traces), has_meta=has_meta)


def _parse_step_line(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None
