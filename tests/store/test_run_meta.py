"""run.json: created once (one winner of a race), with host, pid and heartbeat; marks and ends."""

from __future__ import annotations

import errno
import multiprocessing
import os
import socket
from pathlib import Path

import orjson
import pytest

from profiler.events import RunStatus
from profiler.store import RunStore, trace_store
from profiler.store.liveness import run_state

RACERS = 2
NAMES = 8  # races per test, one run name each: more chances for a check-then-write gap to show


def _race(root: str, name: str, barrier: object, results: object) -> None:
    store = RunStore(root, name)
    barrier.wait()  # type: ignore[attr-defined]
    try:
        store.create({"pid": os.getpid()}, {})
    except FileExistsError as exc:
        results.put((name, os.getpid(), "lost", str(exc)))  # type: ignore[attr-defined]
    else:
        results.put((name, os.getpid(), "won", ""))  # type: ignore[attr-defined]


def test_of_two_processes_creating_one_run_exactly_one_wins(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")  # the store needs no torch: a fork is quick
    results = ctx.Queue()
    for index in range(NAMES):
        name = f"same{index}"
        barrier = ctx.Barrier(RACERS)
        racers = [
            ctx.Process(target=_race, args=(str(tmp_path), name, barrier, results))
            for _ in range(RACERS)
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=60)
            assert racer.exitcode == 0
    outcomes = [results.get(timeout=10) for _ in range(NAMES * RACERS)]
    for index in range(NAMES):
        name = f"same{index}"
        mine = [o for o in outcomes if o[0] == name]
        winners = [pid for _, pid, result, _ in mine if result == "won"]
        assert len(winners) == 1, mine
        (loser,) = [message for _, _, result, message in mine if result == "lost"]
        assert repr(name) in loser and "already exists" in loser
        meta = orjson.loads((tmp_path / name / "meta" / "run.json").read_bytes())
        assert meta["pid"] == winners[0] == meta["config"]["pid"]
        # The loser wrote nothing: its rank record comes after run.json, which it did not get.
        assert sorted(p.name for p in (tmp_path / name / "meta").iterdir()) == [
            "rank.0.json",
            "run.json",
        ]
        rank = orjson.loads((tmp_path / name / "meta" / "rank.0.json").read_bytes())
        assert rank["pid"] == winners[0] and rank["rank"] == 0


def test_run_json_names_its_host_and_pid_and_beats(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "r")
    store.create({}, {})
    meta = orjson.loads(store.run_meta_path.read_bytes())
    assert meta["host"] == socket.gethostname() and meta["pid"] == os.getpid()
    assert meta["heartbeat_unix_s"] == meta["started_unix_s"]
    store.heartbeat(now=meta["started_unix_s"] + 10)
    meta = orjson.loads(store.run_meta_path.read_bytes())
    assert meta["heartbeat_unix_s"] == meta["started_unix_s"] + 10
    assert run_state(meta, now=meta["heartbeat_unix_s"] + 1).status == "running"
    store.finish(RunStatus.COMPLETE, steps=1)
    store.heartbeat(now=0)  # a beat that comes after the end changes nothing
    assert orjson.loads(store.run_meta_path.read_bytes())["heartbeat_unix_s"] > 0


def test_degraded_keeps_the_first_reason_and_running_status(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "d")
    store.create({}, {})
    store.mark_degraded("disk full", at_step=3)
    store.mark_degraded("later", at_step=5)
    meta = orjson.loads(store.run_meta_path.read_bytes())
    # Still running (readers can still tell a later kill); finish() records the end.
    assert meta["status"] == "running"
    assert meta["degraded"] == {"reason": "disk full", "at_step": 3}
    store.finish(RunStatus.DEGRADED, steps=6)
    meta = orjson.loads(store.run_meta_path.read_bytes())
    assert meta["status"] == "degraded"
    assert run_state(meta).label == "degraded (disk full)"


def test_a_degradation_after_a_complete_end_turns_it_degraded(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "late")
    store.create({}, {})
    store.finish(RunStatus.COMPLETE, steps=2)
    store.mark_degraded("TensorBoard export failed", at_step=2)
    assert orjson.loads(store.run_meta_path.read_bytes())["status"] == "degraded"


def test_interrupted_names_its_signal(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "i")
    store.create({}, {})
    store.mark_interrupted("SIGTERM", at_step=4)
    meta = orjson.loads(store.run_meta_path.read_bytes())
    assert meta["status"] == "interrupted"
    assert meta["interrupted"] == {"signal": "SIGTERM", "at_step": 4}
    assert run_state(meta).label == "interrupted (SIGTERM)"


def test_on_a_full_disk_run_json_is_rewritten_in_its_own_blocks(tmp_path, monkeypatch) -> None:
    store = RunStore(tmp_path, "full")
    store.create({}, {})

    def no_room(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trace_store, "atomic_write", no_room)
    store.finish(RunStatus.DEGRADED, steps=7)
    meta = orjson.loads(store.run_meta_path.read_bytes())
    assert (meta["status"], meta["steps"]) == ("degraded", 7)
    # Where the new content would need a block the file does not have, nothing is touched.
    before = store.run_meta_path.read_bytes()
    store._meta["config"] = {"padding": "x" * 100_000}
    with pytest.raises(OSError, match="No space"):
        store.finish(RunStatus.DEGRADED, steps=8)
    assert store.run_meta_path.read_bytes() == before


def test_other_errors_of_run_json_are_raised(tmp_path, monkeypatch) -> None:
    store = RunStore(tmp_path, "eio")
    store.create({}, {})

    def io_error(path: Path, data: bytes) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(trace_store, "atomic_write", io_error)
    with pytest.raises(OSError, match="Input/output"):
        store.finish(RunStatus.COMPLETE, steps=1)
