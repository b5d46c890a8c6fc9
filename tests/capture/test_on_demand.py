"""On-demand capture: a trigger file (``trainprof capture``) or SIGUSR2 opens a window at the
next step, in this process and from a second one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import profiler
from profiler.cli import app
from profiler.events import TRACE_SUFFIX, TrainprofWarning
from profiler.store.capture_request import (
    DEFAULT_REQUEST_STEPS,
    MAX_REQUEST_STEPS,
    read_request,
    request_paths,
    write_request,
)
from tests.capture.helpers import CHILD_TIMEOUT_S, meta_of, start_child, summary
from tests.conftest import read_trace

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 here")
# How long a test waits for a window the session should open (polled, not a threshold).
WAIT_S = 120


def traces(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob(f"*{TRACE_SUFFIX}"))


def window(path: Path) -> dict[str, Any]:
    return read_trace(path)["trainprof"]["window"]


# The trigger file ----------------------------------------------------------------------------


def test_trigger_file_is_read_once_per_version(tmp_path: Path) -> None:
    (tmp_path / "meta").mkdir()
    shared, own = request_paths(tmp_path, 2)
    assert (shared.name, own.name) == ("capture", "capture.2")
    assert read_request(shared, None) == (None, None)

    assert write_request(tmp_path, steps=5) == shared
    version, steps = read_request(shared, None)
    assert steps == 5
    assert read_request(shared, version) == (version, None)  # seen: nothing new
    write_request(tmp_path, steps=5)  # the same request again is a new one
    assert read_request(shared, version)[1] == 5

    assert write_request(tmp_path, rank=2) == own
    assert read_request(own, None)[1] == DEFAULT_REQUEST_STEPS  # empty: the default
    own.write_text("a lot\n")
    assert read_request(own, None)[1] == DEFAULT_REQUEST_STEPS
    own.write_text("100000")
    assert read_request(own, None)[1] == MAX_REQUEST_STEPS


def test_write_request_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a trainprof run"):
        write_request(tmp_path / "nowhere")
    (tmp_path / "meta").mkdir()
    for steps in (0, MAX_REQUEST_STEPS + 1):
        with pytest.raises(ValueError, match="steps must be between"):
            write_request(tmp_path, steps=steps)
    with pytest.raises(ValueError, match="rank"):
        write_request(tmp_path, rank=-1)


# In this process -----------------------------------------------------------------------------


def train_until(prof: Any, model: nn.Module, done: Any, *, limit_s: float = WAIT_S) -> int:
    """Train until ``done()`` (polled each step, a few ms apart); the steps trained."""
    x, steps, deadline = torch.randn(4, 8), 0, time.monotonic() + limit_s
    while not done() and time.monotonic() < deadline:
        model(x).sum().backward()
        time.sleep(0.005)
        prof.step()
        steps += 1
    return steps


def session(tmp_path: Path, **kwargs: Any) -> tuple[Any, nn.Module]:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    kwargs.setdefault("schedule", profiler.schedule(wait=1, warmup=1, active=1))
    prof = profiler.profile(
        model, out_dir=tmp_path, run_name="r", system_metrics=False, **kwargs
    ).start()
    return prof, model


def test_sigusr2_adds_a_window_after_the_schedule(tmp_path: Path) -> None:
    prof, model = session(tmp_path)
    try:
        train_until(prof, model, lambda: prof.step_num >= 10)
        assert [window(p)["first_step"] for p in prof.trace_files] == [2]
        os.kill(os.getpid(), signal.SIGUSR2)  # handled here, before the next bytecode
        train_until(prof, model, lambda: prof.step_num >= 20)
    finally:
        prof.stop()
    scheduled, asked = (window(p) for p in prof.trace_files)
    assert "trigger" not in scheduled
    # Signalled during step 10: warmup 11, then the default three steps.
    assert (asked["first_step"], asked["last_step"]) == (12, 11 + DEFAULT_REQUEST_STEPS)
    assert asked["trigger"] == {
        "kind": "request",
        "source": "SIGUSR2",
        "steps": DEFAULT_REQUEST_STEPS,
        "step": 10,
    }
    assert meta_of(prof.run_dir)["triggers"] == [asked["trigger"]]
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # given back at stop


def test_trigger_file_adds_a_window(tmp_path: Path) -> None:
    prof, model = session(tmp_path)
    try:
        train_until(prof, model, lambda: prof.step_num >= 6)
        asked_at = prof.step_num
        write_request(prof.run_dir, steps=2)
        train_until(prof, model, lambda: len(prof.trace_files) == 2)
    finally:
        prof.stop()
    asked = window(prof.trace_files[-1])
    assert asked["trigger"]["source"] == "capture" and asked["trigger"]["steps"] == 2
    assert asked["first_step"] > asked_at + 1  # a warmup step between
    assert asked["last_step"] == asked["first_step"] + 1
    assert asked["trigger"]["step"] == asked["first_step"] - 2


def test_light_only_run_refuses_requests(tmp_path: Path) -> None:
    prof, model = session(tmp_path, schedule=None)
    try:
        train_until(prof, model, lambda: prof.step_num >= 3)
        result = CliRunner().invoke(app, ["capture", str(prof.run_dir)])
        assert result.exit_code == 2
        assert "schedule=None" in result.output
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            os.kill(os.getpid(), signal.SIGUSR2)
            train_until(prof, model, lambda: prof.step_num >= 6)
    finally:
        prof.stop()
    assert prof.trace_files == []
    refused = [str(w.message) for w in caught if w.category is TrainprofWarning]
    assert len(refused) == 1 and "refused" in refused[0] and "schedule=None" in refused[0]


def test_cli_refuses_a_run_that_is_not_live(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["capture", str(tmp_path / "missing")])
    assert result.exit_code == 2
    prof, model = session(tmp_path)
    train_until(prof, model, lambda: prof.step_num >= 2)
    prof.stop()
    result = runner.invoke(app, ["capture", str(prof.run_dir), "--steps", "2"])
    assert result.exit_code == 2
    assert "complete, not running" in result.output
    assert not (prof.run_dir / "meta" / "capture").exists()


def test_a_handler_of_the_programs_own_is_left_alone(tmp_path: Path) -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        prof, model = session(tmp_path)
        try:
            os.kill(os.getpid(), signal.SIGUSR2)
            train_until(prof, model, lambda: prof.step_num >= 12)
        finally:
            prof.stop()
        assert seen == [signal.SIGUSR2]
        assert len(prof.trace_files) == 1  # the schedule's only
    finally:
        signal.signal(signal.SIGUSR2, previous)


# From a second process -----------------------------------------------------------------------


def child_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "out": str(tmp_path),
        "run": "r",
        "schedule": [1, 1, 1, 1],  # one window, at step 2
        "steps": 1_000_000,
        "ready_after": 10,
        "until_stdin": True,
        "step_sleep": 0.01,
    }


def finish(child: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = child.communicate("stop\n", timeout=CHILD_TIMEOUT_S)
    assert child.returncode == 0, err[-3000:]
    return summary(out)


def wait_for(run_dir: Path, count: int, child: subprocess.Popen[str]) -> list[Path]:
    deadline = time.monotonic() + WAIT_S
    while len(traces(run_dir)) < count and time.monotonic() < deadline:
        assert child.poll() is None, "the child ended early"
        time.sleep(0.1)
    return traces(run_dir)


@pytest.mark.parametrize("how", ["cli", "signal"])
def test_capture_from_another_process(tmp_path: Path, how: str) -> None:
    run_dir = tmp_path / "r"
    child = start_child(child_config(tmp_path))
    try:
        # Ready after step 10: the schedule's window is written, nothing else.
        before = traces(run_dir)
        assert [window(p)["first_step"] for p in before] == [2]
        if how == "cli":
            result = CliRunner().invoke(app, ["capture", str(run_dir), "--steps", "2"])
            assert result.exit_code == 0, result.output
        else:
            os.kill(child.pid, signal.SIGUSR2)
        after = wait_for(run_dir, 2, child)
    finally:
        result_line = finish(child)
    assert result_line["error"] is None and result_line["warnings"] == []
    assert len(after) == 2
    asked = window(after[1])
    steps = 2 if how == "cli" else DEFAULT_REQUEST_STEPS
    assert asked["trigger"]["kind"] == "request"
    assert asked["trigger"]["source"] == ("capture" if how == "cli" else "SIGUSR2")
    # Asked after step 10: the window follows, after its warmup step, and nothing came between.
    assert asked["trigger"]["step"] >= 10
    assert asked["first_step"] == asked["trigger"]["step"] + 2
    assert asked["last_step"] == asked["first_step"] + steps - 1
    assert len(traces(run_dir)) == 2
    assert meta_of(run_dir)["triggers"] == [asked["trigger"]]
