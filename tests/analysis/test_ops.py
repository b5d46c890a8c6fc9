"""profiler.analysis.ops: nesting, self time and top ops, pinned by hand and checked against
torch's own ``key_averages()`` and the TensorBoard plugin's operator view."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from profiler.analysis.ops import (
    HOST_KINDS,
    fold_repeats,
    nest_parents,
    op_table,
    self_time_us,
    top_ops,
)
from profiler.analysis.table import TraceTable, load_trace


def write_trace(path: Path, events: list[dict[str, Any]], **top: Any) -> TraceTable:
    path.write_text(json.dumps({"schemaVersion": 1, **top, "traceEvents": events}))
    return load_trace(path)


def span(name: str, ts: float, dur: float, cat: str = "cpu_op", tid: int = 1, **args: Any) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur,
            "args": args}  # fmt: skip


# Thread 1 of a hand-written trace, and what each op's self time must be.
NESTED = [
    span("ProfilerStep#1", 0, 100, cat="user_annotation"),
    span("aten::linear", 10, 50, **{"Input Dims": [[4, 3], [5, 3], [5]]}),
    span("aten::t", 12, 3),
    span("aten::transpose", 13, 1),
    span("aten::addmm", 20, 30),
    span("cudaLaunchKernel", 30, 5, cat="cuda_runtime"),
    # Overlaps its sibling by 1 ns (rounding): the union covers 10 us, not 10.001.
    span("cudaMemcpyAsync", 34.999, 5.001, cat="cuda_runtime"),
    # One overload calling another of the same name: one call (torch folds them).
    span("aten::div", 70, 10),
    span("aten::div", 71, 8),
    span("aten::mul", 72, 2),
    span("my_block", 85, 10, cat="user_annotation"),
    span("aten::relu", 86, 4),
    span("callback", 87, 1, cat="python_function"),
    # Another thread, at the same time as aten::linear: never its child.
    span("aten::mm", 10, 21, tid=2),
    # A kernel inside aten::addmm's time, on a GPU lane: not a child either.
    {"ph": "X", "cat": "kernel", "name": "sgemm", "pid": 0, "tid": 7, "ts": 21, "dur": 20},
]
NESTED_SELF_US = {
    "aten::linear": 50 - 3 - 30,
    "aten::t": 3 - 1,
    "aten::transpose": 1,
    "aten::addmm": 30 - 10,
    "aten::div": 10 - 2,
    "aten::mul": 2,
    "aten::relu": 4 - 1,
    "aten::mm": 21,
}


@pytest.fixture
def nested(tmp_path: Path) -> TraceTable:
    return write_trace(tmp_path / "nested.json", NESTED)


def test_self_time_subtracts_the_union_of_direct_children(nested: TraceTable) -> None:
    table = op_table(nested)
    assert sorted(table["name"].astype(str)) == sorted(NESTED_SELF_US)  # one aten::div
    for name, expected in NESTED_SELF_US.items():
        row = table[table["name"] == name].iloc[0]
        assert row["self_us"] == pytest.approx(expected, abs=1e-9), name
    names = nested.events["name"].astype(str)
    parent_of = {
        str(row["name"]): names[row["parent"]] if row["parent"] >= 0 else None
        for _, row in table.iterrows()
    }
    assert parent_of == {
        "aten::linear": "ProfilerStep#1",
        "aten::t": "aten::linear",
        "aten::transpose": "aten::t",
        "aten::addmm": "aten::linear",
        "aten::div": "ProfilerStep#1",
        "aten::mul": "aten::div",  # the outer aten::div: the inner one was folded into it
        "aten::relu": "my_block",
        "aten::mm": None,
    }


def test_top_ops_aggregates_and_sorts(nested: TraceTable) -> None:
    top = top_ops(nested, n=3)
    assert list(top.columns) == ["name", "calls", "self_us", "total_us", "mean_us"]
    assert list(top["name"]) == ["aten::mm", "aten::addmm", "aten::linear"]
    assert top["self_us"].tolist() == pytest.approx([21, 20, 17])
    by_total = top_ops(nested, n=None, by="total_us")
    assert by_total["name"].iloc[0] == "aten::linear"
    assert len(by_total) == len(NESTED_SELF_US)
    div = by_total.set_index("name").loc["aten::div"]
    assert (div["calls"], div["total_us"], div["mean_us"]) == (1, 10, 10)
    shapes = top_ops(nested, n=None, group_by_shape=True).set_index("name")
    assert shapes.loc["aten::linear", "input_dims"] == "[[4,3],[5,3],[5]]"
    assert shapes.loc["aten::mm", "input_dims"] == ""
    with pytest.raises(ValueError, match="by must be one of"):
        top_ops(nested, by="dur")  # type: ignore[arg-type]


def test_empty_and_cpu_only_traces(tmp_path: Path, reference_traces: Path) -> None:
    empty = write_trace(tmp_path / "empty.json", [])
    assert op_table(empty).empty
    assert list(top_ops(empty).columns) == ["name", "calls", "self_us", "total_us", "mean_us"]
    cpu_only = load_trace(reference_traces / "hta" / "cpu_only.json.gz")
    table = op_table(cpu_only)
    assert len(table) == 4
    assert (table["self_us"] <= table["dur_us"]).all()


def reference_parents(events: pd.DataFrame) -> np.ndarray:
    """torch's stack algorithm (EventList._populate_cpu_children), one Python loop per thread."""
    parents = np.full(len(events), -1)
    start, end = events["ts_us"].to_numpy(), events["end_us"].to_numpy()
    keys = list(zip(events["pid"], events["tid"], strict=True))
    for thread in set(keys):
        rows = [i for i, key in enumerate(keys) if key == thread]
        rows.sort(key=lambda i: (start[i], -end[i]))
        stack: list[int] = []
        for i in rows:
            while stack and (start[i] >= end[stack[-1]] or end[i] > end[stack[-1]]):
                stack.pop()
            if stack:
                parents[i] = stack[-1]
            stack.append(i)
    return parents


