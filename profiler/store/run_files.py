"""Read a run's side files, ``meta/run.json``, ``meta/rank.<rank>.json`` and
``meta/steps.<rank>.jsonl``, whatever they hold.

Each rank writes its own facts (files, status, heartbeat, host, pid, steps) to
``meta/rank.<rank>.json``; rank 0 also owns ``run.json`` (config, environment).
:func:`read_run_record` merges them on read: ``run.json``'s object with ``ranks`` (every rank's
record, by rank as a string) and ``trace_files`` (every rank's, in name order). A run written
before rank files existed has run.json alone: it is read as rank 0's record.

These files are written while the run goes on and read while it does: a run killed mid-write
leaves a step log whose last line is cut short, and a disk or a person can leave anything
there. Nothing in them makes these readers fail: a run.json that cannot be read is "no
metadata" plus the reason; a step line that is not a step record is skipped and counted.
Sizes are bounded too: run.json is read only up to :data:`MAX_RUN_META_BYTES`, and a step
line longer than :data:`MAX_STEP_LINE_BYTES` is skipped without being held.

These are the only step-line rules (the CLI, the TensorBoard export and the dashboard all read
through them): a line needs to be a JSON object with an integer ``step``; a measured value
(``*_us``, ``*_bytes``, ``*_pct``) that is not a finite number is dropped from its record and
reported; a last line cut short is skipped quietly.

Given a ``root``, a reader confines itself to it: a file that is a link (or lies under a linked
``meta/``) resolving outside the root counts as absent, so a run cannot point a reader (the
dashboard, serving the root) at ``~/.ssh`` or ``/etc``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from profiler.events import META_DIR, RUN_META_FILE

RUN_SCHEMA_PREFIX = "trainprof.run/"
RANK_FORMAT = "trainprof.rank/1"
RANK_SCHEMA_PREFIX = "trainprof.rank/"
STEPS_FILE = re.compile(r"^steps\.(\d{1,9})\.jsonl$")
RANK_FILE = re.compile(r"^rank\.(\d{1,9})\.json$")
_META_FILE = re.compile(f"{STEPS_FILE.pattern}|{RANK_FILE.pattern}")
#: The keys of a merged record that hold every rank's facts.
RANKS_KEY = "ranks"
TRACE_FILES_KEY = "trace_files"
# run.json holds config, environment and a list of files: kilobytes.
MAX_RUN_META_BYTES = 16 * 1024**2
# A step line is ~400 bytes; a "line" of megabytes is no step record.
MAX_STEP_LINE_BYTES = 1024**2
#: Bad lines named per step log by :meth:`StepFile.problems`: a garbage file would flood a page.
MAX_LINE_PROBLEMS = 3
_MEASURED_SUFFIXES = ("_us", "_bytes", "_pct")
_INT_LIMIT = 2**63  # what a browser's and numpy's numbers hold; past it a value is nonsense

#: ``(path, size, mtime_ns)``: what a result read from a file depends on.
Fingerprint = tuple[str, int, int]


@dataclass(frozen=True)
class RunMeta:
    """A run's ``meta/run.json`` as read.

    Attributes:
        path: the file.
        meta: its object; None when the file is absent or cannot be read as one.
        problem: why it could not be read, in words (None when it was, or is absent).
        rank_problems: ``meta/rank.<n>.json: <why>`` for each rank file that could not be
            read (only from :func:`read_run_record`).
    """

    path: Path
    meta: dict[str, Any] | None
    problem: str | None = None
    rank_problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepFile:
    """One rank's ``meta/steps.<rank>.jsonl`` as read.

    Attributes:
        path: the file.
        rank: the rank in its name.
        records: its step records in file order: JSON objects with an integer ``step``, as
            capture writes them, less any measured value that is not a finite number.
        bad_lines: ``(line number, why)`` of each line skipped, or whose values were dropped;
            blank lines are not counted.
        cut_short: the last line is not whole (no newline, not a record): the run was killed
            while writing it, or is writing it now. It is skipped and in ``bad_lines`` too.
        problem: why the file could not be read at all (then there are no records).
    """

    path: Path
    rank: int
    records: tuple[dict[str, Any], ...]
    bad_lines: tuple[tuple[int, str], ...] = ()
    cut_short: bool = False
    problem: str | None = None

    @property
    def skipped(self) -> int:
        """How many lines were skipped."""
        return len(self.bad_lines)

    @property
    def reported(self) -> tuple[tuple[int, str], ...]:
        """:attr:`bad_lines` less a last line cut short (normal after a crash, and while the
        run writes): the lines a reader should report."""
        return self.bad_lines[:-1] if self.cut_short else self.bad_lines

    def problems(self, name: str | None = None, limit: int | None = None) -> list[str]:
        """One line per problem, ``<name>: line <n> <why>``, leaving out a last line cut short
        (normal after a crash, and while the run writes).

        Args:
            name: how to call the file (default: its path).
            limit: name at most this many bad lines, then say how many more there are.
        """
        name = str(self.path) if name is None else name
        bad = self.reported
        shown = bad if limit is None else bad[:limit]
        found = [f"{name}: line {number} {why}" for number, why in shown]
        if len(bad) > len(shown):
            found.append(f"{name}: {len(bad) - len(shown)} more bad line(s)")
        return [f"{name}: {self.problem}", *found] if self.problem else found


def read_run_meta(
    run_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> RunMeta:
    """``meta/run.json`` of the run at ``run_dir`` as written (no rank merged in); never raises.

    Args:
        run_dir: the run directory.
        root: a file resolving outside it counts as absent (default: no confinement).

    Returns:
        The object, or None with the problem (not readable, not JSON, not an object, not a
        ``trainprof.run/`` document, larger than :data:`MAX_RUN_META_BYTES`).
    """
    return _read_record(Path(run_dir) / META_DIR / RUN_META_FILE, root, RUN_SCHEMA_PREFIX)


def read_rank_metas(
    run_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> dict[int, RunMeta]:
    """Every ``meta/rank.<rank>.json`` of the run at ``run_dir``, by rank; never raises."""
    found = [(RANK_FILE.match(p.name), p) for p in meta_files(run_dir, root)]
    ranks = sorted((int(match[1]), path) for match, path in found if match is not None)
    return {rank: _read_record(path, root, RANK_SCHEMA_PREFIX) for rank, path in ranks}


def read_run_record(
    run_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> RunMeta:
    """The run's metadata with every rank's facts merged in; never raises.

    ``meta`` is ``run.json``'s object (or ``{}`` where only rank files exist) plus
    ``"ranks": {"<rank>": record}``, each rank's ``meta/rank.<rank>.json`` (for a run written
    before rank files, ``run.json`` itself as rank 0's), and ``"trace_files"``, every rank's
    in name order. ``rank_problems`` names each rank file that could not be read.
    """
    run = read_run_meta(run_dir, root)
    read = read_rank_metas(run_dir, root)
    ranks = {str(rank): found.meta for rank, found in read.items() if found.meta is not None}
    problems = tuple(
        f"{META_DIR}/{found.path.name}: {found.problem}" for found in read.values() if found.problem
    )
    if not ranks and not problems:
        if run.meta is None:
            return run
        ranks = {"0": run.meta}  # written before rank files existed: run.json is rank 0's
    files = {name for record in ranks.values() for name in _names(record.get(TRACE_FILES_KEY))}
    merged = {**(run.meta or {}), RANKS_KEY: ranks, TRACE_FILES_KEY: sorted(files)}
    return RunMeta(run.path, merged, run.problem, problems)


def _names(value: Any) -> list[str]:
    return [name for name in value if isinstance(name, str)] if isinstance(value, list) else []


def _read_record(path: Path, root: str | os.PathLike[str] | None, schema: str) -> RunMeta:
    """One JSON object file of ``meta/`` whose ``schema`` starts with ``schema``."""
    if root is not None and path.exists() and not inside(path, root):
        return RunMeta(path, None)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_RUN_META_BYTES + 1)
    except FileNotFoundError:
        return RunMeta(path, None)
    except OSError as exc:
        return RunMeta(path, None, f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_RUN_META_BYTES:
        return RunMeta(path, None, f"larger than {MAX_RUN_META_BYTES >> 20} MiB: not a {path.name}")
    try:
        meta = orjson.loads(data)  # orjson stops at 1024 levels of nesting by itself
    except orjson.JSONDecodeError as exc:
        return RunMeta(path, None, f"corrupt run metadata: {exc}")
    if not isinstance(meta, dict):
        return RunMeta(path, None, "corrupt run metadata: not a JSON object")
    if not str(meta.get("schema", "")).startswith(schema):
        kind = "run.json" if schema == RUN_SCHEMA_PREFIX else "rank record"
        return RunMeta(path, None, f"not a trainprof {kind} (no {schema} schema)")
    return RunMeta(path, meta)


def read_steps(
    run_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> dict[int, StepFile]:
    """Every ``meta/steps.<rank>.jsonl`` of the run at ``run_dir``, by rank; never raises.

    Args:
        run_dir: the run directory.
        root: files resolving outside it are not read (default: no confinement).
    """
    return {rank: read_step_file(path, rank) for rank, path in step_logs(run_dir, root)}


def step_logs(
    run_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> list[tuple[int, Path]]:
    """``(rank, path)`` of each ``meta/steps.<rank>.jsonl`` of a run, by rank (those that lie
    under ``root`` once symlinks are resolved, given one); for readers that read on from an
    offset, such as a live view."""
    found = [(STEPS_FILE.match(p.name), p) for p in meta_files(run_dir, root)]
    return sorted((int(match[1]), path) for match, path in found if match is not None)


def meta_files(
    run_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> list[Path]:
    """``meta/run.json``, ``meta/rank.<rank>.json`` and ``meta/steps.<rank>.jsonl`` of a run,
    those that exist (and lie under ``root`` once symlinks are resolved, given one), in name
    order."""
    meta = Path(run_dir) / META_DIR
    try:
        names = os.listdir(meta)
    except OSError:  # no meta/ (a plain torch.profiler run), or unreadable
        return []
    found = [meta / n for n in names if n == RUN_META_FILE or _META_FILE.match(n)]
    return sorted(p for p in found if p.is_file() and (root is None or inside(p, root)))


def inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path``, its symlinks resolved, lies under ``root`` (resolved too)."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def fingerprint(path: str | os.PathLike[str]) -> Fingerprint:
    """``(path, size, mtime_ns)`` of a file.

    Raises:
        OSError: the file is gone.
    """
    stat = os.stat(path)
    return (str(path), stat.st_size, stat.st_mtime_ns)


def read_step_file(path: str | os.PathLike[str], rank: int = 0) -> StepFile:
    """The step records of one step log, line by line; never raises.

    Args:
        path: the file.
        rank: the rank it belongs to.
    """
    path = Path(path)
    records: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    whole, number = True, 0
    try:
        with path.open("rb") as file:
            for number, line in enumerate(_lines(file), 1):
                whole = line is None or line.endswith(b"\n")
                why = record_or_problem(line, records)
                if why is not None:
                    bad.append((number, why))
    except OSError as exc:
        return StepFile(path, rank, (), problem=f"cannot read: {exc.strerror or exc}")
    cut_short = bool(bad) and not whole and bad[-1][0] == number
    return StepFile(path, rank, tuple(records), tuple(bad), cut_short)


def _lines(file: BinaryIO) -> Iterator[bytes | None]:
    """The file's lines; None for one longer than :data:`MAX_STEP_LINE_BYTES` (read past in
    blocks, never held)."""
    while line := file.readline(MAX_STEP_LINE_BYTES + 1):
        if len(line) <= MAX_STEP_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = file.readline(MAX_STEP_LINE_BYTES)
        yield None


def record_or_problem(line: bytes | None, records: list[dict[str, Any]]) -> str | None:
    """Add the line's record to ``records``; or say what is wrong with it (None: nothing, or
    a blank line). The one step-line rule, for whole reads and for readers going on from an
    offset (the dashboard's live Overview).

    Args:
        line: one line, with its newline; None for one past :data:`MAX_STEP_LINE_BYTES`.
        records: where the record goes (less values that are not finite numbers).
    """
    if line is None:
        return f"is longer than {MAX_STEP_LINE_BYTES >> 20} MiB: not a step record"
    if not line.strip():
        return None
    try:
        record = orjson.loads(line)  # orjson stops at 1024 levels of nesting by itself
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        return "is not a JSON object"
    if not _is_int(record.get("step")):
        return "has no integer 'step'"
    bad = [key for key, value in record.items() if key.endswith(_MEASURED_SUFFIXES)]
    bad = [key for key in bad if not _is_number(record[key])]
    records.append({k: v for k, v in record.items() if k not in bad} if bad else record)
    return f"has {', '.join(map(repr, bad))} not a finite number" if bad else None


def _is_int(value: Any) -> bool:
    return type(value) is int and -_INT_LIMIT < value < _INT_LIMIT


def _is_number(value: Any) -> bool:
    if value is None:
        return True  # a measurement not taken this step
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return _is_int(value) if isinstance(value, int) else math.isfinite(value)
