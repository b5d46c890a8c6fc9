"""``trainprof run -- torchrun ...``: every rank profiles itself into one run; the agent and
the launcher write nothing."""

from __future__ import annotations

import re
import shutil
import socket
import sys
from pathlib import Path

import pytest

from profiler.analysis.run import Run
from tests.autorun.helpers import finish, start
from tests.conftest import read_trace


@pytest.mark.slow
def test_each_torchrun_rank_is_profiled_into_one_run(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "ddp.py", "6"]
    ran = finish(start(["--run-name", "ddp"], command, tmp_path), tmp_path / "ddp")
    assert ran.returncode == 0, ran.stderr
    # Both ranks write to one pipe, so their lines may interleave: look for each, in any order.
    assert sorted(re.findall(r"rank \d done", ran.stdout)) == ["rank 0 done", "rank 1 done"]
    # DDP over gloo; 24 samples, batches of 2, split between 2 ranks: 6 steps each.
    for rank in (0, 1):
        assert [s["step"] for s in ran.steps(rank)] == list(range(6))
    assert sorted(p.name for p in (ran.run_dir / "meta").glob("steps.*")) == [
        "steps.0.jsonl",
        "steps.1.jsonl",
    ]
    assert ran.meta["status"] == "complete"
    # One window per rank, each from its own process (workers are named host_pid).
    traces = ran.trace_files
    assert len(traces) == 2
    assert len({p.name.split(".")[0] for p in traces}) == 2
    assert sorted(read_trace(p)["distributedInfo"]["rank"] for p in traces) == [0, 1]
    assert all(p.name.startswith(socket.gethostname()) for p in traces)
    # Each rank recorded its own window and end; the read side merges them.
    run = Run(ran.run_dir)
    assert sorted(run.ranks) == [0, 1] and run.status() == "complete"
    assert sorted(name for r in run.ranks.values() for name in r["trace_files"]) == sorted(
        p.name for p in traces
    )
    assert all(len(r["trace_files"]) == 1 and r["steps"] == 6 for r in run.ranks.values())
    for path in traces:
        names = ran.event_names(path)
        assert {"ProfilerStep#2", "nn.Module: model (DistributedDataParallel)"} <= names
        assert "nn.Module: module.0 (Linear)" in names
    assert ran.own_lines() == [f"trainprof: run complete: {ran.run_dir}"]