def test_nesting_matches_torchs_stack_rule_on_random_intervals() -> None:
    """Random nested trees with ties, zero durations and partial overlaps on three threads."""
    rng = np.random.default_rng(7)
    count = 6000
    ts = rng.integers(0, 2000, count).astype(float)
    dur = rng.choice([0.0, 1.0, 2.0, 5.0, 50.0, 400.0], count)
    events = pd.DataFrame(
        {"pid": 1, "tid": rng.integers(0, 3, count), "ts_us": ts, "end_us": ts + dur}
    )
    np.testing.assert_array_equal(nest_parents(events), reference_parents(events))


@pytest.mark.parametrize("name", ["alexnet", "nccl", "two_ranks_rank-0", "diff_control"])
def test_nesting_on_reference_traces(reference_traces: Path, name: str) -> None:
    trace = load_trace(reference_traces / "hta" / f"{name}.json.gz")
    host = trace.events[trace.events["kind"].isin(HOST_KINDS)]
    np.testing.assert_array_equal(nest_parents(host), reference_parents(host))
    table = op_table(trace)
    assert (table["self_us"] >= 0).all() and (table["self_us"] <= table["dur_us"] + 1e-6).all()
    top = top_ops(trace, n=None)
    assert top["calls"].sum() == len(table)
    assert top["self_us"].sum() == pytest.approx(table["self_us"].sum())


def test_top_ops_match_torch_key_averages(tmp_path: Path) -> None:
    """torch's own aggregation of the same events: our trace-based numbers must agree.

    key_averages() and export_chrome_trace() read the same Kineto events, and the file writes
    each duration as whole nanoseconds, so the only difference is the order of float sums:
    1e-6 us is far above that and far below one nanosecond.
    """
    import torch
    from torch import nn
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    path = tmp_path / "plain.pt.trace.json"
    prof.export_chrome_trace(str(path))
    trace = load_trace(path)

    ours = top_ops(trace, n=None).set_index("name")
    theirs = {event.key: event for event in prof.key_averages()}
    annotations = set(trace.events.loc[trace.events["kind"] == "user_annotation", "name"])
    assert set(theirs) - set(ours.index) <= annotations  # Optimizer.step#SGD.step...
    assert len(ours) > 40
    for name, row in ours.iterrows():
        event = theirs[str(name)]
        assert row["calls"] == event.count, name
        assert row["self_us"] == pytest.approx(event.self_cpu_time_total, abs=1e-6), name
        assert row["total_us"] == pytest.approx(event.cpu_time_total, abs=1e-6), name

    # By input shapes too; torch writes "[]" where the trace has no "Input Dims" at all.
    shaped = top_ops(trace, n=None, group_by_shape=True)
    theirs_by_shape = {
        (e.key, str(e.input_shapes).replace(" ", "")): e
        for e in prof.key_averages(group_by_input_shape=True)
    }
    for _, row in shaped.iterrows():
        event = theirs_by_shape[(row["name"], row["input_dims"] or "[]")]
        assert row["calls"] == event.count
        assert row["self_us"] == pytest.approx(event.self_cpu_time_total, abs=1e-6)


