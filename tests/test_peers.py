"""Traces written by profiler.profile open in the peers' own tools: HTA and TensorBoard's plugin."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from profiler.events import TRACE_SUFFIX, is_dataloader_range
from tests import peers
from tests.conftest import read_trace


def slow_batches(steps: int, delay_s: float = 0.005):
    for _ in range(steps):
        time.sleep(delay_s)  # an input pipeline slower than this tiny model's step
        yield torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))


@pytest.fixture
def our_run(train, tmp_path: Path) -> Path:
    prof = train(steps=6, loader=slow_batches(6), out_dir=tmp_path / "logdir", run_name="ours")
    return prof.run_dir


def test_hta_loads_our_run_and_finds_the_rank(our_run: Path) -> None:
    analysis = peers.hta_load(our_run)
    assert sorted(analysis.t.traces.keys()) == [0]
    frame = analysis.t.get_trace(0)
    names = set(analysis.t.symbol_table.sym_table)
    assert "nn.Module: 0 (Conv2d)" in names
    assert "nn.Module: model (Sequential).backward" in names
    assert {"ProfilerStep#2", "ProfilerStep#3"} <= names
    assert len(frame) > 100


def test_hta_finds_each_rank_of_a_two_rank_run(train, tmp_path: Path, monkeypatch) -> None:
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        train(
            steps=4,
            out_dir=tmp_path,
            run_name="ddp",
            schedule=__import__("profiler").schedule(wait=0, warmup=1, active=1),
        )
    run_dir = tmp_path / "ddp"
    assert len(list(run_dir.glob(f"*{TRACE_SUFFIX}"))) == 2
    # Every rank's own record and step log sit in meta/, out of HTA's way (it reads the run
    # directory itself, not below it).
    names = ("rank.0.json", "rank.1.json", "run.json", "steps.0.jsonl", "steps.1.jsonl")
    assert sorted((run_dir / "meta").iterdir()) == [run_dir / "meta" / name for name in names]
    assert peers.hta_ranks(run_dir) == [0, 1]


def test_tensorboard_plugin_lists_our_run_and_counts_data_wait(our_run: Path) -> None:
    runs = peers.tb_plugin_runs(our_run.parent)
    assert list(runs) == ["ours"]
    (worker,) = runs["ours"]
    trace_file = next(our_run.glob(f"*{TRACE_SUFFIX}"))
    assert trace_file.name.startswith(worker + ".")
    overview = peers.tb_plugin_overview(our_run)
    assert overview["device_type"] == "CPU"
    assert overview["steps"] == ["2", "3"]
    # Our data-wait ranges are cpu_op, so the plugin counts them: its DataLoader share equals
    # the share of step time those ranges cover in the file itself.
    trace = read_trace(trace_file)
    steps = [e for e in trace["traceEvents"] if e.get("name", "").startswith("ProfilerStep#")]
    waits = [e for e in trace["traceEvents"] if is_dataloader_range(e.get("name", ""))]
    expected = 100 * sum(e["dur"] for e in waits) / sum(e["dur"] for e in steps)
    assert overview["breakdown_pct"]["DataLoader"] > 0
    assert overview["breakdown_pct"]["DataLoader"] == pytest.approx(expected, abs=0.5)
    assert sum(overview["breakdown_pct"].values()) == pytest.approx(100, abs=0.5)
