"""Run directory layout, atomic writes and the step log."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import orjson
import pytest

from profiler.events import RunStatus
from profiler.store import RunStore, StepLog, trace_store, worker_name
from profiler.store.trace_store import atomic_write


def test_worker_name_is_host_and_pid() -> None:
    assert worker_name().endswith(f"_{os.getpid()}")


def test_run_lifecycle(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "r1")
    store.create({"a": 1}, {"torch": "x"})
    meta = orjson.loads(store.run_meta_path.read_bytes())
    assert meta["status"] == "running" and meta["config"] == {"a": 1}
    path = store.trace_path(unix_ms=1234)
    store.write_trace(path, b'{"traceEvents": []}')
    assert gzip.decompress(path.read_bytes()) == b'{"traceEvents": []}'
    # Two windows in the same millisecond get distinct names.
    assert store.trace_path(unix_ms=1234).name.endswith(".1235.pt.trace.json.gz")
    store.finish(RunStatus.FAILED, steps=3, error=ValueError("bad batch"))
    meta = orjson.loads(store.run_meta_path.read_bytes())
    assert meta["status"] == "failed" and meta["steps"] == 3
    assert meta["error"] == {"type": "ValueError", "message": "bad batch"}
    assert meta["trace_files"] == [path.name]


def test_records_list_a_window_at_the_next_flush_or_at_once_once_the_run_is_ending(
    tmp_path: Path,
) -> None:
    store = RunStore(tmp_path, "r", rank=0)
    store.create({}, {})

    def listed() -> tuple[list[str], list[str]]:
        records = (store.run_meta_path, store.rank_meta_path)
        return tuple(orjson.loads(path.read_bytes())["trace_files"] for path in records)

    first = store.trace_path(unix_ms=1)
    store.write_trace(first, b"{}")
    assert store.trace_files == [first] and listed() == ([], [])  # off the write path
    store.flush_meta()
    assert listed() == ([first.name], [first.name])
    store.mark_interrupted("SIGTERM", at_step=3)
    second = store.trace_path(unix_ms=2)
    store.write_trace(second, b"{}")  # a signal's window: no ticker may come after it
    assert listed() == ([first.name, second.name],) * 2


def test_nonzero_rank_leaves_run_json_to_rank_zero(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "r", rank=1)
    store.create({}, {})
    assert not store.run_meta_path.exists()
    assert store.steps_path.name == "steps.1.jsonl"


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "f.json"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_step_log_appends_lines(tmp_path: Path) -> None:
    log = StepLog(tmp_path / "steps.0.jsonl")
    log.write([{"step": 0}, {"step": 1}])
    assert (tmp_path / "steps.0.jsonl").read_bytes() == b'{"step":0}\n{"step":1}\n'
    log.write([])
    log.write([{"step": 2}])
    log.close()
    assert (tmp_path / "steps.0.jsonl").read_bytes().count(b"\n") == 3


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x"])
def test_run_name_must_be_plain(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="run_name"):
        RunStore(tmp_path, name)


@pytest.mark.parametrize("cpus", [1, 2, 8])
@pytest.mark.parametrize("stdlib", [True, False])
def test_gzip_of_pieces_is_one_member_that_inflates_back(monkeypatch, cpus: int, stdlib) -> None:
    """Streamed pieces on one thread, or slices deflated on several, with zlib or (where
    installed) isal: the same bytes come back."""
    import zlib

    from profiler.store import trace_store

    monkeypatch.setattr(trace_store, "_usable_cpus", lambda: cpus)
    if stdlib:
        monkeypatch.setattr(trace_store, "_deflate_module", lambda: zlib)
    monkeypatch.setattr(trace_store, "GZIP_SLICE_MIN_BYTES", 1000)
    text = b"".join(b'{"ph": "X", "name": "op%d", "ts": %d},\n' % (i, i * 7) for i in range(3000))
    parts = [memoryview(text)[:5], b"", memoryview(text)[5:40_001], text[40_001:]]
    packed = trace_store.gzip_bytes(parts)
    assert gzip.decompress(packed) == text
    # One member: a reader that stops at the first member's end still gets everything.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert inflater.decompress(packed) == text and inflater.eof and not inflater.unused_data


def test_write_trace_takes_pieces(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "p")
    store.create({}, {})
    path = store.trace_path(unix_ms=1)
    store.write_trace(path, [b'{"traceEvents": ', memoryview(b"[1, 2]}")])
    assert gzip.decompress(path.read_bytes()) == b'{"traceEvents": [1, 2]}'


def test_kineto_scratch_file_goes_to_memory_only_where_there_is_room(tmp_path: Path, monkeypatch):
    scratch = tmp_path / "shm"
    scratch.mkdir()
    monkeypatch.setattr(trace_store, "SCRATCH_DIR", scratch)
    monkeypatch.setattr(trace_store, "SCRATCH_MIN_FREE", 0)
    store = RunStore(tmp_path, "s")
    store.create({}, {})
    path = store.trace_path(unix_ms=1)
    in_memory = store.scratch_path(path)
    assert in_memory.parent == scratch and path.name in in_memory.name
    assert in_memory.name.endswith(".partial") and in_memory != store.scratch_path(
        store.trace_path(unix_ms=2)
    )
    store.write_trace(path, b"x" * 1000)  # the largest window so far sets the room it needs
    monkeypatch.setattr(trace_store, "SCRATCH_HEADROOM", 10**18 // 1000)
    beside = store.scratch_path(path)
    assert beside.parent == path.parent and beside.name.endswith(".partial")
    monkeypatch.setattr(trace_store, "SCRATCH_HEADROOM", 1)
    assert store.scratch_path(path).parent == scratch
    monkeypatch.setattr(trace_store, "SCRATCH_MIN_FREE", 10**18)
    assert store.scratch_path(path).parent == path.parent
    monkeypatch.setattr(trace_store, "SCRATCH_MIN_FREE", 0)
    monkeypatch.setattr(trace_store, "SCRATCH_DIR", tmp_path / "missing")
    assert store.scratch_path(path).parent == path.parent
