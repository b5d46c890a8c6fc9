"""One session at a time, closed at exit; the heartbeat; the signal handlers' plumbing."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import profiler
from profiler.capture import guard
from profiler.capture.guard import (
    ProfilerStateError,
    SignalGuard,
    Ticker,
    kineto_busy,
    live_sessions,
    run_within,
)
from profiler.events import TrainprofWarning
from profiler.store.liveness import run_state
from profiler.store.trace_store import META_FLUSH_S
from tests.capture.helpers import ManualTicks, meta_of, run_child, summary, tiny_loop
from tests.conftest import read_trace

# Nesting --------------------------------------------------------------------------------------


@pytest.mark.parametrize("inner_schedule", [None, "deep"])
def test_a_second_session_is_refused_before_it_touches_disk(tmp_path, inner_schedule) -> None:
    model = nn.Linear(4, 2)
    schedule = profiler.schedule(wait=1, warmup=1, active=1) if inner_schedule else None
    with profiler.profile(model, out_dir=tmp_path, run_name="outer", system_metrics=False) as a:
        inner = profiler.profile(model, out_dir=tmp_path, run_name="inner", schedule=schedule)
        with pytest.raises(ProfilerStateError, match="another trainprof session is running"):
            inner.start()
        assert not (tmp_path / "inner").exists()
        tiny_loop(a, 3, model)
    assert live_sessions() == []
    assert meta_of(tmp_path / "outer")["status"] == "complete"


def test_a_deep_session_under_torchs_profiler_is_refused(tmp_path: Path) -> None:
    with torch.profiler.profile():
        session = profiler.profile(None, out_dir=tmp_path, run_name="deep")
        with pytest.raises(ProfilerStateError, match="torch profiler is already active"):
            session.start()
    assert not (tmp_path / "deep").exists() and live_sessions() == []


def test_a_light_session_may_run_under_torchs_profiler(tmp_path: Path) -> None:
    with (
        torch.profiler.profile(),
        profiler.profile(None, out_dir=tmp_path, run_name="light", schedule=None) as prof,
    ):
        tiny_loop(prof, 3)
    assert meta_of(tmp_path / "light")["status"] == "complete"


def test_sessions_may_follow_one_another(tmp_path: Path) -> None:
    for name in ("one", "two"):
        with profiler.profile(None, out_dir=tmp_path, run_name=name, system_metrics=False) as p:
            tiny_loop(p, 2)
    assert live_sessions() == []


@pytest.mark.parametrize(
    ("nest", "message"),
    [("ours", "another trainprof session"), ("torch", "torch profiler is already active")],
)
def test_nested_sessions_in_a_child_are_refused_without_a_crash(tmp_path, nest, message) -> None:
    """Before the refusal, nested sessions crashed the interpreter (SIGSEGV, exit -11/139)."""
    result = run_child({"out": str(tmp_path), "steps": 4, "nest": nest})
    assert result.returncode == 0, result.stderr[-3000:]
    assert message in summary(result.stdout)["error"]
    assert not (tmp_path / "r-inner").exists()


def test_a_session_left_running_is_stopped_at_exit(tmp_path: Path) -> None:
    """Without stop(), torch crashed at exit (SIGSEGV): the atexit hook stops the session."""
    result = run_child({"out": str(tmp_path), "steps": 4, "leak": True})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "was not stopped; stopping it at exit" in result.stderr
    meta = meta_of(tmp_path / "r")
    assert meta["status"] == "complete" and meta["steps"] == 4
    assert len(meta["trace_files"]) == 1  # the window over steps 2-3 was written at exit


def test_the_exit_hook_marks_an_uncaught_exception_failed(monkeypatch, tmp_path) -> None:
    session = profiler.profile(None, out_dir=tmp_path, run_name="exit", schedule=None).start()
    tiny_loop(session, 2)
    monkeypatch.setattr(sys, "last_value", ValueError("bad batch"), raising=False)
    with pytest.warns(TrainprofWarning, match="not stopped"):
        guard._stop_at_exit()
    meta = meta_of(tmp_path / "exit")
    assert meta["status"] == "failed" and meta["error"]["message"] == "bad batch"
    assert live_sessions() == []


# Heartbeat ------------------------------------------------------------------------------------


def test_a_ticker_runs_each_chore_at_its_own_interval_and_stops() -> None:
    ticks, calls = ManualTicks(), []
    ticker = Ticker(event=ticks, name="chores")
    ticker.every(10.0, lambda: calls.append("beat"))
    ticker.every(1.0, lambda: calls.append("poll"))
    ticker.every(5.0, lambda: 1 / 0)  # a failing chore stops none of the others
    ticker.start()
    for _ in range(10):  # each tick: the wait for the next chore due ran out
        ticks.tick_and_wait()
    assert calls == ["poll"] * 9 + ["beat", "poll"]
    assert len([t for t in threading.enumerate() if t.name == "trainprof-chores"]) == 1
    ticker.stop()
    assert not [t for t in threading.enumerate() if t.name == "trainprof-chores"]
    late = Ticker()
    late.every(1.0, lambda: None)
    late.start()
    try:
        with pytest.raises(ProfilerStateError, match="before it starts"):
            late.every(1.0, lambda: None)
    finally:
        late.stop()


def test_one_thread_beats_into_run_json_and_polls_for_requests(tmp_path, monkeypatch) -> None:
    from profiler.capture import on_demand
    from profiler.store import liveness
    from profiler.store.capture_request import write_request
    from profiler.store.trace_store import RunStore

    ticks = ManualTicks()
    real, beat = guard.Ticker, RunStore.heartbeat
    monkeypatch.setattr(guard, "Ticker", lambda name: real(ticks, name=name))
    # One tick runs both chores: the heartbeat's interval is the poll's.
    monkeypatch.setattr(liveness, "HEARTBEAT_INTERVAL_S", on_demand.REQUEST_POLL_S)
    monkeypatch.setattr(RunStore, "heartbeat", lambda store: beat(store, now=2_000_000_000.0))
    before = {t.name for t in threading.enumerate()}
    schedule = profiler.schedule(wait=0, warmup=1, active=1)
    with profiler.profile(
        None, out_dir=tmp_path, run_name="hb", schedule=schedule, system_metrics=False
    ) as prof:
        ours = {t.name for t in threading.enumerate()} - before
        assert ours == {"trainprof-session"}  # not one for the heartbeat, one for the poll
        meta = meta_of(tmp_path / "hb")
        assert meta["host"] == socket.gethostname() and meta["pid"] == os.getpid()
        assert meta["heartbeat_unix_s"] == meta["started_unix_s"]  # the first beat is the start
        write_request(prof.run_dir, steps=1)
        ticks.tick_and_wait()
        meta = meta_of(tmp_path / "hb")
        assert meta["heartbeat_unix_s"] == 2_000_000_000.0
        assert run_state(meta, now=2_000_000_001.0).status == "running"
        tiny_loop(prof, 6)  # the schedule's window, then the request's
        assert len(prof.trace_files) == 2
        listed = meta_of(tmp_path / "hb")["trace_files"]
        ticks.tick_and_wait()  # the records list the windows at the next tick, not at the write
        assert prof.trace_files[-1].name not in listed
        written = [path.name for path in prof.trace_files]
        assert meta_of(tmp_path / "hb")["trace_files"] == written
    assert meta_of(tmp_path / "hb")["status"] == "complete"
    asked = read_trace(prof.trace_files[-1])["trainprof"]["window"]["trigger"]
    assert len(prof.trace_files) == 2 and asked["source"] == "capture"  # the poll found it
    assert not [t for t in threading.enumerate() if t.name == "trainprof-session"]


def test_the_heartbeat_interval_is_livenesss(tmp_path: Path, monkeypatch) -> None:
    from profiler.capture.on_demand import REQUEST_POLL_S
    from profiler.store import liveness

    monkeypatch.setattr(liveness, "HEARTBEAT_INTERVAL_S", 123.0)
    with profiler.profile(None, out_dir=tmp_path, run_name="i", schedule=None) as prof:
        assert prof._watch is not None
        assert prof._watch.ticker.intervals == [123.0, META_FLUSH_S, REQUEST_POLL_S]


# Signal plumbing ------------------------------------------------------------------------------


def test_handlers_are_installed_only_while_a_session_runs(tmp_path: Path) -> None:
    before = {s: signal.getsignal(s) for s in guard.HANDLED_SIGNALS}
    with profiler.profile(None, out_dir=tmp_path, run_name="s", schedule=None):
        during = {s: signal.getsignal(s) for s in guard.HANDLED_SIGNALS}
        assert all(during[s] != before[s] for s in guard.HANDLED_SIGNALS)
    assert {s: signal.getsignal(s) for s in guard.HANDLED_SIGNALS} == before


def test_a_guard_chains_to_the_previous_python_handler() -> None:
    calls: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append("theirs"))
    try:
        sig = SignalGuard(lambda signum, frame: calls.append("ours"))
        sig.install()
        signal.raise_signal(signal.SIGTERM)
        assert calls == ["ours", "theirs"]
        sig.restore()
        assert signal.getsignal(signal.SIGTERM) not in (sig._handle, signal.SIG_DFL)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigint_goes_on_to_keyboardinterrupt() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    calls = []
    sig = SignalGuard(lambda signum, frame: calls.append(signum))
    sig.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        sig.restore()
    assert calls == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        sig = SignalGuard(lambda signum, frame: None)
        sig.install()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        sig.restore()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_no_handler_is_installed_from_another_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    sig = SignalGuard(lambda signum, frame: None)
    thread = threading.Thread(target=sig.install, name="trainprof-test")
    thread.start()
    thread.join()
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_forked_child_passes_the_signal_on_without_touching_the_run(tmp_path: Path) -> None:
    """A DataLoader worker inherits the handler: its SIGTERM must not mark the parent's run."""
    with profiler.profile(None, out_dir=tmp_path, run_name="fork", schedule=None) as prof:
        assert live_sessions() == [prof]
        pid = os.fork()
        if pid == 0:  # the child: dies of the signal, as it would have without trainprof
            try:
                if live_sessions() == []:  # the parent's session is not the child's
                    signal.raise_signal(signal.SIGTERM)
            finally:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
        assert meta_of(tmp_path / "fork")["status"] == "running"
        tiny_loop(prof, 1)
    assert meta_of(tmp_path / "fork")["status"] == "complete"


def test_kineto_busy_sees_torchs_profiler_on_the_stack() -> None:
    frames = []
    with torch.profiler.profile(on_trace_ready=lambda p: frames.append(sys._getframe())) as p:
        p.step()
    assert kineto_busy(frames[0])
    assert not kineto_busy(sys._getframe())


def test_run_within_gives_up_past_its_budget() -> None:
    release = threading.Event()
    assert run_within(10.0, lambda: None, name="quick")
    assert not run_within(0.01, release.wait, name="slow")
    release.set()
    with pytest.raises(ValueError, match="inner"):
        run_within(10.0, lambda: (_ for _ in ()).throw(ValueError("inner")), name="error")
    deadline = time.monotonic() + 30  # only so the autouse guard finds the thread gone
    while [t for t in threading.enumerate() if t.name == "trainprof-slow"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
