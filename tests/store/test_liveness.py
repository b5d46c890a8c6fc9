"""Readers decide whether a run recorded as running is still alive (heartbeat, pid)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from profiler.store.liveness import HEARTBEAT_STALE_S, pid_alive, run_state

NOW = 1_800_000_000.0


def _meta(**fields: object) -> dict[str, object]:
    return {"status": "running", "started_unix_s": NOW - 100, **fields}


def test_a_fresh_heartbeat_keeps_a_run_running() -> None:
    state = run_state(_meta(heartbeat_unix_s=NOW - HEARTBEAT_STALE_S + 1), now=NOW)
    assert (state.status, state.reason) == ("running", None)
    assert state.label == "running"


def test_a_stale_heartbeat_reads_as_interrupted_with_its_time() -> None:
    beat = NOW - HEARTBEAT_STALE_S - 1
    state = run_state(_meta(heartbeat_unix_s=beat), now=NOW)
    assert state.status == "interrupted"
    assert state.label == "interrupted (no heartbeat since 2027-01-15 07:59:29 UTC)"


def test_without_a_heartbeat_the_start_time_counts() -> None:
    assert run_state(_meta(), now=NOW).status == "interrupted"
    assert run_state(_meta(), now=NOW - 90).status == "running"


def test_a_dead_pid_on_this_host_is_interrupted_before_the_heartbeat_goes_stale() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    meta = _meta(heartbeat_unix_s=NOW, host=socket.gethostname(), pid=child.pid)
    assert not pid_alive(child.pid)
    assert run_state(meta, now=NOW).status == "interrupted"
    # The same pid recorded on another host says nothing about this one's processes.
    assert run_state({**meta, "host": "elsewhere"}, now=NOW).status == "running"


def test_a_live_pid_on_this_host_stays_running() -> None:
    import os

    meta = _meta(heartbeat_unix_s=NOW, host=socket.gethostname(), pid=os.getpid())
    assert run_state(meta, now=NOW).status == "running"


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"status": "complete"}, "complete"),
        (
            {"status": "failed", "error": {"type": "RuntimeError", "message": "boom"}},
            "failed (boom)",
        ),
        ({"status": "degraded", "degraded": {"reason": "disk full"}}, "degraded (disk full)"),
        (None, "unknown"),
        ({}, "unknown"),
        ({"status": "running", "heartbeat_unix_s": "soon", "started_unix_s": None}, "running"),
        ({"status": "running", "heartbeat_unix_s": True, "pid": 2**80}, "running"),
        ({"status": "running", "heartbeat_unix_s": -1e300, "started_unix_s": 10**400}, "running"),
        ({"status": "running", "heartbeat_unix_s": float("-inf")}, "running"),
        ({"status": "running", "heartbeat_unix_s": float("nan")}, "running"),
    ],
)
def test_recorded_states_and_odd_fields(meta: dict | None, expected: str) -> None:
    assert run_state(meta, now=NOW).label == expected
