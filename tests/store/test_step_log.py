"""The step log writes whole lines or nothing, and keeps what a failed write could not write."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import orjson
import pytest

from profiler.store import StepLog, step_log

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "a torn last line"
    return [orjson.loads(line) for line in data.splitlines()]


class FlakyWrite:
    """os.write for the step log: fails ``fail`` times (after writing ``short`` bytes of the
    first failing call, as a nearly full disk does), then works."""

    def __init__(self, fail: int, short: int = 0) -> None:
        self.fail, self.short, self.calls = fail, short, 0
        self._write = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        self.calls += 1
        if self.fail <= 0:
            return self._write(fd, data)
        if self.short:
            written, self.short = self._write(fd, bytes(data[: self.short])), 0
            return written  # a short write; the next call raises
        self.fail -= 1
        raise ENOSPC


def test_a_failed_write_leaves_only_whole_lines_and_is_retried(tmp_path, monkeypatch) -> None:
    log = StepLog(tmp_path / "steps.0.jsonl")
    log.write([{"step": 0}])
    flaky = FlakyWrite(fail=1, short=5)  # half a line reaches the disk, then ENOSPC
    monkeypatch.setattr(step_log.os, "write", flaky)
    with pytest.raises(OSError, match="No space"):
        log.write([{"step": 1}, {"step": 2}])
    assert lines(log.path) == [{"step": 0}]  # cut back to the last whole line
    assert log.pending == 2 and log.dropped == 0
    log.write([{"step": 3}])  # the disk has room again: the kept lines go first
    log.close()
    assert [r["step"] for r in lines(log.path)] == [0, 1, 2, 3]
    assert log.pending == 0 and log.dropped == 0


def test_lines_past_the_backlog_limit_are_dropped_and_counted(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(step_log, "PENDING_MAX_BYTES", 30)
    log = StepLog(tmp_path / "steps.0.jsonl")
    monkeypatch.setattr(step_log.os, "write", FlakyWrite(fail=10**9))
    with pytest.raises(OSError):
        log.write([{"step": 0}, {"step": 1}])  # 22 bytes: kept
    with pytest.raises(OSError):
        log.write([{"step": 2}])  # would pass 30 bytes: dropped
    assert (log.pending, log.dropped) == (2, 1)
    with pytest.raises(OSError):
        log.close()  # the disk stays full: what is pending goes too, and the file is closed
    assert (log.pending, log.dropped) == (0, 3)
    assert lines(log.path) == []
    log.close()  # closing twice is harmless


def test_a_failed_cut_is_retried_before_the_next_write(tmp_path, monkeypatch) -> None:
    log = StepLog(tmp_path / "steps.0.jsonl")
    log.write([{"step": 0}])
    monkeypatch.setattr(step_log.os, "write", FlakyWrite(fail=1, short=4))
    truncate = os.ftruncate
    calls = []

    def failing_once(fd: int, size: int) -> None:
        calls.append(size)
        if len(calls) == 1:
            raise OSError(errno.EIO, "I/O error")
        truncate(fd, size)

    monkeypatch.setattr(step_log.os, "ftruncate", failing_once)
    with pytest.raises(OSError):
        log.write([{"step": 1}])
    assert log.path.read_bytes().endswith(b'{"st')  # torn, for now
    log.write([{"step": 2}])  # cut first, then written whole
    log.close()
    assert [r["step"] for r in lines(log.path)] == [0, 1, 2]
    assert calls == [11, 11]


def test_a_write_from_inside_a_write_is_queued_not_interleaved(tmp_path, monkeypatch) -> None:
    """A signal handler that flushes while the main thread is inside write()."""
    log = StepLog(tmp_path / "steps.0.jsonl")
    real = os.write

    def write_with_a_handler_inside(fd: int, data: bytes) -> int:
        monkeypatch.setattr(step_log.os, "write", real)
        log.write([{"step": 9}])  # what a handler's flush would do
        return real(fd, data)

    monkeypatch.setattr(step_log.os, "write", write_with_a_handler_inside)
    log.write([{"step": 0}, {"step": 1}])
    assert log.pending == 1
    log.close()
    assert [r["step"] for r in lines(log.path)] == [0, 1, 9]
