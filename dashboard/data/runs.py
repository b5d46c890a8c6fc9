"""The runs under the trace root: discovery, name confinement, their files and metadata.

Runs are directories under the trace root that hold trace files or ``meta/run.json``; a run's
name is its path relative to the root.

Nothing outside the root is read: symlinked directories are not followed, and a file that is a
link (or lies under a linked ``meta/``) resolving outside the root is treated as absent, so a
run cannot point the dashboard at ``~/.ssh`` or ``/etc``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from profiler.analysis.table import is_trace_file
from profiler.store.liveness import run_state

META_DIR = "meta"
RUN_META = "run.json"
ROOT_CONFIG_KEY = "TRAINPROF_ROOT"
_STEPS_FILE = re.compile(r"^steps\.(\d+)\.jsonl$")
MAX_LINE_ERRORS = 3  # bad lines named per steps file; a garbage file would flood the banner
_MEASURED_SUFFIXES = ("_us", "_bytes", "_pct")
_INT_LIMIT = 2**63  # what a browser's and numpy's numbers hold; past it a value is nonsense


# (path, size, mtime_ns): what a cached result depends on.
Fingerprint = tuple[str, int, int]


class RunRefused(ValueError):
    """A run or file name that would lead outside the trace root, or is no name at all."""


class RunNotFound(LookupError):
    """No run, or no file of the run, by that name."""


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
        RunRefused: the name is not a string (a query repeats ``run=``), is empty, absolute,
            has a ``..`` part or a NUL, or resolves (through symlinks) outside the root.
    """
    # A URL's query can hand a page anything: ``?run=a&run=b`` arrives as a list.
    if not isinstance(name, str) or not name or "\x00" in name:
        raise RunRefused("a run name must be a non-empty path under the trace root")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise RunRefused(f"run name {name!r} is absolute; names are relative to the trace root")
    if ".." in posix.parts or ".." in windows.parts:
        raise RunRefused(f"run name {name!r} leads outside the trace root")
    base = Path(root).resolve()
    try:
        candidate = (base / posix).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long for the OS
        raise RunRefused(f"run name {name!r} cannot be resolved ({exc})") from exc
    if not candidate.is_relative_to(base):
        raise RunRefused(f"run name {name!r} leads outside the trace root")
    return candidate


def existing_run(root: str | Path, name: str) -> Path:
    """The directory of run ``name``, which must exist and be a run.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    run_dir = resolve_run(root, name)
    if not run_dir.is_dir() or _run_info(Path(root).resolve(), run_dir) is None:
        raise RunNotFound(f"no run named {name!r} under the trace root")
    return run_dir


def trace_fingerprints(root: str | Path, name: str) -> tuple[Fingerprint, ...]:
    """The fingerprint of every trace file of run ``name``, in file-name order.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    return tuple(fingerprint(p) for p in trace_files(existing_run(root, name), root))


def run_version(
    root: str | Path, name: str, *, with_meta: bool, now: float | None = None
) -> str | None:
    """A token that changes whenever run ``name``'s files change: a new capture window, a
    rewritten file or, ``with_meta``, a new line of per-step metrics or a new run status (a
    ``running`` run whose heartbeat stopped reads as interrupted without any file changing).

    Args:
        root: the trace store root.
        name: the run's name.
        with_meta: count ``meta/`` files and the run's status too.
        now: the current unix time for the status (tests pass a fixed one).

    Returns:
        The token, or None when the name is refused or there is no such run.
    """
    try:
        run_dir = existing_run(root, name)
        files = [*trace_files(run_dir, root), *(meta_files(run_dir, root) if with_meta else [])]
        stamp = repr([fingerprint(p) for p in files])
    except (RunRefused, RunNotFound):
        return None
    except OSError:  # a file went away between listing and stat: the next poll sees it
        return None
    if with_meta:
        stamp += repr(run_status(read_run_meta(run_dir, root)[0], now=now))
    return hashlib.blake2b(stamp.encode(), digest_size=8).hexdigest()


def run_status(meta: dict[str, Any] | None, *, now: float | None = None) -> str | None:
    """The run's status as a reader sees it, from its ``run.json`` (None when it has none).

    ``profiler.store.liveness.run_state``'s label: a ``running`` run whose heartbeat stopped
    reads ``interrupted (no heartbeat since ...)``, a degraded one carries its reason.

    Args:
        meta: the decoded ``run.json``.
        now: the current unix time (tests pass a fixed one).
    """
    return None if meta is None else run_state(meta, now=now).label


def current_root() -> Path:
    """The trace root of the Dash app serving the current request."""
    import flask

    return Path(flask.current_app.config[ROOT_CONFIG_KEY])


