"""profiler.analysis.distributed: per-rank figures, stragglers, communication/compute overlap.

The peer is Holistic Trace Analysis 0.5.0 (``get_comm_comp_overlap``), run in-process on the
same files. On nanosecond-precision traces HTA rounds every event to whole microseconds
(test_temporal's docstring), so there the figures agree only to within that rounding.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from profiler.analysis.distributed import (
    COLLECTIVE_COLUMNS,
    RANK_COLUMNS,
    STEP_COLUMNS,
    STRAGGLER_PCT,
    CommOverlap,
    RankPart,
    analyze_traces,
    collective_ends,
    comm_comp_overlap,
    find_stragglers,
    per_rank,
    rank_steps,
    rank_table,
)
from profiler.analysis.kernels import merge_intervals
from profiler.analysis.steps import CATEGORIES, step_breakdown
from profiler.analysis.stragglers import MATCH_TOLERANCE_US
from profiler.analysis.summary import summarize_traces
from profiler.analysis.table import load, load_files, load_trace
from tests.analysis.test_temporal import synthetic_events, write_trace
from tests.conftest import read_trace
from tests.peers import hta_load

SAMPLE = Path(__file__).resolve().parents[2] / "traces" / "sample"
TWO_RANKS = ("two_ranks_rank-0.json.gz", "two_ranks_rank-1.json.gz")
# HTA rounds its percentage to 2 decimals.
HTA_PCT_ABS = 0.006


def copy_run(reference_traces: Path, run_dir: Path, files: tuple[str, ...]) -> Path:
    """A directory holding only ``files`` (HTA loads every .gz/.json it finds)."""
    run_dir.mkdir(parents=True)
    for name in files:
        shutil.copy(reference_traces / "hta" / name, run_dir / name)
    return run_dir


def hta_overlap(run_dir: Path) -> dict[int, float]:
    table = hta_load(run_dir).get_comm_comp_overlap(visualize=False)
    pairs = zip(table["rank"], table["comp_comm_overlap_pctg"], strict=True)
    return {int(rank): float(pct) for rank, pct in pairs}


# Per-rank figures -------------------------------------------------------------------------------


def test_rank_rows_are_each_ranks_step_breakdown(reference_traces: Path) -> None:
    traces = [load_trace(reference_traces / "hta" / name) for name in TWO_RANKS]

    table = per_rank(traces)

    assert list(table.columns) == list(RANK_COLUMNS)
    assert list(table["rank"]) == [0, 1]
    for trace in traces:
        breakdown = step_breakdown(trace)
        row = table.set_index("rank").loc[trace.rank]
        assert row["files"] == 1 and row["steps"] == len(breakdown) == 2
        assert row["step_mean_us"] == pytest.approx(breakdown["dur_us"].mean())
        assert row["step_median_us"] == pytest.approx(breakdown["dur_us"].median())
        assert row["step_max_us"] == pytest.approx(breakdown["dur_us"].max())
        total = breakdown["dur_us"].sum()
        for category in CATEGORIES:
            assert row[f"{category}_us"] == pytest.approx(breakdown[f"{category}_us"].mean())
            share = 100 * breakdown[f"{category}_us"].sum() / total
            assert row[f"{category}_pct"] == pytest.approx(share)
        per_step = sum(row[f"{category}_us"] for category in CATEGORIES)
        assert per_step == pytest.approx(row["step_mean_us"], rel=1e-9)


def test_a_ranks_windows_are_pooled() -> None:
    traces = load(SAMPLE).traces
    steps = pd.concat([step_breakdown(trace) for trace in traces])

    (row,) = per_rank(traces).to_dict("records")

    assert len(traces) == 2 and {t.rank for t in traces} == {0}
    assert (row["rank"], row["files"], row["steps"]) == (0, 2, len(steps))
    assert row["step_mean_us"] == pytest.approx(steps["dur_us"].mean())
    assert row["step_median_us"] == pytest.approx(steps["dur_us"].median())
    assert row["step_max_us"] == pytest.approx(steps["dur_us"].max())
    share = 100 * steps["dataloader_us"].sum() / steps["dur_us"].sum()
    assert row["dataloader_pct"] == pytest.approx(share)
    # CPU only: no communication kernels, so no overlap figure.
    assert row["comm_kernel_us"] == 0 and np.isnan(row["comm_overlap_pct"])


def test_no_traces_no_rows() -> None:
    table = rank_table([])
    assert table.empty and list(table.columns) == list(RANK_COLUMNS)
    assert find_stragglers(table).empty


# Overlap ----------------------------------------------------------------------------------------


def test_synthetic_overlap_by_hand_and_by_hta(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "synthetic", synthetic_events())

    overlap = comm_comp_overlap(load_trace(path))

    # The last step is cut (gemm@610 goes). NCCL [140, 260); compute gemm [100, 150),
    # relu [250, 270), softmax [320, 323); the memcpy [160, 170) is not compute.
    assert overlap == CommOverlap(comm_kernel_us=120.0, overlap_us=20.0)
    assert overlap.overlap_pct == pytest.approx(100 * 20 / 120)
    assert hta_overlap(path.parent) == {0: pytest.approx(overlap.overlap_pct, abs=HTA_PCT_ABS)}
    with_last = comm_comp_overlap(load_trace(path), include_last_step=True)
    assert with_last == overlap  # the cut gemm does not overlap the NCCL kernel


def test_overlap_matches_hta_on_two_ranks(reference_traces: Path, tmp_path: Path) -> None:
    run_dir = copy_run(reference_traces, tmp_path / "two_ranks", TWO_RANKS)
    expected = hta_overlap(run_dir)

    table = per_rank(load(run_dir).traces)

    assert set(expected) == {0, 1}
    ours = dict(zip(table["rank"], table["comm_overlap_pct"], strict=True))
    assert ours == {rank: pytest.approx(pct, abs=HTA_PCT_ABS) for rank, pct in expected.items()}
    assert ours[0] != pytest.approx(ours[1], abs=1)  # two ranks, two different figures


def test_overlap_on_a_ns_trace_is_within_hta_rounding(
    reference_traces: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(reference_traces, tmp_path / "nccl", ("nccl.json.gz",))
    expected = hta_overlap(run_dir)[0]

    overlap = comm_comp_overlap(load_trace(run_dir / "nccl.json.gz"))

    # 14 NCCL kernels and ~1800 compute kernels, each shortened by up to 2 us in HTA.
    assert overlap.overlap_pct == pytest.approx(expected, abs=1.0)
    assert overlap.comm_kernel_us > 0


def test_no_communication_no_percentage() -> None:
    assert CommOverlap(comm_kernel_us=0.0, overlap_us=0.0).overlap_pct is None


# Stragglers -------------------------------------------------------------------------------------


def slowed_copy(source: Path, target: Path, factor: float) -> Path:
    """``source`` with every timestamp and duration multiplied by ``factor``: the same work,
    ``factor`` times slower."""
    trace: dict[str, Any] = read_trace(source)
    for event in trace["traceEvents"]:
        for key in ("ts", "dur"):
            if isinstance(event.get(key), (int, float)):
                event[key] = event[key] * factor
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(gzip.compress(json.dumps(trace).encode()))
    return target


def test_an_even_run_has_no_stragglers(reference_traces: Path) -> None:
    table = per_rank(load_trace(reference_traces / "hta" / name) for name in TWO_RANKS)
    means = table["step_mean_us"]
    assert abs(means[1] / means[0] - 1) < STRAGGLER_PCT / 100  # the precondition
    assert find_stragglers(table).empty


def test_an_artificially_slowed_rank_is_a_straggler(reference_traces: Path, tmp_path: Path) -> None:
    fast = load_trace(reference_traces / "hta" / TWO_RANKS[0])
    slow_path = slowed_copy(reference_traces / "hta" / TWO_RANKS[1], tmp_path / "slow.json.gz", 1.3)
    slow = load_trace(slow_path)
    assert slow.rank == 1

    table = per_rank([fast, slow])
    found = find_stragglers(table)

    assert list(found["rank"]) == [1]
    means = table.set_index("rank")["step_mean_us"]
    assert found["others_median_us"][0] == pytest.approx(means[0])
    assert found["excess_pct"][0] == pytest.approx(100 * (means[1] / means[0] - 1))
    assert found["excess_pct"][0] > 30  # rank 1 was already a little slower than rank 0


def part(rank: int, step_us: float) -> RankPart:
    categories = dict.fromkeys(CATEGORIES, 0.0) | {"other": step_us}
    return RankPart(rank, (step_us,), categories, CommOverlap(0.0, 0.0))


@pytest.mark.parametrize(
    ("steps_us", "stragglers"),
    [
        ([100, 101, 99, 100], []),
        ([100, 100, 100, 150], [3]),
        ([100, 100 + STRAGGLER_PCT - 1, 100], []),
        ([100, 100 + STRAGGLER_PCT + 1, 100], [1]),
        ([100, 200, 100, 300], [3, 1]),  # slowest first
        ([100], []),
    ],
)
def test_stragglers_are_measured_against_the_other_ranks(
    steps_us: list[float], stragglers: list[int]
) -> None:
    table = rank_table(part(rank, us) for rank, us in enumerate(steps_us))
    found = find_stragglers(table)
    assert list(found["rank"]) == stragglers
    for row in found.itertuples():
        others = np.median([us for rank, us in enumerate(steps_us) if rank != row.rank])
        assert row.others_median_us == others


# Stragglers and clocks on the two-rank GPU traces, against HTA ------------------------------


@pytest.fixture(scope="module")
def two_ranks_hta(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """HTA's analysis of the two-rank reference traces (parsed once: seconds each)."""
    from tests.conftest import REFERENCE_TRACES

    run_dir = copy_run(REFERENCE_TRACES, tmp_path_factory.mktemp("hta") / "run", TWO_RANKS)
    return hta_load(run_dir)


