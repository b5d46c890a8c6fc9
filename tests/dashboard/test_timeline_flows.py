"""The Timeline's flows: a launch call and its GPU work linked as the trace's own ``ac2g`` flow
events link them, drawn as an arrow between their shapes, the partner named in the details
with a button that jumps to it; and in Chromium, a click on a kernel doing all of that."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import dash
import numpy as np
import pandas as pd
import pytest
from dash._callback_context import context_value
from dash._utils import AttributeDict
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.components.timeline import JUMP
from dashboard.figures.timeline import FLOW_NAME, flow_arrows, timeline_figure
from profiler.analysis.table import TraceTable, load_trace
from profiler.analysis.timeline import prepare_timeline, timeline_view
from profiler.analysis.timeline_details import MAX_FLOWS, event_details
from profiler.events import PHASE_FLOW_END, PHASE_FLOW_START, Category
from tests.conftest import REFERENCE_TRACES
from tests.dashboard.browser import WAIT_S, open_path, plotly_data
from tests.dashboard.test_timeline import _click_row, _element, _page_module
from tests.peers import hta_load

HTA = REFERENCE_TRACES / "hta"
RUN = "alexnet"
FLOW_TRACES = ("alexnet", "amd_mi250", "triton", "nccl")  # those with ac2g flows


def ac2g_pairs(trace: TraceTable) -> pd.DataFrame:
    """The trace's own ``ac2g`` flows as ``(call, work)`` index labels: each flow's start bound
    to the event starting where it starts on its thread, its end to the GPU event starting
    where it ends on its stream (Kineto writes both at the events' own ``ts``)."""
    flows, events = trace.flows, trace.events
    flows = flows[flows["cat"].astype(str) == Category.FLOW_AC2G.value]
    ends = {}
    for phase, kinds, column in (
        (PHASE_FLOW_START, ("runtime", "driver"), "call"),
        (PHASE_FLOW_END, ("kernel", "memcpy", "memset"), "work"),
    ):
        part = flows[flows["ph"].astype(str) == phase][["id", "pid", "tid", "ts_us"]]
        candidates = events[events["kind"].isin(kinds)].reset_index(names=column)
        bound = part.merge(candidates[[column, "pid", "tid", "ts_us"]], on=["pid", "tid", "ts_us"])
        ends[column] = bound[["id", column]]
    return ends["call"].merge(ends["work"], on="id")


@pytest.fixture(scope="module")
def alexnet() -> TraceTable:
    return load_trace(HTA / "alexnet.json.gz")


@pytest.mark.parametrize("name", FLOW_TRACES)
def test_each_kernels_flow_is_the_launch_its_ac2g_flow_event_starts_at(name: str) -> None:
    trace = load_trace(HTA / f"{name}.json.gz")
    pairs = ac2g_pairs(trace)
    assert len(pairs) > 0
    index = prepare_timeline(trace)
    sample = pairs.iloc[np.linspace(0, len(pairs) - 1, min(len(pairs), 25)).astype(int)]

    for call, work in zip(sample["call"], sample["work"], strict=True):
        from_work = event_details(trace, int(work), index=index)
        from_call = event_details(trace, int(call), index=index)
        assert [(a.row, b.row) for a, b in from_work.flows] == [(call, work)]
        assert (call, work) in [(a.row, b.row) for a, b in from_call.flows]


@functools.cache
def _launch_flows(name: str) -> frozenset[tuple[int, int]]:
    """``(call, work)`` rows of every runtime or driver call's flows in reference trace ``name``."""
    trace = load_trace(HTA / f"{name}.json.gz")
    events, index = trace.events, prepare_timeline(trace)
    return frozenset(
        (a.row, b.row)
        for row in events.index[events["kind"].isin(["runtime", "driver"])]
        for a, b in event_details(trace, int(row), index=index).flows
    )


def test_the_correlation_links_every_ac2g_flow_of_a_trace_and_no_other(alexnet: Any) -> None:
    pairs = ac2g_pairs(alexnet)
    assert _launch_flows("alexnet") == set(zip(pairs["call"], pairs["work"], strict=True))


@pytest.mark.parametrize("name", ("alexnet", "amd_mi250", "triton"))
def test_the_flows_are_htas_cpu_gpu_correlation(name: str, tmp_path: Path) -> None:
    shutil.copy(HTA / f"{name}.json.gz", tmp_path)
    peer = hta_load(tmp_path).t
    frame, names = peer.get_trace(0), peer.symbol_table.sym_table
    events = load_trace(HTA / f"{name}.json.gz").events
    syncs = set(events.loc[events["kind"] == "sync", "name"])  # HTA links them too; no GPU work
    gpu = frame[(frame["stream"] >= 0) & (frame["index_correlation"] > 0)]
    theirs = {
        (int(c), names[int(frame.loc[at, "name"])], names[int(n)])
        for c, at, n in zip(gpu["correlation"], gpu["index_correlation"], gpu["name"], strict=True)
    }
    theirs = {pair for pair in theirs if pair[2] not in syncs}
    ours = {
        (int(events.loc[call, "correlation"]), events.loc[call, "name"], events.loc[work, "name"])
        for call, work in _launch_flows(name)
    }
    assert ours == theirs and ours


def test_an_op_has_no_flow_of_its_own_though_it_launched_work(alexnet: Any) -> None:
    events = alexnet.events
    index = prepare_timeline(alexnet)
    ops = [event_details(alexnet, int(row), index=index) for row in events.index[
        events["kind"] == "cpu_op"][:200]]  # fmt: skip
    assert any(op.launched for op in ops)
    assert all(op.flows == () for op in ops)
    assert all(len(op.flows) <= MAX_FLOWS for op in ops)


def test_the_arrow_runs_from_the_launchs_shape_to_its_kernels(alexnet: Any) -> None:
    pairs = ac2g_pairs(alexnet)
    events = alexnet.events
    kernels = pairs[events.loc[pairs["work"], "kind"].to_numpy() == "kernel"]
    call, work = (int(kernels[column].iloc[10]) for column in ("call", "work"))
    index = prepare_timeline(alexnet)
    details = event_details(alexnet, work, index=index)
    ends = [[(e.start_us, e.lane_at, e.depth) for e in pair] for pair in details.flows]
    start_us = float(events.loc[call, "ts_us"]) - 50
    end_us = float(events.loc[work, "end_us"]) + 50

    for view in (timeline_view(index), timeline_view(index, start_us, end_us)):
        figure = timeline_figure(view, flows=ends)
        drawn = _segment_starts(figure)
        (arrow,) = [a for a in figure["layout"]["annotations"] if a.get("name") == FLOW_NAME]
        if not view.aggregated:
            assert (arrow["ax"], arrow["ay"]) == pytest.approx(drawn[call])
            assert (arrow["x"], arrow["y"]) == pytest.approx(drawn[work])
        assert arrow["ax"] <= arrow["x"] and arrow["showarrow"]
    assert flow_arrows(view, [[(0.0, 99, 0), (0.0, 0, 0)]]) == []  # no such lane


def _segment_starts(figure: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """Each drawn event's segment start ``(x, y)`` by row."""
    starts = {}
    for trace in figure["data"]:
        for at in range(0, len(trace["x"]), 4):
            row = trace["customdata"][at]
            if row is not None:
                starts[int(row)] = (trace["x"][at], trace["y"][at])
    return starts


# Page ------------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "traces"
    (root / RUN).mkdir(parents=True)
    shutil.copy(HTA / "alexnet.json.gz", root / RUN)
    return root


def _a_flow(root: Path) -> tuple[int, int]:
    trace = load_trace(root / RUN / "alexnet.json.gz")
    pairs = ac2g_pairs(trace)
    kernels = pairs[trace.events.loc[pairs["work"], "kind"].to_numpy() == "kernel"]
    return int(kernels["call"].iloc[3]), int(kernels["work"].iloc[3])


def test_a_clicked_kernel_names_its_launch_and_patches_the_arrow_in(root: Path) -> None:
    call, work = _a_flow(root)
    app, page = _page_module(root)
    with app.server.app_context():
        panel, flow = page.show_event(
            {"points": [{"customdata": work, "y": 3}]}, "alexnet.json.gz", f"?run={RUN}"
        )
        patch = page.draw_flow(flow, "alexnet.json.gz", f"?run={RUN}")
        unpressed = page.jump([None], "alexnet.json.gz", f"?run={RUN}", None)
        pressed = json.dumps({"row": call, "type": JUMP}, separators=(",", ":"))
        token = context_value.set(
            AttributeDict(triggered_inputs=[{"prop_id": f"{pressed}.n_clicks"}])
        )
        try:
            jumped, jumped_flow, window = page.jump(
                [1], "alexnet.json.gz", f"?run={RUN}", {"points": [{"customdata": work, "y": 3}]}
            )
        finally:
            context_value.reset(token)

    partners = _element(panel, "event-flow")
    assert "cudaLaunchKernel" in str(partners)
    (button,) = [c for c in partners.children[0].children if getattr(c, "id", None)]
    assert button.id == {"type": JUMP, "row": call}
    assert flow["file"] == "alexnet.json.gz" and len(flow["flows"]) == 1
    operations = patch.to_plotly_json()["operations"]
    (arrows,) = [op["params"]["value"] for op in operations if op["location"][-1] == "annotations"]
    assert [a["name"] for a in arrows] == [FLOW_NAME]

    assert unpressed == (dash.no_update,) * 3  # a new panel's buttons, none pressed yet
    assert _element(jumped, "event-name").children == "cudaLaunchKernel"
    assert jumped_flow == flow  # the same flow, seen from its other end
    events = load_trace(root / RUN / "alexnet.json.gz").events
    origin = float(events["ts_us"].min())
    for row in (call, work):
        assert window[0] < (events.loc[row, "ts_us"] - origin) / 1000 < window[1]


# Browser ---------------------------------------------------------------------------------------

_ARROWS = (
    "const gd = document.querySelector('#timeline .js-plotly-plot');"
    "return (gd._fullLayout.annotations || []).filter(a => a.name === 'flow')"
    ".map(a => [a.ax, a.ay, a.x, a.y]);"
)
_RANGE = "return document.querySelector('#timeline .js-plotly-plot')._fullLayout.xaxis.range;"


@pytest.mark.browser
def test_clicking_a_kernel_draws_its_flow_and_jumps_to_its_launch(
    dash_duo: Any, root: Path
) -> None:
    call, work = _a_flow(root)
    events = load_trace(root / RUN / "alexnet.json.gz").events
    open_path(dash_duo, root, f"/timeline?run={RUN}")
    dash_duo.wait_for_contains_text("#timeline-status", "drawn exactly", timeout=WAIT_S)
    starts = plotly_data(
        dash_duo,
        "timeline",
        f"const s = {{}}; for (const t of d) {{ for (let p = 0; p < t.x.length; p += 4) {{"
        f" if (t.customdata[p] === {call} || t.customdata[p] === {work})"
        f" s[t.customdata[p]] = [t.x[p], t.y[p]]; }} }} return s;",
    )

    _click_row(dash_duo, work)

    dash_duo.wait_for_contains_text("#event-flow", "cudaLaunchKernel", timeout=WAIT_S)
    WebDriverWait(dash_duo.driver, WAIT_S).until(
        lambda d: d.execute_script(_ARROWS), "no flow arrow drawn"
    )
    (arrow,) = dash_duo.driver.execute_script(_ARROWS)
    assert arrow == pytest.approx([*starts[str(call)], *starts[str(work)]])

    dash_duo.find_element("#event-flow button").click()
    dash_duo.wait_for_text_to_equal("#event-name", "cudaLaunchKernel", timeout=WAIT_S)
    origin = float(events["ts_us"].min())
    expected = [(events.loc[row, "ts_us"] - origin) / 1000 for row in (call, work)]
    WebDriverWait(dash_duo.driver, WAIT_S).until(
        lambda d: (lambda r: r[0] < min(expected) and max(expected) < r[1] and r[1] - r[0] < 10)(
            d.execute_script(_RANGE)
        ),
        "the jump did not zoom onto the flow",
    )
    dash_duo.wait_for_contains_text("#timeline-status", "drawn exactly", timeout=WAIT_S)
    WebDriverWait(dash_duo.driver, WAIT_S).until(
        lambda d: len(d.execute_script(_ARROWS)) == 1, "the zoom lost the flow arrow"
    )
    assert dash_duo.get_logs() == []
