"""Temporary names carry their writer; what dead processes left is removed, nothing else."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.store import remove_stale_scratch, trace_store
from profiler.store.scratch import partial_path, scratch_owner
from profiler.store.trace_store import atomic_write


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    scratch = tmp_path / "shm"
    scratch.mkdir()
    monkeypatch.setattr(trace_store, "SCRATCH_DIR", scratch)
    monkeypatch.setattr(trace_store, "SCRATCH_MIN_FREE", 0)
    return scratch


def test_partial_names_are_unique_and_name_their_writer(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    names = {partial_path(target).name for _ in range(100)}
    assert len(names) == 100
    host, pid = socket.gethostname(), os.getpid()
    for name in names:
        assert name.startswith(f".{host}_{pid}.") and name.endswith(".run.json.partial")
        assert scratch_owner(name) == pid
        assert scratch_owner(name, host="elsewhere") is None


def test_kineto_scratch_names_carry_the_pid(tmp_path: Path, shm: Path) -> None:
    store = trace_store.RunStore(tmp_path, "r")
    path = store.trace_path(unix_ms=1)
    in_memory = store.scratch_path(path)
    assert in_memory.parent == shm
    assert in_memory.name.startswith(f"trainprof-{socket.gethostname()}_{os.getpid()}.")
    assert in_memory.name.endswith(f"{path.name}.kineto.partial")
    assert scratch_owner(in_memory.name) == os.getpid()


@pytest.mark.parametrize(
    "name",
    ["run.json", "x.partial", ".run.json.partial", "trainprof-.partial", "trainprof-12.partial"],
)
def test_names_not_ours_have_no_owner(name: str) -> None:
    assert scratch_owner(name) is None


def test_stale_scratch_of_dead_processes_is_removed(tmp_path: Path, shm: Path) -> None:
    host, dead, alive = socket.gethostname(), dead_pid(), os.getppid()
    run_dir = tmp_path / "run"
    (run_dir / "meta").mkdir(parents=True)
    stale = [
        shm / f"trainprof-{host}_{dead}.0.w.pt.trace.json.gz.kineto.partial",
        run_dir / f".{host}_{dead}.3.w.pt.trace.json.gz.partial",
        run_dir / "meta" / f".{host}_{dead}.4.run.json.partial",
    ]
    kept = [
        shm / f"trainprof-{host}_{alive}.0.w.kineto.partial",  # a live process's
        shm / f"trainprof-{host}_{os.getpid()}.1.w.kineto.partial",  # our own
        shm / f"trainprof-elsewhere_{dead}.0.w.kineto.partial",  # another host's
        shm / "someone-else.partial",
        run_dir / "meta" / "steps.0.jsonl",
    ]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert sorted(remove_stale_scratch(run_dir)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert remove_stale_scratch() == []  # only SCRATCH_DIR without a run_dir; nothing left there


def test_a_missing_scratch_dir_is_no_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trace_store, "SCRATCH_DIR", tmp_path / "missing")
    assert remove_stale_scratch(tmp_path / "no-run") == []


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a.json", b"{}")
    atomic_write(tmp_path / "a.json", b"[]")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_bytes() == b"[]"
