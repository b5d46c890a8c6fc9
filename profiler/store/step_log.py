"""The always-on step log, ``meta/steps.<rank>.jsonl``: whole JSON lines or nothing."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

# Lines that could not be written are kept for the next write, up to this many bytes (~10k
# steps at ~400 bytes a line): a disk that fills and is cleaned up again loses no step.
PENDING_MAX_BYTES = 4 << 20


class StepLog:
    """Append-only JSON lines of per-step metrics, one line per step.

    The caller batches: capture hands over about a second of steps at a time, so a killed
    process loses at most that much, and a crash inside the profiled block still flushes.

    A reader never sees half a line: a write that fails (a full disk, an I/O error) is cut back
    to the end of the last whole line before the error is raised. Its lines are **kept** in
    memory and written ahead of the next batch, up to ``PENDING_MAX_BYTES``; the lines of a
    batch that would take the backlog past that are **dropped** and counted in
    :attr:`dropped` (readers see the gap in the step numbers). Lines reach the file in order.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dropped = 0  # lines given up for good (see the class docstring)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._good = os.fstat(self._fd).st_size  # the end of the last whole line
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._busy = False
        self._torn = False  # a failed write could not be cut back

    @property
    def pending(self) -> int:
        """Lines waiting to be written after a failed write."""
        return sum(chunk.count(b"\n") for chunk in self._pending)

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append one line per record, after any lines still pending, and hand them to the OS.

        Raises:
            OSError: the lines could not be written; the file ends with whole lines as before,
                and the lines are kept or dropped as the class docstring says.
        """
        lines = b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)
        if self._busy:  # a signal handler's flush inside a write: queue behind it, never mix
            self._keep(lines)
            return
        if not lines and not self._pending:
            return
        taken = len(self._pending)
        data = b"".join([*self._pending, lines]) if taken else lines
        self._busy = True
        try:
            self._append(data)
        except OSError:
            self._keep(lines, at=taken)
            raise
        finally:
            self._busy = False
        del self._pending[:taken]  # lines a signal handler queued meanwhile stay
        self._pending_bytes = sum(len(chunk) for chunk in self._pending)

    def close(self) -> None:
        """Write the lines still pending, if any, and close the file.

        Raises:
            OSError: the pending lines could not be written (they are dropped and counted; the
                file is closed either way).
        """
        if self._fd < 0:
            return
        try:
            if self._pending:
                self.write(())
        except OSError:
            self.dropped += self.pending
            self._pending.clear()
            raise
        finally:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _append(self, data: bytes) -> None:
        if self._fd < 0:
            raise OSError(f"step log {self.path} is closed")
        if self._torn:  # an earlier cut failed: cut first, or write nothing
            os.ftruncate(self._fd, self._good)
            self._torn = False
        view, written = memoryview(data), 0
        try:
            while written < len(data):  # a short write is followed by its error on the next
                written += os.write(self._fd, view[written:])
        except OSError:
            self._cut()
            raise
        self._good += len(data)

    def _cut(self) -> None:
        """Cut the file back to its last whole line (retried at the next write if this fails)."""
        try:
            os.ftruncate(self._fd, self._good)
        except OSError:
            self._torn = True

    def _keep(self, data: bytes, *, at: int | None = None) -> None:
        """Queue ``data`` (at index ``at`` of the pending chunks, default last) or drop it."""
        if not data:
            return
        if self._pending_bytes + len(data) > PENDING_MAX_BYTES:
            self.dropped += data.count(b"\n")
            return
        self._pending.insert(len(self._pending) if at is None else at, data)
        self._pending_bytes += len(data)
