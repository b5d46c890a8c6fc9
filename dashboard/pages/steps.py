"""Steps (``/steps?run=NAME``): everything the always-on step logs hold, over the whole run.

Step time and data wait with the slow steps marked, the forward/backward/optimizer split of the
steps whose split was timed, memory, CPU % and GPU utilisation and memory where the system
sampler took them ("not sampled" where it did not). Each slow step is listed with the deep
window (trace file) that recorded it, or the one it opened (``on_anomaly``); a click on the
window opens it in the Timeline.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import dash
import dash_ag_grid as dag
from dash import Input, Output, State, dcc, html

from dashboard.app import RUN_PARAM
from dashboard.components.grid import Column, data_grid
from dashboard.components.messages import error_banner, notice, page_data
from dashboard.components.page import page_layout, register_body
from dashboard.data.steps import StepsData, run_steps
from dashboard.figures.steps import (
    NOT_SAMPLED,
    gpu_memory_figure,
    gpu_sampled,
    memory_figure,
    phase_figure,
    step_time_figure,
    system_figure,
)

dash.register_page(__name__, path="/steps", name="Steps", title="trainprof: steps", order=0.5)

SLOW_GRID = "steps-slow"
NO_WINDOW = "no deep window"
NO_SLOW = (
    "No slow step: none took more than 2x the running median of the steps before it "
    "(and 1 ms more), the rule profiler.on_anomaly opens windows on."
)
SLOW_COLUMNS = (
    Column("rank", "rank", "count"),
    Column("step", "step", "count"),
    Column("dur_us", "step ms", "ms"),
    Column("median_us", "running median ms", "ms"),
    Column("ratio", "x median", "rate"),
    Column("window", "deep window (opens the Timeline)", wide=True, link=True),
    Column("recorded", "window records"),
)


def content(run: str | None = None, **_query: Any) -> html.Div:
    """The steps of ``run`` (the first run when none is named)."""
    loaded = page_data(run, run_steps)
    if isinstance(loaded, html.Div):
        return loaded
    _, data = loaded
    heading = [html.H3(f"Steps of run {data.name}"), error_banner(data.errors)]
    if not data.steps:
        note = "This run has no step log (meta/steps.<rank>.jsonl) yet."
        return html.Div([*heading, notice("no-steps", note)])
    return html.Div([*heading, *steps_sections(data)])


layout = page_layout("steps", [dag.AgGrid(id=SLOW_GRID)])
register_body("steps", content)


def steps_sections(data: StepsData) -> list[Any]:
    """The page's figures and the slow-step table for one run's steps."""
    steps = data.steps
    gpu_util, gpu_memory = gpu_sampled(steps)
    return [
        html.P(_counts(data), id="steps-counts"),
        html.H4("Step time"),
        dcc.Graph(id="steps-time", figure=step_time_figure(steps, data.slow)),
        html.H4("Slow steps"),
        _slow_table(data),
        html.H4("Where a step's time goes (steps whose split was timed)"),
        dcc.Graph(id="steps-phases", figure=phase_figure(steps)),
        html.H4("Memory"),
        dcc.Graph(id="steps-memory", figure=memory_figure(steps, data.device)),
        html.H4("CPU and GPU utilisation"),
        html.P(
            "GPU utilisation: sampled" if gpu_util else f"GPU utilisation: {NOT_SAMPLED}",
            id="steps-gpu-util",
        ),
        dcc.Graph(id="steps-system", figure=system_figure(steps)),
        html.H4("GPU memory"),
        _gpu_memory(steps, gpu_memory),
    ]


def slow_rows(data: StepsData) -> list[dict[str, Any]]:
    """The slow-step table's rows: each slow step with its window's file or "no deep window",
    the steps the window recorded (and whether the slow step opened it), the Timeline link it
    opens (``href``: absent without a window; ``step``: the slow step, or the window's first
    when the step opened it) and its ``id`` (``rank:step``)."""
    rows = []
    for slow in data.slow:
        row = {key: slow[key] for key in ("rank", "step", "dur_us", "median_us", "ratio")}
        row["id"] = f"{slow['rank']}:{slow['step']}"
        file = slow.get("file")
        row["window"] = file or NO_WINDOW
        if file:
            first, last, opened = slow["first_step"], slow["last_step"], slow["opened"]
            span = f"step {first}" if first == last else f"steps {first}-{last}"
            row["recorded"] = span + (", opened by this step" if opened else "")
            query = {RUN_PARAM: data.name, "file": file, "step": first if opened else slow["step"]}
            row["href"] = "/timeline?" + urlencode(query, safe="/")
        rows.append(row)
    return rows


@dash.callback(
    Output("url", "href", allow_duplicate=True),
    Input(SLOW_GRID, "cellClicked"),
    State(SLOW_GRID, "rowData"),
    prevent_initial_call=True,
)
def open_window(clicked: dict[str, Any] | None, rows: list[dict[str, Any]] | None) -> Any:
    """A click on a slow step's window opens that trace file in the Timeline."""
    if not clicked or clicked.get("colId") != "window":
        return dash.no_update
    row = next((r for r in rows or [] if r.get("id") == clicked.get("rowId")), None)
    href = None if row is None else row.get("href")
    return href if isinstance(href, str) else dash.no_update


def _slow_table(data: StepsData) -> Any:
    if not data.slow:
        return html.P(NO_SLOW, id="steps-no-slow")
    return data_grid(SLOW_GRID, SLOW_COLUMNS, slow_rows(data), row_id="id")


def _gpu_memory(steps: Any, sampled: bool) -> Any:
    if not sampled:
        return html.P(
            f"GPU memory: {NOT_SAMPLED} (a CPU-only run, or no NVML)", id="steps-gpu-memory"
        )
    return dcc.Graph(id="steps-gpu-memory", figure=gpu_memory_figure(steps))


def _counts(data: StepsData) -> str:
    ranks = len({row.get("rank", 0) for row in data.steps})
    timed = sum(1 for row in data.steps if row.get("forward_us") is not None)
    return (
        f"{len(data.steps)} steps over {ranks} rank(s); forward/backward/optimizer timed on "
        f"{timed} of them; {len(data.slow)} slow; {len(data.windows)} deep window(s)."
    )