def _hta_comm_kernel_ends(analysis: Any, rank: int) -> np.ndarray:
    """The end of every NCCL kernel of ``rank`` as HTA parsed it (HTA's own reader)."""
    symbols = analysis.t.symbol_table.get_sym_table()
    frame = analysis.t.get_trace(rank)
    names = frame["name"].map(lambda index: symbols[index])
    kernels = frame[names.str.startswith("ncclKernel")]
    return np.sort((kernels["ts"] + kernels["dur"]).to_numpy(dtype=np.float64))


def test_the_late_rank_is_htas_straggler_candidate(
    reference_traces: Path, two_ranks_hta: Any
) -> None:
    """HTA ranks ranks by how late their dominant communication kernel starts and always names
    its top k; ours sums how late each rank arrives at every collective both ranks ran. Over
    the steps HTA analyses (it leaves the last one out), the same rank is the later one."""
    traces = [load_trace(reference_traces / "hta" / name) for name in TWO_RANKS]
    report = analyze_traces(traces)
    (candidate,) = two_ranks_hta.get_potential_stragglers(num_candidates=1)
    analysed = report.steps[report.steps["step"].isin(two_ranks_hta.get_profiler_steps())]
    late = analysed.groupby("rank")["late_us"].sum()
    assert late.idxmax() == candidate
    assert late[candidate] > 0
    # ... but by a few percent of a 600 ms step: not past our bar, so not a straggler of ours.
    assert report.steps["excess_pct"].max() < STRAGGLER_PCT
    assert report.stragglers == ()


