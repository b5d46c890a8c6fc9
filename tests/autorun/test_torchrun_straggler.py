"""A synchronous 2-rank DDP job (gloo, under torchrun) where rank 1 sleeps in every forward:
every rank's step is equally long, yet ``trainprof summary`` names rank 1 as the straggler."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from profiler.analysis.run import Run
from profiler.cli import app
from tests.autorun.helpers import finish, start

# ddp.py makes STEPS batches per rank. One window over steps 2-6 (wait 1, warmup 1, active 5).
STEPS = 8
SCHEDULE = "1,1,5"
ACTIVE_STEPS = {2, 3, 4, 5, 6}
# Far above what a loaded 2-core machine adds by descheduling either rank (up to ~20 ms seen,
# with three such jobs at once): a rank descheduled that long in a step is late in it, and
# rightly named for that step too.
SLEEP_MS = 60.0


@pytest.mark.slow
def test_the_rank_the_others_wait_for_is_named(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    command = [torchrun, "--standalone", "--nproc_per_node", "2"]
    command += ["ddp.py", str(STEPS), str(SLEEP_MS)]
    options = ["--run-name", "slow1", "--schedule", SCHEDULE]
    ran = finish(start(options, command, tmp_path), tmp_path / "slow1")
    assert ran.returncode == 0, ran.stderr

    result = CliRunner().invoke(app, ["summary", "--json", "--no-cache", str(ran.run_dir)])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    report = summary["distributed"]
    assert report["ranks"] == [0, 1]
    # Both ranks' clocks, aligned on the ends of their all_reduces (one a step).
    assert report["method"] == "collectives", report["warnings"]
    assert set(report["clock_offset_us"]) == {"0", "1"}
    assert report["clock_offset_us"]["0"] == 0.0
    assert report["matched_collectives"]["1"] > len(ACTIVE_STEPS) / 2
    # One host, one clock: the offset found is the end-time jitter, far below the sleep.
    assert abs(report["clock_offset_us"]["1"]) < 0.25 * SLEEP_MS * 1000

    by_rank = {found["rank"]: found for found in report["stragglers"]}
    straggler = by_rank[1]
    assert set(straggler["steps"]) <= ACTIVE_STEPS
    assert straggler["steps_compared"] == len(ACTIVE_STEPS)
    assert len(straggler["steps"]) > len(ACTIVE_STEPS) / 2
    # Rank 0 cannot be late for rank 1 in most steps too (it may be in a step it was
    # descheduled for longer than the sleep).
    assert len(by_rank.get(0, {"steps": []})["steps"]) < len(straggler["steps"])
    # Rank 0 waits for about the sleep each step (the machine may stretch it, not shrink it
    # by half).
    assert straggler["excess_us"] > 0.5 * SLEEP_MS * 1000
    # time.sleep runs no operator: the breakdown files the extra time under "other".
    assert straggler["category"] == "other"
    # ... while mean step time alone cannot tell the ranks apart: they wait for each other.
    means = {t["rank"]: t["steps"]["mean_us"] for t in summary["traces"]}
    assert max(means.values()) / min(means.values()) < 1.5

    # The run's metadata lists both ranks, each with its own trace file.
    run = Run(ran.run_dir)
    assert sorted(run.ranks) == [0, 1]
    assert all(record["trace_files"] for record in run.ranks.values())
    assert len(run.meta.meta["trace_files"]) == 2
