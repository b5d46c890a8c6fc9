"""The window writer's side jobs: one thread, in order, fresh after a fork, drained at the end."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import profiler
from profiler.store import trace_store
from profiler.store.trace_store import SideJobs, remove_soon


def test_jobs_run_in_order_on_one_thread_past_a_failing_one() -> None:
    jobs = SideJobs()
    ran: list[tuple[int, int]] = []

    def job(n: int) -> None:
        ran.append((n, threading.get_ident()))
        if n == 1:
            raise OSError("a job that fails")

    for n in range(4):
        jobs.submit(lambda n=n: job(n))
    assert jobs.drain(timeout=30)
    assert [n for n, _ in ran] == [0, 1, 2, 3]
    threads = {ident for _, ident in ran}
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_nothing_submitted_drains_at_once_without_a_thread() -> None:
    jobs = SideJobs()
    before = threading.active_count()
    assert jobs.drain(timeout=0)
    assert threading.active_count() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_runs_its_jobs_on_a_thread_of_its_own(tmp_path: Path) -> None:
    """The parent's thread does not exist in the child: the child's instance starts one."""
    trace_store.SIDE_JOBS.submit(lambda: None)
    assert trace_store.drain_side_jobs(timeout=30)  # the parent's thread is running
    marker = tmp_path / "child-ran"
    pid = os.fork()
    if pid == 0:  # the child: exit at once whatever happens, never back into pytest
        code = 1
        try:
            trace_store.SIDE_JOBS.submit(marker.touch)
            code = 0 if trace_store.drain_side_jobs(timeout=30) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert marker.exists()


@pytest.mark.parametrize("spare", [True, False], ids=["spare CPU", "busy"])
def test_remove_soon_removes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spare: bool
) -> None:
    monkeypatch.setattr(trace_store, "_spare_cpu", lambda: spare)
    scratch = tmp_path / "window.kineto.partial"
    scratch.write_bytes(b"x" * 4096)
    remove_soon(scratch)
    if not spare:
        assert not scratch.exists()  # no thread to hand it to: gone before the call returns
    assert trace_store.drain_side_jobs(timeout=30)
    assert not scratch.exists()
    remove_soon(scratch)  # already gone: no error
    assert trace_store.drain_side_jobs(timeout=30)


@pytest.mark.parametrize("spare", [True, False], ids=["spare CPU", "busy"])
def test_remove_soon_follows_the_deflate_aheads_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spare: bool
) -> None:
    monkeypatch.setattr(trace_store, "_spare_cpu", lambda: spare)
    tail = trace_store.DeflateAhead([b"x" * 100])
    assert tail.ahead is spare
    tail.result()

    def asked() -> bool:
        raise AssertionError("the CPU check ran again")

    monkeypatch.setattr(trace_store, "_spare_cpu", asked)
    scratch = tmp_path / "window.kineto.partial"
    scratch.write_bytes(b"x" * 4096)
    with monkeypatch.context() as inline:
        if spare:  # handed to the thread, not removed here
            inline.setattr(trace_store.SIDE_JOBS, "submit", lambda job: None)
        remove_soon(scratch, spare=tail.ahead)
        assert scratch.exists() is spare
    assert trace_store.drain_side_jobs(timeout=30)


def test_no_scratch_file_outlives_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kineto's exports are removed off the write path, and all of them by the session's end."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(trace_store, "SCRATCH_DIR", shm)
    monkeypatch.setattr(trace_store, "SCRATCH_MIN_FREE", 0)
    monkeypatch.setattr(trace_store, "_spare_cpu", lambda: True)
    model = nn.Linear(4, 4)
    schedule = profiler.schedule(wait=0, warmup=1, active=1, repeat=3)
    with profiler.profile(
        model, out_dir=tmp_path / "runs", schedule=schedule, system_metrics=False
    ) as prof:
        for _ in range(6):
            model(torch.randn(2, 4)).sum().backward()
            prof.step()
    assert len(prof.trace_files) == 3
    assert list(shm.iterdir()) == []


@pytest.fixture
def slow_switch(request: pytest.FixtureRequest) -> Iterator[float]:
    """A switch interval for the test (the default 5 ms unless parametrized), whatever the
    process had, put back after it."""
    interval = getattr(request, "param", 0.005)
    saved = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    yield interval
    sys.setswitchinterval(saved)


def _record_deflates(
    monkeypatch: pytest.MonkeyPatch, *, spare: bool = True, gate: threading.Event | None = None
) -> list[float]:
    """Deflates ahead that record the switch interval they ran under (after ``gate``, if any)
    instead of deflating; ``spare``: whether a CPU is free for the side-job thread."""
    seen: list[float] = []

    def deflate(parts: Any, level: int, *, final: bool) -> bytes:
        if gate is not None:
            gate.wait(30)
        seen.append(sys.getswitchinterval())
        return b""

    monkeypatch.setattr(trace_store, "_spare_cpu", lambda: spare)
    monkeypatch.setattr(trace_store, "_deflate", deflate)
    return seen


def test_the_switch_interval_is_short_while_a_deflate_ahead_runs(
    monkeypatch: pytest.MonkeyPatch, slow_switch: float
) -> None:
    """The compressor takes the GIL back between blocks: a short interval keeps it from waiting
    out the writer's 5 ms; the interval is the process's again once the job is done."""
    seen = _record_deflates(monkeypatch)
    trace_store.DeflateAhead([b"x" * 100]).result()
    assert trace_store.drain_side_jobs(timeout=30)
    assert seen == [pytest.approx(trace_store.DEFLATE_SWITCH_S)]
    assert sys.getswitchinterval() == pytest.approx(slow_switch)


def test_the_interval_comes_back_when_the_last_of_two_jobs_ends(
    monkeypatch: pytest.MonkeyPatch, slow_switch: float
) -> None:
    gate = threading.Event()
    seen = _record_deflates(monkeypatch, gate=gate)
    first = trace_store.DeflateAhead([b"a"])
    second = trace_store.DeflateAhead([b"b"])
    assert sys.getswitchinterval() == pytest.approx(trace_store.DEFLATE_SWITCH_S)
    gate.set()
    first.result()
    second.result()
    assert trace_store.drain_side_jobs(timeout=30)
    assert seen == [pytest.approx(trace_store.DEFLATE_SWITCH_S)] * 2
    assert sys.getswitchinterval() == pytest.approx(slow_switch)


@pytest.mark.parametrize(
    ("slow_switch", "spare"),
    [(0.0001, True), (0.005, False)],
    ids=["already short", "busy machine"],
    indirect=["slow_switch"],
)
def test_the_interval_is_left_alone_when_short_or_when_no_thread_helps(
    monkeypatch: pytest.MonkeyPatch, slow_switch: float, spare: bool
) -> None:
    seen = _record_deflates(monkeypatch, spare=spare)
    trace_store.DeflateAhead([b"x"]).result()
    assert trace_store.drain_side_jobs(timeout=30)
    assert seen == [pytest.approx(slow_switch)]
    assert sys.getswitchinterval() == pytest.approx(slow_switch)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_child_forked_mid_deflate_gets_the_interval_back(
    monkeypatch: pytest.MonkeyPatch, slow_switch: float
) -> None:
    """The parent's job never ends in the child: the child does not keep the short interval."""
    gate = threading.Event()
    _record_deflates(monkeypatch, gate=gate)
    ahead = trace_store.DeflateAhead([b"x"])
    assert sys.getswitchinterval() == pytest.approx(trace_store.DEFLATE_SWITCH_S)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if sys.getswitchinterval() == pytest.approx(slow_switch) else 1)
    _, status = os.waitpid(pid, 0)
    gate.set()
    ahead.result()
    assert trace_store.drain_side_jobs(timeout=30)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sys.getswitchinterval() == pytest.approx(slow_switch)
