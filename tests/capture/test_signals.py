"""Signals and death, in child processes: what a SIGTERM, SIGINT or SIGKILL leaves on disk."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

import profiler
from profiler.events import TRACE_SUFFIX
from profiler.store import trace_store
from profiler.store.liveness import run_state
from tests.capture.helpers import (
    CHILD_TIMEOUT_S,
    meta_of,
    run_child,
    start_child,
    summary,
    tiny_loop,
)
from tests.conftest import read_steps, read_trace


def finish(child: subprocess.Popen[str], send: str | None = None) -> tuple[int, str, str]:
    out, err = child.communicate(input=send, timeout=CHILD_TIMEOUT_S)
    return child.returncode, out, err


def signalled(tmp_path: Path, signum: int, **config: Any) -> tuple[int, str, str]:
    """A child that trained 3 steps (its window over steps 2-4 recording), then got ``signum``."""
    child = start_child({"out": str(tmp_path), "steps": 10, "ready_after": 3, **config})
    child.send_signal(signum)
    return finish(child, send="\n")


def leftovers(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.rglob("*") if p.name.endswith(".partial")]


def test_sigterm_writes_the_open_window_and_ends_the_process_as_sigterm(tmp_path: Path) -> None:
    code, _, err = signalled(tmp_path, signal.SIGTERM)
    assert code == -signal.SIGTERM, err[-3000:]  # the default action still ends it: 128+15
    run_dir = tmp_path / "r"
    meta = meta_of(run_dir)
    assert meta["status"] == "interrupted"
    assert meta["interrupted"] == {"signal": "SIGTERM", "at_step": 3}
    assert run_state(meta).label == "interrupted (SIGTERM)"
    # Every finished step is in the log, whole; the step in progress is not.
    assert [s["step"] for s in read_steps(run_dir / "meta" / "steps.0.jsonl")] == [0, 1, 2]
    (trace,) = run_dir.glob(f"*{TRACE_SUFFIX}")
    assert meta["trace_files"] == [trace.name]
    written = read_trace(trace)
    assert written["trainprof"]["window"] == {"first_step": 2, "last_step": 3}
    assert any(e.get("name") == "ProfilerStep#2" for e in written["traceEvents"])
    assert leftovers(run_dir) == []


def test_sigterm_of_a_light_run_keeps_its_steps(tmp_path: Path) -> None:
    code, _, err = signalled(tmp_path, signal.SIGTERM, schedule=None)
    assert code == -signal.SIGTERM, err[-3000:]
    meta = meta_of(tmp_path / "r")
    assert meta["status"] == "interrupted" and meta["trace_files"] == []
    assert len(read_steps(tmp_path / "r" / "meta" / "steps.0.jsonl")) == 3


def test_sigint_raises_keyboardinterrupt_as_before(tmp_path: Path) -> None:
    code, _, err = signalled(tmp_path, signal.SIGINT)
    assert "KeyboardInterrupt" in err
    assert code == -signal.SIGINT  # Python ends an uncaught KeyboardInterrupt as SIGINT would
    meta = meta_of(tmp_path / "r")
    assert meta["status"] == "interrupted" and meta["interrupted"]["signal"] == "SIGINT"
    assert len(meta["trace_files"]) == 1
    assert len(read_steps(tmp_path / "r" / "meta" / "steps.0.jsonl")) == 3


def test_sigint_inside_kinetos_callback_waits_until_kineto_is_out(tmp_path: Path) -> None:
    """The handler leaves Kineto alone there; its KeyboardInterrupt is raised from prof.step()
    once torch's profiler has returned, never through it."""
    result = run_child({"out": str(tmp_path), "steps": 10, "fault": "sigint-in-window"})
    assert result.returncode == -signal.SIGINT, result.stderr[-3000:]
    assert "KeyboardInterrupt" in result.stderr
    assert "in step" in result.stderr  # raised from Profile.step, after Kineto's step
    meta = meta_of(tmp_path / "r")
    assert meta["status"] == "interrupted" and meta["interrupted"]["signal"] == "SIGINT"
    assert meta["trace_files"] == []  # that window was lost, and no other was opened
    assert [s["step"] for s in read_steps(tmp_path / "r" / "meta" / "steps.0.jsonl")] == [
        0, 1, 2, 3, 4
    ]  # fmt: skip


def test_a_handler_of_the_programs_own_is_called_after_ours(tmp_path: Path) -> None:
    """The program's SIGTERM handler ends its loop gracefully: the process exits 0."""
    code, out, err = signalled(tmp_path, signal.SIGTERM, handler="flag")
    assert code == 0, err[-3000:]
    assert summary(out)["steps"] == 3
    meta = meta_of(tmp_path / "r")
    assert meta["status"] == "interrupted" and meta["steps"] == 3
    assert len(meta["trace_files"]) == 1


def test_sigkill_leaves_running_which_readers_see_as_interrupted(tmp_path: Path) -> None:
    child = start_child({"out": str(tmp_path), "steps": 10, "ready_after": 3})
    child.kill()
    code, _, _ = finish(child)
    assert code == -signal.SIGKILL
    meta = meta_of(tmp_path / "r")
    assert meta["status"] == "running"
    assert meta["pid"] == child.pid and meta["host"] == socket.gethostname()
    state = run_state(meta)
    assert state.status == "interrupted" and state.reason.startswith("process ended")


def test_a_dead_processs_scratch_is_removed_by_the_next_session(tmp_path: Path) -> None:
    child = start_child({"out": str(tmp_path), "steps": 10, "ready_after": 3})
    # What a kill during a window's export would leave in /dev/shm (a real one is too quick
    # to catch), named for the child, which then dies without a word.
    leaked = trace_store.SCRATCH_DIR / (
        f"trainprof-{socket.gethostname()}_{child.pid}.0.w.1.pt.trace.json.gz.kineto.partial"
    )
    if not os.access(trace_store.SCRATCH_DIR, os.W_OK):
        child.kill()
        finish(child)
        pytest.skip(f"{trace_store.SCRATCH_DIR} is not writable here")
    leaked.write_bytes(b"{}")
    try:
        child.kill()
        finish(child)
        with profiler.profile(None, out_dir=tmp_path, run_name="next", schedule=None) as prof:
            tiny_loop(prof, 1)
        assert not leaked.exists()
    finally:
        leaked.unlink(missing_ok=True)