def test_clock_offset_agrees_with_nearest_kernel_ends_in_hta(
    reference_traces: Path, two_ranks_hta: Any
) -> None:
    """An independent estimate from HTA's parse: each rank-1 NCCL kernel's end against the
    nearest rank-0 kernel end. Ours uses only collectives matched by key; both must agree
    within the spread of the matched ends themselves."""
    traces = [load_trace(reference_traces / "hta" / name) for name in TWO_RANKS]
    report = analyze_traces(traces)
    assert report.method == "collectives"
    ends0, ends1 = (_hta_comm_kernel_ends(two_ranks_hta, rank) for rank in (0, 1))
    nearest = np.array([ends0[np.argmin(np.abs(ends0 - end))] - end for end in ends1])
    close = nearest[np.abs(nearest) <= MATCH_TOLERANCE_US]
    assert len(close) >= 2
    ends = pd.concat([collective_ends(t) for t in traces]).pivot(
        index="key", columns="rank", values="end_us"
    )
    diffs = (ends[0] - ends[1]).dropna()
    spread = diffs[diffs.sub(report.clock_offset_us[1]).abs() <= MATCH_TOLERANCE_US]
    assert len(spread) == report.matched_collectives[1] >= 2
    assert abs(report.clock_offset_us[1] - float(np.median(close))) <= spread.abs().max()