# Names the TensorBoard plugin keeps among user annotations (torch_tb_profiler/profiler/trace.py,
# create_trace_event): steps and collectives; every other user annotation it drops.
def _plugin_visible(trace: TraceTable) -> pd.DataFrame:
    from torch_tb_profiler.profiler.trace import GlooOpNameSet, NcclOpNameSet

    events = trace.events
    names = events["name"].astype(str)
    kept_annotation = names.isin([*NcclOpNameSet, *GlooOpNameSet]) | names.str.startswith(
        "ProfilerStep#"
    )
    return events[
        (events["kind"] == "cpu_op") | ((events["kind"] == "user_annotation") & kept_annotation)
    ]


@pytest.mark.parametrize("name", ["alexnet", "nccl"])
def test_top_ops_against_tensorboard_plugin(
    reference_traces: Path, tmp_path: Path, name: str
) -> None:
    """The plugin's operator view on the same file: same calls and totals; self time differs.

    The plugin reads runtime calls only under the 2021 category ``Runtime`` (its EventTypeMap has
    no ``cuda_runtime``), and drops user annotations other than steps and collectives, so its
    self time still includes cudaLaunchKernel & co. torch's key_averages subtracts them, as we
    do: ours is right. Restricted to the events the plugin sees, our nesting and self time give
    its numbers exactly (up to its rounding to whole microseconds).
    """
    from tests.peers import tb_plugin_load_run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(reference_traces / "hta" / f"{name}.json.gz", run_dir / "worker0.pt.trace.json.gz")
    profile = tb_plugin_load_run(run_dir).profiles[("worker0", "default")]
    plugin = pd.DataFrame(profile.operation_table_by_name["data"]).set_index("name")
    trace = load_trace(run_dir / "worker0.pt.trace.json.gz")
    ours = top_ops(trace, n=None).set_index("name")

    assert sorted(ours.index) == sorted(plugin.index)
    joined = ours.join(plugin.add_prefix("plugin_"))
    assert (joined["calls"] == joined["plugin_calls"]).all()
    # The plugin rounds each sum to whole microseconds.
    assert np.abs(joined["total_us"] - joined["plugin_host_total_duration"]).max() <= 0.5
    assert (joined["self_us"] <= joined["plugin_host_self_duration"] + 0.5).all()
    assert (joined["self_us"] < joined["plugin_host_self_duration"] - 1).any()  # runtime calls

    visible = _plugin_visible(trace)
    parents, kept = fold_repeats(visible, nest_parents(visible))
    is_op = (visible["kind"] == "cpu_op").to_numpy() & kept
    is_op &= ~visible["name"].astype(str).str.startswith("ProfilerStep#").to_numpy()
    plugin_style = (
        pd.Series(self_time_us(visible, parents)[is_op], index=visible["name"].astype(str)[is_op])
        .groupby(level=0)
        .sum()
    )
    assert np.abs(plugin_style - plugin.loc[plugin_style.index, "host_self_duration"]).max() <= 0.5


def test_ops_on_a_trainprof_trace(train: Any, tmp_path: Path) -> None:
    """Our own trace, with module ranges around the ops and data waits as cpu_op ranges."""
    prof = train(record_shapes=True, out_dir=tmp_path)
    trace = load_trace(prof.trace_files[0])
    top = top_ops(trace, n=None).set_index("name")
    # Two active steps, one convolution forward and one backward each.
    assert top.loc["aten::conv2d", "calls"] == 2
    assert top.loc["aten::convolution_backward", "calls"] == 2
    assert any(str(name).startswith("enumerate(DataLoader)#") for name in top.index)
    shaped = top_ops(trace, n=None, group_by_shape=True)
    conv = shaped[shaped["name"] == "aten::conv2d"]
    assert conv["input_dims"].tolist() == ["[[4,3,8,8],[4,3,3,3],[4],[],[],[],[]]"]
    table = op_table(trace)
    assert (table["self_us"] <= table["dur_us"] + 1e-6).all()
