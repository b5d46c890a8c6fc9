"""Figure builders as plain functions: result rows in, figure out."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import pytest

from dashboard.figures.overview import (
    CATEGORY_LABELS,
    DATA_WAIT,
    MEMORY,
    NO_STEPS,
    STEP_TIME,
    step_breakdown_figure,
    step_metrics_figure,
)
from dashboard.figures.tables import top_bar_figure
from dashboard.figures.text import plain
from profiler.analysis.steps import CATEGORIES


def breakdown_row(step: int, rank: int = 0, **us: float) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, "rank": rank, "dur_us": sum(us.values())}
    row.update({f"{c}_us": us.get(c, 0.0) for c in CATEGORIES})
    return row


def assert_empty_with_note(figure: go.Figure) -> None:
    assert isinstance(figure, go.Figure)
    assert len(figure.data) == 0
    assert [a.text for a in figure.layout.annotations] == [NO_STEPS]
    figure.to_json()  # valid: plotly serialises it


def test_breakdown_has_one_stacked_bar_trace_per_analysis_category() -> None:
    rows = [breakdown_row(5, kernel=10.0, other=2.0), breakdown_row(6, dataloader=7.5)]

    figure = step_breakdown_figure(rows)

    assert list(CATEGORY_LABELS) == list(CATEGORIES)  # the analysis's categories, in order
    assert [t.name for t in figure.data] == list(CATEGORY_LABELS.values())
    assert {t.type for t in figure.data} == {"bar"}
    assert figure.layout.barmode == "stack"
    assert all(len(t.x) == 2 for t in figure.data)
    by_name = {t.name: t for t in figure.data}
    assert list(by_name["Kernel"].y) == [10.0, 0.0]
    assert list(by_name["DataLoader"].y) == [0.0, 7.5]
    assert list(by_name["Other"].y) == [2.0, 0.0]
    assert list(by_name["Kernel"].x) == ["step 5", "step 6"]


def test_breakdown_labels_steps_by_rank_when_several() -> None:
    rows = [breakdown_row(3, rank=0, kernel=1.0), breakdown_row(3, rank=1, kernel=2.0)]

    figure = step_breakdown_figure(rows)

    assert list(figure.data[0].x) == ["rank 0 step 3", "rank 1 step 3"]
    assert list(figure.data[0].y) == [1.0, 2.0]


def test_breakdown_of_no_rows_is_empty_with_a_note() -> None:
    assert_empty_with_note(step_breakdown_figure([]))


def test_step_metrics_lines_over_the_whole_run() -> None:
    rows = [
        {"step": 1, "dur_us": 30.0, "data_wait_us": 20.0, "memory_bytes": 2048, "rank": 0},
        {"step": 0, "dur_us": 35.0, "data_wait_us": 22.0, "memory_bytes": 1024, "rank": 0},
    ]

    figure = step_metrics_figure(rows)

    assert [t.name for t in figure.data] == [STEP_TIME, DATA_WAIT, MEMORY]
    assert {t.type for t in figure.data} == {"scatter"}
    step_time, data_wait, memory = figure.data
    assert list(step_time.x) == [0, 1]  # in step order
    assert list(step_time.y) == pytest.approx([0.035, 0.030])  # ms
    assert list(data_wait.y) == pytest.approx([0.022, 0.020])
    assert list(memory.y) == pytest.approx([1 / 1024, 2 / 1024])  # MiB
    assert figure.layout.yaxis.title.text == "time (ms)"
    assert figure.layout.yaxis2.title.text == "memory (MiB)"
    assert memory.yaxis == "y2" and step_time.yaxis == "y"
    assert figure.layout.yaxis2.overlaying == "y"


def test_step_metrics_leave_out_what_was_not_recorded_and_name_ranks() -> None:
    rows = [
        {"step": 0, "dur_us": 5.0, "rank": 0},
        {"step": 0, "dur_us": 6.0, "data_wait_us": None, "rank": 1},
    ]

    figure = step_metrics_figure(rows)

    assert [t.name for t in figure.data] == [f"{STEP_TIME} (rank 0)", f"{STEP_TIME} (rank 1)"]
    assert [list(t.y) for t in figure.data] == [pytest.approx([0.005]), pytest.approx([0.006])]


@pytest.mark.parametrize("rows", [[], ()])
def test_step_metrics_of_no_rows_is_empty_with_a_note(rows: Any) -> None:
    assert_empty_with_note(step_metrics_figure(rows))


def test_trace_text_reaches_plotly_escaped() -> None:
    rows = [{"name": "kernel<float, 4>", "self_us": 2.0}, {"name": "<b>x</b> & y", "self_us": 1.0}]

    (bar,) = top_bar_figure(rows, "self_us", "self").data

    # The largest is drawn on top, which plotly lists last.
    assert list(bar.customdata) == ["&lt;b&gt;x&lt;/b&gt; &amp; y", "kernel&lt;float, 4&gt;"]
    assert list(bar.y) == list(bar.customdata)
    assert plain("a<b>&c") == "a&lt;b&gt;&amp;c"
