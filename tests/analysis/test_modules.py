"""profiler.analysis.modules: the module tree from trainprof's forward and backward ranges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from profiler.analysis.modules import MODULE_COLUMNS, module_ranges, module_table
from profiler.analysis.table import TraceTable, load_trace
from profiler.events import BACKWARD_LANE_NAME, module_range_name

LANE = 2_000_000_000


def write_trace(path: Path, events: list[dict[str, Any]], **top: Any) -> TraceTable:
    path.write_text(json.dumps({"schemaVersion": 1, **top, "traceEvents": events}))
    return load_trace(path)


def module(path: str, cls: str, ts: float, dur: float, *, backward: bool = False) -> dict:
    name = module_range_name(path, cls, backward=backward)
    tid = LANE if backward else 1
    return {"ph": "X", "cat": "user_annotation", "name": name, "pid": 1, "tid": tid, "ts": ts,
            "dur": dur}  # fmt: skip


def step(n: int, ts: float) -> dict:
    return {"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{n}", "pid": 1, "tid": 1,
            "ts": ts, "dur": 100}  # fmt: skip


TWO_STEPS = [
    {"ph": "M", "name": "thread_name", "pid": 1, "tid": LANE, "args": {"name": BACKWARD_LANE_NAME}},
    step(1, 0),
    module("model", "Net", 10, 30),
    module("features", "Sequential", 11, 20),
    module("features.0", "Conv2d", 12, 8),
    {"ph": "X", "cat": "cpu_op", "name": "aten::conv2d", "pid": 1, "tid": 1, "ts": 13, "dur": 6},
    module("features.1", "ReLU", 21, 3),
    module("fc", "Linear", 32, 6),
    # Kineto projects forward ranges onto the GPU stream: not a second call.
    {
        "ph": "X",
        "cat": "gpu_user_annotation",
        "name": "nn.Module: model (Net)",
        "pid": 0,
        "tid": 7,
        "ts": 12,
        "dur": 30,
    },  # fmt: skip
    module("model", "Net", 50, 40, backward=True),
    module("fc", "Linear", 50, 8, backward=True),
    module("features", "Sequential", 60, 28, backward=True),
    module("features.1", "ReLU", 60, 5, backward=True),
    module("features.0", "Conv2d", 66, 20, backward=True),
    step(2, 100),  # a second step with a forward only (evaluation)
    module("model", "Net", 110, 20),
    module("features", "Sequential", 111, 10),
    module("features.0", "Conv2d", 112, 6),
    module("features.1", "ReLU", 118.5, 1.5),
    module("fc", "Linear", 122, 6),
]
TRAINPROF_META = {"format": "trainprof.trace/1", "config": {"models": ["Net"]}}


def test_module_table_pinned(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.json", TWO_STEPS, trainprof=TRAINPROF_META)
    table = module_table(trace)
    assert list(table.columns) == MODULE_COLUMNS
    expected = pd.DataFrame(
        [
            # path, class, parent, depth, calls, fwd, fwd self, bwd, bwd self
            ("model", "Net", "", 0, 2, 50.0, (30 - 20 - 6) + (20 - 10 - 6), 40.0, 40 - 8 - 28),
            ("features", "Sequential", "model", 1, 2, 30.0, (20 - 8 - 3) + (10 - 6 - 1.5), 28.0, 3),
            ("features.0", "Conv2d", "features", 2, 2, 14.0, 14.0, 20.0, 20.0),
            ("features.1", "ReLU", "features", 2, 2, 4.5, 4.5, 5.0, 5.0),
            ("fc", "Linear", "model", 1, 2, 12.0, 12.0, 8.0, 8.0),
        ],
        columns=MODULE_COLUMNS[:9],
    )
    pd.testing.assert_frame_equal(table[MODULE_COLUMNS[:9]], expected, check_dtype=False)
    assert table["forward_us_per_step"].tolist() == [25.0, 15.0, 7.0, 2.25, 6.0]
    assert table["backward_us_per_step"].tolist() == [20.0, 14.0, 10.0, 2.5, 4.0]

    ranges = module_ranges(trace)
    assert len(ranges) == 15  # the GPU projection is not a range of ours
    assert ranges["backward"].sum() == 5
    assert set(ranges.loc[ranges["backward"], "tid"]) == {LANE}


def test_parents_of_several_roots(tmp_path: Path) -> None:
    """A list of roots: ``model0``, ``model1``, whose children carry the root's name."""
    events = [
        module("model0", "Encoder", 0, 10),
        module("model0.enc", "Linear", 1, 5),
        module("model1", "Decoder", 20, 10),
        module("model1.head.0", "Linear", 21, 5),
    ]
    meta = {"format": "trainprof.trace/1", "config": {"models": ["Encoder", "Decoder"]}}
    table = module_table(write_trace(tmp_path / "t.json", events, trainprof=meta))
    assert table[["path", "parent", "depth"]].values.tolist() == [
        ["model0", "", 0],
        ["model0.enc", "model0", 1],
        ["model1", "", 0],
        ["model1.head.0", "model1.head", 2],
    ]
    # No steps in the trace: no per-step means.
    assert table["forward_us_per_step"].isna().all()
    # Without our metadata the naming alone says the same.
    assert module_table(write_trace(tmp_path / "u.json", events))["parent"].tolist() == [
        "",
        "model0",
        "",
        "model1.head",
    ]


def test_traces_without_module_ranges_give_empty_tables(reference_traces: Path) -> None:
    for name in ("nccl", "cpu_only", "alexnet"):
        table = module_table(load_trace(reference_traces / "hta" / f"{name}.json.gz"))
        assert table.empty
        assert list(table.columns) == MODULE_COLUMNS
        assert table["calls"].dtype == "int64" and table["forward_us"].dtype == "float64"


def test_module_tree_of_a_real_training_run(train: Any, tmp_path: Path) -> None:
    prof = train(out_dir=tmp_path)
    trace = load_trace(prof.trace_files[0])
    table = module_table(trace).set_index("path")
    assert list(table.index) == ["model", "0", "1", "2", "3", "4"]
    assert table["class_name"].tolist() == [
        "Sequential",
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "Flatten",
        "Linear",
    ]
    assert table["parent"].tolist() == ["", "model", "model", "model", "model", "model"]
    assert table["depth"].tolist() == [0, 1, 1, 1, 1, 1]
    assert (table["calls"] == 2).all()  # two active steps, one forward each
    assert (table["forward_us"] > 0).all() and (table["backward_us"] > 0).all()
    # The children run one after another inside the root, on both lanes: the root's self time
    # is its time minus theirs (to the ~1 ns rounding of large trace timestamps).
    children = table.drop(index="model")
    for phase in ("forward", "backward"):
        root_self = table.loc["model", f"{phase}_self_us"]
        expected = table.loc["model", f"{phase}_us"] - children[f"{phase}_us"].sum()
        assert root_self == pytest.approx(expected, abs=0.01)
        assert table[f"{phase}_us_per_step"].tolist() == pytest.approx(
            (table[f"{phase}_us"] / 2).tolist()
        )