def test_rank_frames_of_a_gpu_trace_wait_on_the_device(reference_traces: Path) -> None:
    """NCCL collectives wait on the device: a step's wait is the union of its NCCL kernels'
    spans, and every collective of the trace is keyed once."""
    trace = load_trace(reference_traces / "hta" / "nccl.json.gz")
    steps, ends = rank_steps(trace), collective_ends(trace)
    assert list(steps.columns) == list(STEP_COLUMNS)
    assert list(ends.columns) == list(COLLECTIVE_COLUMNS)
    assert ends["key"].is_unique
    assert ends["key"].str.startswith("0/").all()  # Process Group Name "0" from the trace
    base = trace.meta["baseTimeNanoseconds"] / 1000
    kernels = trace.events[trace.events["name"].astype(str).str.startswith("ncclKernel")]
    for row in steps.itertuples():
        start, end = row.start_us - base, row.end_us - base
        inside = kernels[(kernels["ts_us"] < end) & (kernels["end_us"] > start)]
        spans = merge_intervals(
            inside["ts_us"].clip(lower=start).to_numpy(),
            inside["end_us"].clip(upper=end).to_numpy(),
        )
        assert row.comm_wait_us == pytest.approx(float((spans[1] - spans[0]).sum()))
        assert 0 < row.pre_comm_us < row.dur_us


def test_summary_has_a_distributed_object_only_for_several_ranks(reference_traces: Path) -> None:
    two = load_files([reference_traces / "hta" / name for name in TWO_RANKS])
    summary, errors = summarize_traces(two)
    assert errors == ()
    report = summary["distributed"]
    assert report["ranks"] == [0, 1]
    assert set(report["clock_offset_us"]) == {"0", "1"}
    assert report["stragglers"] == []
    one = load_files([reference_traces / "hta" / "nccl.json.gz"])
    assert summarize_traces(one)[0]["distributed"] is None


def test_a_rank_on_another_hosts_clock_is_shifted_back(
    reference_traces: Path, tmp_path: Path
) -> None:
    """Rank 1 written as if its host's clock ran 3.2 s ahead (every event's ``ts`` moved): the
    offset found moves by exactly that, and the lateness figures do not move at all."""
    shift_us = 3_200_000.0
    source = reference_traces / "hta" / TWO_RANKS[1]
    trace = read_trace(source)
    for event in trace["traceEvents"]:
        if "ts" in event:
            event["ts"] += shift_us
    shifted = tmp_path / "shifted_rank-1.json.gz"
    shifted.write_bytes(gzip.compress(json.dumps(trace).encode()))
    rank0 = load_trace(reference_traces / "hta" / TWO_RANKS[0])
    before = analyze_traces([rank0, load_trace(source)])
    after = analyze_traces([rank0, load_trace(shifted)])
    assert after.method == "collectives"
    assert after.clock_offset_us[1] == pytest.approx(before.clock_offset_us[1] - shift_us)
    assert after.matched_collectives == before.matched_collectives
    assert after.steps["late_us"].to_numpy() == pytest.approx(before.steps["late_us"].to_numpy())
