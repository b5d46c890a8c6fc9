"""Diff (``/diff?run=NEW&base=BASE``): what changed per step from a base run to this run.

A base-run picker sets the URL's ``base`` (the ``run`` stays); per-category time base vs new,
and the ops (and, with GPU work, kernels) that changed most, as charts and tables. Names from
trace files are grid cells and escaped figure labels: text, never HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import dash
from dash import Input, Output, State, dcc, html

from dashboard.app import BASE_PARAM, run_from_search
from dashboard.components.grid import Column, data_grid
from dashboard.components.messages import error_banner, notice, page_data
from dashboard.components.page import page_layout, register_body
from dashboard.data.diff import RunDiff, other_runs, run_diff
from dashboard.data.fetch import Problem, fetch
from dashboard.data.runs import current_root
from dashboard.figures.diff import category_diff_figure, name_diff_figure

dash.register_page(__name__, path="/diff", name="Diff", title="trainprof: diff", order=7)

PICK_BASE = "Pick a base run to compare this run with."
COLUMNS = (
    Column("name", "name", wide=True),
    Column("calls_base", "calls/step base", "rate"),
    Column("calls_new", "calls/step new", "rate"),
    Column("base", "base µs/step", "us"),
    Column("new", "new µs/step", "us"),
    Column("delta", "Δ µs/step", "delta_us"),
    Column("delta_pct", "Δ %", "delta_pct"),
)


def diff_href(run: str, base: str | None) -> str:
    """The deep link to the diff of ``run`` against ``base``."""
    query = {"run": run} if base is None else {"run": run, BASE_PARAM: base}
    return "/diff?" + urlencode(query, safe="/")


def content(run: str | None = None, base: str | None = None, **_query: Any) -> html.Div:
    """``run`` (the first run when none is named) against run ``base``, once one is picked."""
    loaded = page_data(run, other_runs)
    if isinstance(loaded, html.Div):
        return loaded
    run, choices = loaded
    title = html.H3(f"Diff of run {run}")
    picker = base_picker(choices, base)
    if not base:
        return html.Div([title, picker, notice("diff-pick-base", PICK_BASE)])
    diff = fetch(current_root(), base, lambda root, name: run_diff(root, name, run))
    if isinstance(diff, Problem):
        return html.Div([title, picker, base_problem(base, diff)])
    heading = [html.H3(f"Diff of run {run} against {base}"), picker, error_banner(diff.errors)]
    return html.Div([*heading, *diff_sections(diff)])


layout = page_layout("diff", [dcc.Dropdown(id="diff-base")])
register_body("diff", content)


def base_problem(base: str, problem: Problem) -> html.Div:
    """The notice for a base run name the data layer refused or did not find, or the banner
    saying why the runs could not be compared."""
    if problem.kind == "refused":
        text = f"Refused base run {base!r}: run names stay inside the trace root."
        return notice("base-refused", text)
    if problem.kind == "unknown":
        return notice("base-unknown", f"There is no run named {base!r} to compare with.")
    return error_banner([problem.message], title="The runs could not be compared:")


def base_picker(choices: Sequence[str], base: str | None) -> html.Div:
    """The ``diff-base`` dropdown of the runs to compare with, showing ``base`` if it is one."""
    return html.Div(
        [
            html.Label("base run", htmlFor="diff-base", style={"marginRight": "0.5em"}),
            dcc.Dropdown(
                id="diff-base",
                options=list(choices),
                value=base if base in choices else None,
                placeholder="pick a base run",
                clearable=False,
                style={"minWidth": "22em"},
            ),
        ],
        style={"display": "flex", "alignItems": "center", "margin": "0.5em 0"},
    )


def diff_sections(diff: RunDiff) -> list[Any]:
    """The step summary, the category chart, and the op (and kernel) charts and tables."""
    if diff.diff is None:
        return []
    result = diff.diff
    sections: list[Any] = [
        html.P(step_text(result, diff.base, diff.new), id="diff-step"),
        html.H4("Time per step by category"),
        dcc.Graph(id="diff-categories", figure=category_diff_figure(result["categories"])),
        *_name_section("ops", "Ops: largest changes in self time per step", result["ops"]),
    ]
    if result["kernels"]:
        title = "Kernels: largest changes in time per step"
        sections += _name_section("kernels", title, result["kernels"])
    return sections


def step_text(result: Mapping[str, Any], base: str, new: str) -> str:
    """One sentence: the mean step of each run, the change, and the steps compared."""
    step, steps = result["step_us"], result["steps"]
    pct = "" if step["delta_pct"] is None else f", {step['delta_pct']:+.1f}%"
    return (
        f"Mean step: {step['base'] / 1000:,.3f} ms in {base} ({steps['base']} steps), "
        f"{step['new'] / 1000:,.3f} ms in {new} ({steps['new']} steps): "
        f"{step['delta'] / 1000:+,.3f} ms{pct}."
    )


def _name_section(key: str, title: str, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    axis = "Δ self time per step (µs)" if key == "ops" else "Δ time per step (µs)"
    return [
        html.H4(title),
        dcc.Graph(id=f"diff-{key}", figure=name_diff_figure(rows, axis)),
        data_grid(f"diff-{key}-table", COLUMNS, rows),
    ]


@dash.callback(
    Output("url", "search", allow_duplicate=True),
    Input("diff-base", "value"),
    State("url", "search"),
    prevent_initial_call=True,
)
def choose_base(base: str | None, search: str | None) -> Any:
    """Put the picked base run in the URL, keeping its ``run``; the page then re-renders."""
    run = run_from_search(search)
    if not base or run is None:
        return dash.no_update
    return diff_href(run, base).removeprefix("/diff")
