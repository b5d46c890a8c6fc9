"""Store failures never take down the training loop: warn once, go on light, mark degraded."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import profiler
from profiler.capture import guard, kineto, on_demand
from profiler.events import TRACE_SUFFIX, TrainprofWarning
from profiler.store import liveness, step_log, trace_store
from tests.capture.helpers import ManualTicks, meta_of, run_child, summary, tiny_loop
from tests.conftest import read_steps, read_trace


def raising(exc: BaseException) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


def no_partials(run_dir: Path) -> bool:
    return not [p for p in run_dir.rglob("*") if p.name.endswith(".partial")]


def test_a_failing_window_write_no_longer_ends_the_run_in_a_child(tmp_path: Path) -> None:
    """The reproduction: at the default schedule an ENOSPC from the window write used to
    escape prof.step() (and the brief saw torch segfault after it); in a child process so a
    crash could not take pytest down."""
    result = run_child({"out": str(tmp_path), "steps": 10, "fault": "enospc-trace"})
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = summary(result.stdout)
    assert outcome["steps"] == 10 and outcome["error"] is None
    (warning,) = outcome["warnings"]
    assert "No space left on device" in warning and str(tmp_path / "r") in warning
    meta = meta_of(tmp_path / "r")
    assert meta["status"] == "degraded" and meta["steps"] == 10
    assert meta["degraded"]["reason"].endswith("[Errno 28] No space left on device")
    assert len(read_steps(tmp_path / "r" / "meta" / "steps.0.jsonl")) == 10


# name -> (what to patch, attribute, the error it raises)
FAULTS: dict[str, tuple[Callable[[], Any], str, BaseException]] = {
    "ENOSPC in the trace write": (
        lambda: trace_store.RunStore,
        "write_trace",
        OSError(errno.ENOSPC, "No space left on device"),
    ),
    "EIO in gzip": (lambda: trace_store, "gzip_bytes", OSError(errno.EIO, "Input/output error")),
    "permission lost": (
        lambda: trace_store,
        "atomic_write",
        PermissionError(errno.EACCES, "Permission denied"),
    ),
    "Kineto's export": (
        lambda: torch.profiler.profile,
        "export_chrome_trace",
        RuntimeError("kineto export failed"),
    ),
    "our splice": (lambda: kineto, "Splice", ValueError("bad marker")),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_store_failure_degrades_the_run_and_training_goes_on(
    fault: str, train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, name, exc = FAULTS[fault]
    monkeypatch.setattr(owner(), name, raising(exc))
    schedule = profiler.schedule(wait=1, warmup=1, active=2, repeat=2)
    with pytest.warns(TrainprofWarning) as caught:
        prof = train(steps=10, out_dir=tmp_path, run_name="f", schedule=schedule)
    ours = [str(w.message) for w in caught if w.category is TrainprofWarning]
    assert len(ours) == 1, ours
    assert str(exc) in ours[0] and str(tmp_path / "f") in ours[0]
    meta = meta_of(tmp_path / "f")
    assert meta["status"] == "degraded" and meta["steps"] == 10
    # The first window ends as step 4 begins; no second window is opened after it.
    assert meta["degraded"] == {
        "reason": f"could not write a capture window: {type(exc).__name__}: {exc}",
        "at_step": 4,
    }
    assert prof.trace_files == [] and meta["trace_files"] == []
    steps = read_steps(prof.store.steps_path)
    assert [s["step"] for s in steps] == list(range(10))
    assert [s["step"] for s in steps if s["deep"]] == [2, 3]  # light after the failure
    assert no_partials(tmp_path / "f")
    for model in prof.models:  # every hook came off; the autouse guard checks Kineto is off
        assert not any("forward" in m.__dict__ for m in model.modules())


def test_a_failure_at_the_second_window_keeps_the_first(train, tmp_path, monkeypatch) -> None:
    real, calls = trace_store.RunStore.write_trace, []

    def second_fails(store: Any, path: Path, document: Any, **kwargs: Any) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(store, path, document, **kwargs)

    monkeypatch.setattr(trace_store.RunStore, "write_trace", second_fails)
    schedule = profiler.schedule(wait=1, warmup=1, active=2, repeat=3)
    with pytest.warns(TrainprofWarning, match="No space"):
        prof = train(steps=14, out_dir=tmp_path, run_name="two", schedule=schedule)
    meta = meta_of(tmp_path / "two")
    assert meta["status"] == "degraded" and meta["degraded"]["at_step"] == 8
    assert len(calls) == 2, "no third window after the failure"
    (kept,) = prof.trace_files
    assert read_trace(kept)["trainprof"]["window"] == {"first_step": 2, "last_step": 3}
    assert meta["trace_files"] == [kept.name]
    assert len(read_steps(prof.store.steps_path)) == 14


def test_a_failure_of_the_window_written_at_stop_does_not_raise(train, tmp_path, monkeypatch):
    monkeypatch.setattr(trace_store, "gzip_bytes", raising(OSError(errno.ENOSPC, "full")))
    with pytest.warns(TrainprofWarning, match="full"):  # the window is open when the loop ends
        prof = train(steps=3, out_dir=tmp_path, run_name="atstop")
    meta = meta_of(tmp_path / "atstop")
    assert meta["status"] == "degraded" and meta["steps"] == 3
    assert prof.trace_files == [] and len(read_steps(prof.store.steps_path)) == 3


def test_a_training_error_keeps_its_exception_when_the_store_fails_too(
    train, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(trace_store, "gzip_bytes", raising(OSError(errno.ENOSPC, "full")))
    with pytest.raises(RuntimeError, match="^boom$"), pytest.warns(TrainprofWarning):
        train(steps=6, fail_at=3, out_dir=tmp_path, run_name="both")
    meta = meta_of(tmp_path / "both")
    assert meta["status"] == "failed"
    assert meta["error"] == {"type": "RuntimeError", "message": "boom"}
    assert meta["degraded"]["reason"].endswith("OSError: [Errno 28] full")


@pytest.mark.parametrize("schedule", ["deep", "light"])
def test_a_full_step_log_degrades_and_keeps_whole_lines(
    schedule: str, train, tmp_path, monkeypatch, every_step_timed
) -> None:
    """os.write of the step log fails for good: training ends normally, the file holds no
    torn line, the lines are counted as dropped."""
    from profiler.capture import step_metrics

    monkeypatch.setattr(step_metrics, "FLUSH_INTERVAL_NS", 0)  # every step goes to the log
    real, calls = step_log.os.write, []

    def full_after_three(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) <= 3:
            return real(fd, data)
        if len(calls) == 4:  # a short write first, as a nearly full disk does
            return real(fd, bytes(data[:7]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(step_log.os, "write", full_after_three)
    kwargs = {} if schedule == "deep" else {"schedule": None}
    with pytest.warns(TrainprofWarning, match="steps.0.jsonl") as caught:
        prof = train(steps=8, out_dir=tmp_path, run_name="log", **kwargs)
    assert len([w for w in caught if w.category is TrainprofWarning]) == 1
    meta = meta_of(tmp_path / "log")
    assert meta["status"] == "degraded" and meta["steps"] == 8
    assert meta["degraded"]["at_step"] == 4
    assert [s["step"] for s in read_steps(prof.store.steps_path)] == [0, 1, 2]
    assert prof.store.steps_path.read_bytes().endswith(b"\n")
    if schedule == "deep":  # the window open when the log failed is dropped, none follows
        assert prof.trace_files == []


def test_a_step_log_that_recovers_loses_no_step(train, tmp_path, monkeypatch) -> None:
    from profiler.capture import step_metrics

    monkeypatch.setattr(step_metrics, "FLUSH_INTERVAL_NS", 0)
    real, calls = step_log.os.write, []

    def one_failure(fd: int, data: bytes) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(step_log.os, "write", one_failure)
    with pytest.warns(TrainprofWarning):
        prof = train(steps=6, out_dir=tmp_path, run_name="back", schedule=None)
    assert [s["step"] for s in read_steps(prof.store.steps_path)] == list(range(6))
    assert meta_of(tmp_path / "back")["status"] == "degraded"


def test_a_failing_heartbeat_degrades_without_stopping_training(tmp_path, monkeypatch) -> None:
    ticks = ManualTicks()
    real = guard.Ticker
    monkeypatch.setattr(guard, "Ticker", lambda name: real(ticks, name=name))
    # One tick runs the heartbeat: its interval is that of the trigger-file poll it shares with.
    monkeypatch.setattr(liveness, "HEARTBEAT_INTERVAL_S", on_demand.REQUEST_POLL_S)
    monkeypatch.setattr(
        trace_store.RunStore, "heartbeat", raising(OSError(errno.EACCES, "Permission denied"))
    )
    with (
        pytest.warns(TrainprofWarning, match="heartbeat"),
        profiler.profile(None, out_dir=tmp_path, run_name="hb", schedule=None) as prof,
    ):
        ticks.tick_and_wait()
        tiny_loop(prof, 2)
    meta = meta_of(tmp_path / "hb")
    assert meta["status"] == "degraded" and "Permission denied" in meta["degraded"]["reason"]


def test_nothing_else_is_written_into_the_run_dir(train, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(trace_store, "gzip_bytes", raising(OSError(errno.ENOSPC, "full")))
    with pytest.warns(TrainprofWarning):
        train(steps=6, out_dir=tmp_path, run_name="clean")
    run_dir = tmp_path / "clean"
    assert sorted(p.name for p in run_dir.iterdir()) == ["meta"]
    assert not list(run_dir.glob(f"*{TRACE_SUFFIX}"))
    assert sorted(p.name for p in (run_dir / "meta").iterdir()) == [
        "rank.0.json",
        "run.json",
        "steps.0.jsonl",
    ]
