"""The synthetic trace generator (bench/synth.py): size, layout, links, and that peers read it."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import profiler
from bench.synth import plan_trace, write_synthetic_run, write_synthetic_trace
from profiler.analysis.steps import step_breakdown, step_table
from profiler.analysis.table import load_trace
from tests.conftest import read_trace
from tests.peers import hta_ranks, hta_temporal_breakdown, tb_plugin_overview

EVENTS = 5_000
STEPS = 4
TRACE_GLOB = "*.pt.trace.json.gz"  # the run also gets meta/cache/ once a trace is loaded


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-rank run of 5k events per rank, four steps each."""
    path = tmp_path_factory.mktemp("synth") / "run"
    write_synthetic_run(path, EVENTS, seed=3, ranks=2, steps=STEPS)
    return path


@pytest.fixture(scope="module")
def document(run_dir: Path) -> dict[str, Any]:
    return read_trace(sorted(run_dir.glob(TRACE_GLOB))[0])


def test_event_count_is_as_requested(run_dir: Path, document: dict[str, Any]) -> None:
    assert abs(len(document["traceEvents"]) - EVENTS) <= 0.05 * EVENTS
    for path in sorted(run_dir.glob(TRACE_GLOB)):
        assert load_trace(path).event_count == pytest.approx(EVENTS, rel=0.05)


def test_write_returns_the_count_written(tmp_path: Path) -> None:
    count = write_synthetic_trace(tmp_path / "t.pt.trace.json.gz", 12_345)
    assert count == len(read_trace(tmp_path / "t.pt.trace.json.gz")["traceEvents"])
    assert count == pytest.approx(12_345, rel=0.05)


def test_layout_is_torch_profilers(run_dir: Path, document: dict[str, Any]) -> None:
    names = sorted(p.name for p in run_dir.glob(TRACE_GLOB))
    assert len(names) == 2 and all(n.endswith(".pt.trace.json.gz") for n in names)
    assert document["distributedInfo"] == {"backend": "nccl", "rank": 0, "world_size": 2}
    for key in ("schemaVersion", "deviceProperties", "displayTimeUnit", "baseTimeNanoseconds"):
        assert key in document
    phases = {(e["ph"], e.get("cat")) for e in document["traceEvents"]}
    for expected in [("X", "cpu_op"), ("X", "user_annotation"), ("X", "cuda_runtime"),
                     ("X", "kernel"), ("X", "gpu_memcpy"), ("X", "gpu_memset"), ("s", "ac2g"),
                     ("f", "ac2g"), ("i", "cpu_instant_event"), ("M", None)]:  # fmt: skip
        assert expected in phases


def test_rank_line_matches_htas_pattern(run_dir: Path) -> None:
    assert hta_ranks(run_dir) == [0, 1]


def test_steps_as_requested_and_each_has_gpu_work(run_dir: Path) -> None:
    for path in sorted(run_dir.glob(TRACE_GLOB)):
        trace = load_trace(path)
        assert len(step_table(trace)) == STEPS
        assert (step_breakdown(trace)["kernel_us"] > 0).all()
    summary = profiler.summarize(run_dir)
    assert [t["steps"]["count"] for t in summary["traces"]] == [STEPS, STEPS]
    assert all(t["device"] == "cuda" and t["gpu"] for t in summary["traces"])


def test_default_step_count_follows_the_size() -> None:
    assert plan_trace(5_000).steps == 3
    assert plan_trace(1_000_000).steps == 100


def test_kernels_are_linked_to_runtime_calls(document: dict[str, Any]) -> None:
    events = document["traceEvents"]
    runtime = {e["args"]["correlation"] for e in events if e.get("cat") == "cuda_runtime"}
    gpu = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    assert {e["args"]["correlation"] for e in gpu} <= runtime
    assert len({e["args"]["stream"] for e in gpu if e["cat"] == "kernel"}) >= 2
    flows = defaultdict(set)
    for e in events:
        if e.get("cat") == "ac2g":
            flows[e["ph"]].add(e["id"])
    assert flows["s"] == flows["f"] == {e["args"]["correlation"] for e in gpu}


def test_ranges_nest_on_every_thread(document: dict[str, Any]) -> None:
    by_thread: dict[tuple[Any, Any], list[tuple[float, float]]] = defaultdict(list)
    for e in document["traceEvents"]:
        if e["ph"] == "X" and e.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset"):
            by_thread[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for ranges in by_thread.values():
        open_ends: list[float] = []
        for start, end in sorted(ranges, key=lambda r: (r[0], -r[1])):
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1], "ranges overlap without nesting"
            open_ends.append(end)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    paths = [tmp_path / name / "t.pt.trace.json.gz" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (1, 1, 2), strict=True):
        path.parent.mkdir()
        write_synthetic_trace(path, 3_000, seed=seed)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_too_few_events_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too few"):
        write_synthetic_trace(tmp_path / "t.pt.trace.json.gz", 50)


def test_hta_computes_a_temporal_breakdown(run_dir: Path) -> None:
    logging.getLogger("hta").setLevel(logging.ERROR)
    breakdown = hta_temporal_breakdown(run_dir)
    assert list(breakdown["rank"]) == [0, 1]
    assert (breakdown["compute_time(us)"] > 0).all()
    assert (breakdown["idle_time(us)"] > 0).all()


def test_tensorboard_plugin_parses_it(run_dir: Path) -> None:
    worker = sorted(run_dir.glob(TRACE_GLOB))[0].name.split(".")[0]
    overview = tb_plugin_overview(run_dir, worker)
    assert overview["device_type"] == "GPU"
    assert len(overview["steps"]) == STEPS
    assert overview["breakdown_pct"]["Kernel"] > 0