def inside(path: Path, root: str | Path) -> bool:
    """Whether ``path``, its symlinks resolved, lies under ``root`` (resolved too)."""
    try:
        return path.resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def trace_files(directory: Path, root: str | Path | None = None) -> list[Path]:
    """The trace files lying directly in ``directory``: a nested run's belong to that run.

    A file that is a symlink resolving outside ``root`` (default: ``directory``) is left out.
    """
    confine = directory if root is None else root
    try:
        found = [p for p in directory.iterdir() if is_trace_file(p)]
    except OSError:  # unreadable or gone: no traces to show
        return []
    return sorted(p for p in found if inside(p, confine))


def meta_files(run_dir: Path, root: str | Path | None = None) -> list[Path]:
    """``meta/run.json`` and ``meta/steps.<rank>.jsonl`` of a run, those that exist and lie
    under ``root`` (default: ``run_dir``) once symlinks are resolved."""
    meta = run_dir / META_DIR
    confine = run_dir if root is None else root
    try:
        found = [p for p in meta.iterdir() if p.name == RUN_META or _STEPS_FILE.match(p.name)]
    except OSError:  # no meta/ (a plain torch.profiler run), or unreadable
        return []
    return sorted(p for p in found if p.is_file() and inside(p, confine))


def fingerprint(path: Path) -> Fingerprint:
    """``(path, size, mtime_ns)`` of a file."""
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def read_run_meta(
    run_dir: Path, root: str | Path | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """``meta/run.json`` of a run (None when absent), and why it could not be read.

    A ``run.json`` resolving outside ``root`` (default: ``run_dir``) counts as absent.
    """
    path = run_dir / META_DIR / RUN_META
    if path not in meta_files(run_dir, root):
        return None, []
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    # ValueError: bad UTF-8, bad JSON, an integer past Python's digit limit; RecursionError:
    # arrays nested thousands deep.
    except (OSError, ValueError, RecursionError) as exc:
        return None, [f"{META_DIR}/{RUN_META}: not readable JSON ({exc})"]
    if not isinstance(meta, dict):
        return None, [f"{META_DIR}/{RUN_META}: expected a JSON object, not {_json_type(meta)}"]
    return meta, []


def read_steps(
    run_dir: Path, root: str | Path | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every line of a run's ``meta/steps.<rank>.jsonl`` files with its ``rank``, and errors.

    The last line of a file may be half-written while the run is still going: it is skipped
    quietly. Any other line that is not a JSON object, or has no integer ``step``, is left out
    and reported; a ``*_us``, ``*_bytes`` or ``*_pct`` value that is not a finite number is
    dropped from its row and reported. At most :data:`MAX_LINE_ERRORS` lines are named per
    file. Files resolving outside ``root`` (default: ``run_dir``) are not read.
    """
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in meta_files(run_dir, root):
        match = _STEPS_FILE.match(path.name)
        if match is None:
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError) as exc:
            errors.append(f"{META_DIR}/{path.name}: not readable ({exc})")
            continue
        file_rows, problems = _steps_of(lines, rank=int(match.group(1)))
        rows.extend(file_rows)
        errors.extend(_capped(f"{META_DIR}/{path.name}", problems))
    return rows, errors


def _steps_of(lines: list[str], *, rank: int) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        row = _parse_step_line(line)
        if row is None:
            if line.strip() and number < len(lines):
                problems.append(f"line {number} is not a JSON object")
            continue
        step = row.get("step")
        if not _is_int(step):
            problems.append(f"line {number} has no integer 'step'")
            continue
        bad = [key for key, value in row.items() if _measured(key) and not _is_number(value)]
        if bad:
            problems.append(f"line {number}: {', '.join(map(repr, bad))} not a finite number")
        rows.append({**{k: v for k, v in row.items() if k not in bad}, "rank": rank})
    return rows, problems


def _capped(file: str, problems: list[str]) -> list[str]:
    shown = [f"{file}: {problem}" for problem in problems[:MAX_LINE_ERRORS]]
    if len(problems) > MAX_LINE_ERRORS:
        shown.append(f"{file}: {len(problems) - MAX_LINE_ERRORS} more bad line(s)")
    return shown


def _measured(key: str) -> bool:
    """A per-step measurement by its unit suffix, which the figures plot as a number."""
    return key.endswith(_MEASURED_SUFFIXES)


def _is_int(value: Any) -> bool:
    return type(value) is int and -_INT_LIMIT < value < _INT_LIMIT


def _is_number(value: Any) -> bool:
    if value is None:
        return True  # a measurement not taken this step
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return _is_int(value) if isinstance(value, int) else math.isfinite(value)


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _run_info(root: Path, directory: Path) -> RunInfo | None:
    traces = trace_files(directory, root)
    has_meta = any(p.name == RUN_META for p in meta_files(directory, root))
    if not traces and not has_meta:
        return None
    name = directory.relative_to(root).as_posix()
    return RunInfo(name=name, path=directory, trace_files=len(traces), has_meta=has_meta)


def _parse_step_line(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):  # bad JSON, a huge integer, nesting too deep
        return None
    return row if isinstance(row, dict) else None
