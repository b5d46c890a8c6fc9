"""A live run's step logs, read from where the last poll stopped.

An open Overview polls every couple of seconds while a run appends to ``meta/steps.<rank>.jsonl``.
Re-reading the whole log each time costs CPU in proportion to the run's length (a core at 100k
steps); :func:`new_steps` reads only the bytes past each file's last offset, so a poll costs in
proportion to the steps added since the last one. The line rules are the store's
(``profiler.store.run_files``), the same as for a whole read: a line is a step record when it is
a JSON object with an integer ``step``, and a measured value that is not a finite number is
dropped from its row; other lines are skipped and counted. A last line without its newline is
being written: it is left for the next poll, its bytes unread.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashboard.data.runs import existing_run, open_run, run_version
from profiler.store.run_files import MAX_STEP_LINE_BYTES, record_or_problem, step_logs

#: The most bytes one poll reads from one file: a log with no newline in that much is no step
#: log, and is read past rather than held (step lines are ~400 bytes).
MAX_READ_BYTES = 64 * MAX_STEP_LINE_BYTES


@dataclass(frozen=True)
class StepChunk:
    """The step records appended to a run's step logs since the given offsets.

    Attributes:
        rows: the new records in file order, rank by rank, each with its ``rank``; of the
            plotted values only finite numbers are kept.
        offsets: per step-log file name, the byte offset the next poll starts from.
        bytes_read: how many bytes were read (the cost of this poll, with ``lines``).
        lines: how many lines were parsed.
        skipped: how many of them were not step records.
        restarted: a file is shorter than its offset (rewritten, truncated): it was read from
            the start, so the caller must replace what it has, not extend it.
    """

    rows: tuple[dict[str, Any], ...]
    offsets: dict[str, int]
    bytes_read: int
    lines: int
    skipped: int
    restarted: bool


def new_steps(root: str | Path, name: str, offsets: Mapping[str, int] | None = None) -> StepChunk:
    """The step records of run ``name`` past ``offsets`` (from the start when None or empty).

    Args:
        root: the trace store root.
        name: the run's name.
        offsets: what a previous call returned in :attr:`StepChunk.offsets`.

    Raises:
        RunRefused: the name leads outside the root.
        RunNotFound: there is no run of that name.
    """
    run_dir = existing_run(root, name)
    seen = dict(offsets or {})
    rows: list[dict[str, Any]] = []
    new_offsets: dict[str, int] = {}
    read = lines = skipped = 0
    restarted = False
    for rank, path in step_logs(run_dir, root):
        start = seen.get(path.name, 0)
        try:
            if path.stat().st_size < start:
                restarted, start = True, 0
            data = _read_from(path, start)
        except OSError:  # gone or unreadable now: the next poll tries again
            new_offsets[path.name] = start
            continue
        whole = _whole_lines(data)
        new_offsets[path.name] = start + len(whole)
        read += len(data)
        for line in whole.splitlines(keepends=True):
            lines += 1
            skipped += _add_record(line, rank, rows)
    return StepChunk(tuple(rows), new_offsets, read, lines, skipped, restarted)


def overview_version(root: str | Path, name: str) -> str | None:
    """A token that changes when what the Overview draws from whole files changes: its trace
    files, or the run's status. New step lines leave it alone: they are sent by extending the
    per-step figure (:func:`new_steps`), not by drawing the page again.

    Returns:
        The token, or None when the name is refused or there is no such run.
    """
    traces = run_version(root, name, with_meta=False)
    if traces is None:
        return None
    try:
        status = open_run(root, name).status()
    except (LookupError, ValueError, OSError):  # gone, or refused, since run_version
        return None
    return hashlib.blake2b(f"{traces}|{status}".encode(), digest_size=8).hexdigest()


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(MAX_READ_BYTES)


def _whole_lines(data: bytes) -> bytes:
    """The complete lines at the start of ``data``: a line still being written waits for the
    next poll; but a read of :data:`MAX_READ_BYTES` with no newline at all is consumed whole
    (and skipped as one bad line), so it is never read again."""
    whole = data[: data.rfind(b"\n") + 1]
    return data if not whole and len(data) >= MAX_READ_BYTES else whole


def _add_record(line: bytes, rank: int, rows: list[dict[str, Any]]) -> int:
    """Append the line's record (with ``rank``) to ``rows``; 1 when it is not a record."""
    records: list[dict[str, Any]] = []
    # The store's reader yields None for a line past its limit, never holding it.
    why = record_or_problem(line if len(line) <= MAX_STEP_LINE_BYTES else None, records)
    if not records:
        return int(why is not None)
    rows.append({**records[0], "rank": rank})  # non-finite values already dropped
    return 0
