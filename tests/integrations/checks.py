"""What a run written by a framework callback must hold, read from its files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from profiler.events import PHASE_COMPLETE, TRACE_SUFFIX, parse_module_range_name
from tests.conftest import read_steps, read_trace

# torch's own DataLoader iterator names the wait for each batch so; both frameworks use it.
DATALOADER_RANGE = "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__"


def run_meta(run_dir: Path) -> dict[str, Any]:
    return orjson.loads((run_dir / "meta" / "run.json").read_bytes())


def only_trace(run_dir: Path) -> dict[str, Any]:
    """The run's one trace file (one deep window)."""
    (path,) = run_dir.glob(f"*{TRACE_SUFFIX}")
    return read_trace(path)


def ranges(trace: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [
        e
        for e in trace["traceEvents"]
        if e.get("ph") == PHASE_COMPLETE and e.get("name", "").startswith(prefix)
    ]


def profiler_steps(trace: dict[str, Any]) -> list[str]:
    return sorted(e["name"] for e in ranges(trace, "ProfilerStep#"))


def forward_modules(trace: dict[str, Any]) -> dict[str, str]:
    """Qualified name -> class name of every module with a forward range in the trace."""
    found = {}
    for event in ranges(trace, "nn.Module: "):
        parsed = parse_module_range_name(event["name"])
        assert parsed is not None, event["name"]
        path, cls, backward = parsed
        if not backward:
            found[path] = cls
    return found


def within(events: list[dict[str, Any]], step: dict[str, Any]) -> list[dict[str, Any]]:
    """The events that start inside ``step``'s range."""
    lo, hi = step["ts"], step["ts"] + step["dur"]
    return [e for e in events if lo <= e["ts"] <= hi]


def check_complete_run(run_dir: Path, *, steps: int, deep: list[int]) -> dict[str, Any]:
    """``steps`` step records, a complete run, one window over the ``deep`` steps, each with a
    data wait; returns the trace."""
    meta = run_meta(run_dir)
    assert meta["status"] == "complete", meta
    assert meta["error"] is None and meta["steps"] == steps
    records = read_steps(run_dir / "meta" / "steps.0.jsonl")
    assert [r["step"] for r in records] == list(range(steps))
    assert [r["step"] for r in records if r["deep"]] == deep
    assert all(r.get("completed", True) for r in records)
    # Every step waited for its batch (a real DataLoader fetch), and the wait is in the step.
    assert all(0 < r["data_wait_us"] <= r["dur_us"] for r in records), records
    trace = only_trace(run_dir)
    assert profiler_steps(trace) == sorted(f"ProfilerStep#{n}" for n in deep)
    assert trace["trainprof"]["window"] == {"first_step": deep[0], "last_step": deep[-1]}
    for step in ranges(trace, "ProfilerStep#"):
        assert within(ranges(trace, DATALOADER_RANGE), step), step["name"]
    return trace


def check_failed_run(run_dir: Path, *, failed_at: int, deep: list[int]) -> None:
    """A run marked failed at step ``failed_at``: the steps before it, the step cut short, and
    the window in progress written with the steps it had."""
    meta = run_meta(run_dir)
    assert meta["status"] == "failed", meta
    assert meta["error"] == {"type": "RuntimeError", "message": "boom"}
    records = read_steps(run_dir / "meta" / "steps.0.jsonl")
    assert [r["step"] for r in records] == list(range(failed_at + 1))
    assert records[-1]["completed"] is False
    trace = only_trace(run_dir)
    assert profiler_steps(trace) == sorted(f"ProfilerStep#{n}" for n in deep)
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".partial")]


class JumpingClock:
    """The callbacks' clock (``perf_counter_ns``) plus jumps the test makes: an hour jumped
    inside validation shows up in a data wait if, and only if, validation is counted as one."""

    JUMP_NS = 3_600 * 10**9

    def __init__(self) -> None:
        self.jumps = 0

    def jump(self) -> None:
        self.jumps += 1

    def __call__(self) -> int:
        return time.perf_counter_ns() + self.jumps * self.JUMP_NS


def use_jumping_clock(monkeypatch: pytest.MonkeyPatch) -> JumpingClock:
    from profiler.integrations import _session

    clock = JumpingClock()
    monkeypatch.setattr(_session, "_now", clock)
    return clock
