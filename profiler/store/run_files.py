"""Read a run's side files, ``meta/run.json`` and ``meta/steps.<rank>.jsonl``, whatever they hold.

These files are written while the run goes on and read while it does: a run killed mid-write
leaves a step log whose last line is cut short, and a disk or a person can leave anything
there. Nothing in them makes these readers fail: a run.json that cannot be read is "no
metadata" plus the reason; a step line that is not a step record is skipped and counted.
Sizes are bounded too: run.json is read only up to :data:`MAX_RUN_META_BYTES`, and a step
line longer than :data:`MAX_STEP_LINE_BYTES` is skipped without being held.
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
STEPS_FILE = re.compile(r"^steps\.(\d{1,9})\.jsonl$")
# run.json holds config, environment and a list of files: kilobytes.
MAX_RUN_META_BYTES = 16 * 1024**2
# A step line is ~400 bytes; a "line" of megabytes is no step record.
MAX_STEP_LINE_BYTES = 1024**2


@dataclass(frozen=True)
class RunMeta:
    """A run's ``meta/run.json`` as read.

    Attributes:
        path: the file.
        meta: its object; None when the file is absent or cannot be read as one.
        problem: why it could not be read, in words (None when it was, or is absent).
    """

    path: Path
    meta: dict[str, Any] | None
    problem: str | None = None


@dataclass(frozen=True)
class StepFile:
    """One rank's ``meta/steps.<rank>.jsonl`` as read.

    Attributes:
        path: the file.
        rank: the rank in its name.
        records: its step records in file order: JSON objects with an integer ``step`` and a
            number ``dur_us``, as capture writes them.
        bad_lines: ``(line number, why)`` of each other line, skipped; blank lines are not
            counted.
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

    def problems(self) -> list[str]:
        """One line per problem, ``<file>:<line>: <why>``, leaving out a last line cut short
        (normal after a crash, and while the run writes)."""
        bad = self.bad_lines[:-1] if self.cut_short else self.bad_lines
        found = [f"{self.path}:{number}: {why}" for number, why in bad]
        return [f"{self.path}: {self.problem}", *found] if self.problem else found


def read_run_meta(run_dir: str | os.PathLike[str]) -> RunMeta:
    """``meta/run.json`` of the run at ``run_dir``; never raises.

    Returns:
        The object, or None with the problem (not readable, not JSON, not an object, not a
        ``trainprof.run/`` document, larger than :data:`MAX_RUN_META_BYTES`).
    """
    path = Path(run_dir) / META_DIR / RUN_META_FILE
    try:
        with path.open("rb") as file:
            data = file.read(MAX_RUN_META_BYTES + 1)
    except FileNotFoundError:
        return RunMeta(path, None)
    except OSError as exc:
        return RunMeta(path, None, f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_RUN_META_BYTES:
        return RunMeta(path, None, f"larger than {MAX_RUN_META_BYTES >> 20} MiB: not a run.json")
    try:
        meta = orjson.loads(data)  # orjson stops at 1024 levels of nesting by itself
    except orjson.JSONDecodeError as exc:
        return RunMeta(path, None, f"corrupt run metadata: {exc}")
    if not isinstance(meta, dict):
        return RunMeta(path, None, "corrupt run metadata: not a JSON object")
    if not str(meta.get("schema", "")).startswith(RUN_SCHEMA_PREFIX):
        return RunMeta(path, None, f"not a trainprof run.json (no {RUN_SCHEMA_PREFIX} schema)")
    return RunMeta(path, meta)


def read_steps(run_dir: str | os.PathLike[str]) -> dict[int, StepFile]:
    """Every ``meta/steps.<rank>.jsonl`` of the run at ``run_dir``, by rank; never raises."""
    meta_dir = Path(run_dir) / META_DIR
    try:
        names = sorted(os.listdir(meta_dir))
    except OSError:
        return {}
    found = {}
    for name in names:
        match = STEPS_FILE.match(name)
        if match is not None:
            found[int(match[1])] = read_step_file(meta_dir / name, int(match[1]))
    return dict(sorted(found.items()))


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
                why = _record_or_problem(line, records)
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


def _record_or_problem(line: bytes | None, records: list[dict[str, Any]]) -> str | None:
    """Add the line's record to ``records``; or say why it is none (None for a blank line)."""
    if line is None:
        return f"longer than {MAX_STEP_LINE_BYTES >> 20} MiB: not a step record"
    if not line.strip():
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"corrupt step record: {exc}"
    if not _is_step_record(record):
        return "corrupt step record: a step record needs an integer step and dur_us"
    records.append(record)
    return None


def _is_step_record(record: Any) -> bool:
    if not isinstance(record, dict) or type(record.get("step")) is not int:
        return False
    dur = record.get("dur_us")
    return isinstance(dur, int | float) and not isinstance(dur, bool) and math.isfinite(dur)
