"""Timeline (``/timeline?run=NAME[&file=FILE]``): one trace file as lanes, zoomable, clickable.

Level of detail is decided on the server: each zoom or pan asks the data layer for the view of
the new x range (at most 50k shapes; aggregated bins when zoomed out, exact events when zoomed
in), and a reset asks for the whole trace. Clicking an event fills the details panel. Names
from the trace are shown as text components, which Dash escapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dash
from dash import Input, Output, State, ctx, dcc, html

from dashboard.app import run_from_search
from dashboard.components.messages import error_banner, notice, page_data, pick_run
from dashboard.components.page import page_layout, register_body
from dashboard.components.timeline import WHOLE, details_panel, status_text, x_window
from dashboard.data.fetch import Problem, fetch
from dashboard.data.runs import current_root
from dashboard.data.timeline import run_event, run_timeline, run_trace_files
from dashboard.figures.timeline import timeline_figure, to_us

dash.register_page(
    __name__, path="/timeline", name="Timeline", title="trainprof: timeline", order=1
)

CLICK_HINT = "Click an event for its details."


def content(run: str | None = None, file: str | None = None, **_query: Any) -> html.Div:
    """The timeline of ``file`` of ``run`` (the first run, the first file, when not named)."""
    loaded = page_data(run, run_trace_files)
    if isinstance(loaded, html.Div):
        return loaded
    run, files = loaded
    heading = html.H3(f"Timeline of run {run}")
    if not files:
        return html.Div([heading, notice("no-trace-files", "This run has no trace files yet.")])
    view = fetch(current_root(), run, lambda root, name: run_timeline(root, name, file))
    if isinstance(view, Problem):
        return html.Div([heading, _file_problem(run, file, view)])
    chosen = file if isinstance(file, str) and file else files[0]
    return html.Div(
        [
            heading,
            dcc.Dropdown(
                id="timeline-file",
                options=list(files),
                value=chosen,
                clearable=False,
                style={"maxWidth": "48em"},
            ),
            *_view_parts(view, chosen),
        ]
    )


layout = page_layout(
    "timeline",
    [
        dcc.Dropdown(id="timeline-file"),
        html.P(id="timeline-status"),
        dcc.Graph(id="timeline"),
        dcc.Store(id="timeline-zoom"),
        html.Div(id="event-details"),
    ],
)
register_body("timeline", content)


def _file_problem(run: str, file: Any, problem: Problem) -> html.Div:
    if problem.kind == "refused":
        return notice("file-refused", f"Refused trace file {file!r}.")
    if problem.kind == "unknown":
        return notice("file-unknown", f"Run {run} has no file {file!r}.")
    return error_banner([problem.message])


def _view_parts(view: Any, file: str) -> list[Any]:
    if isinstance(view, str):
        # The callbacks' components exist, empty, so picking another file still works.
        return [
            error_banner([view]),
            html.P(id="timeline-status"),
            dcc.Graph(id="timeline", style={"display": "none"}),
            dcc.Store(id="timeline-zoom"),
            html.Div(id="event-details"),
        ]
    return [
        error_banner([]),
        html.P(status_text(view), id="timeline-status"),
        dcc.Loading(
            dcc.Graph(
                id="timeline",
                figure=timeline_figure(view, revision=file),
                config={"scrollZoom": True, "displaylogo": False},
            ),
            delay_show=300,
            # The graph stays visible, dimmed, while a zoom is fetched (the default hides it).
            overlay_style={"visibility": "visible", "opacity": 0.6},
        ),
        dcc.Store(id="timeline-zoom"),
        html.H4("Event details"),
        html.Div(CLICK_HINT, id="event-details"),
    ]


# Only relayouts that move the x axis go on to the server. Others (plotly's autosize after a
# draw) would be newer requests of the zoom callback, and Dash drops the answer of an older
# request still in flight: the zoom would be lost.
dash.clientside_callback(
    """function (relayout) {
        const moved = Object.keys(relayout || {}).some(key => key.startsWith('xaxis.'));
        return moved ? relayout : window.dash_clientside.no_update;
    }""",
    Output("timeline-zoom", "data"),
    Input("timeline", "relayoutData"),
    prevent_initial_call=True,
)


@dash.callback(
    Output("timeline", "figure"),
    Output("timeline-status", "children"),
    Input("timeline-zoom", "data"),
    Input("timeline-file", "value"),
    State("url", "search"),
    prevent_initial_call=True,
)
def rezoom(relayout: dict[str, Any] | None, file: str | None, search: str | None) -> Any:
    """Ask for the view of the new x range (or the whole trace of a newly picked file)."""
    run = pick_run(current_root(), run_from_search(search))
    if run is None or file is None:
        return dash.no_update, dash.no_update
    window = x_window(relayout) if ctx.triggered_id == "timeline-zoom" else WHOLE
    if window is None:
        return dash.no_update, dash.no_update
    view = fetch(current_root(), run, lambda root, name: _view_of(root, name, file, window))
    if isinstance(view, Problem):
        return dash.no_update, view.message
    if isinstance(view, str):
        return dash.no_update, view
    return timeline_figure(view, revision=file), status_text(view)


def _view_of(root: Path, run: str, file: str, window: Any) -> Any:
    """The whole trace's view (``window`` is :data:`WHOLE`), or that of the x range."""
    whole = run_timeline(root, run, file)
    if isinstance(whole, str) or isinstance(window, str):
        return whole
    start_us, end_us = (to_us(whole, edge) for edge in window)
    return run_timeline(root, run, file, start_us, end_us)


@dash.callback(
    Output("event-details", "children", allow_duplicate=True),
    Input("timeline-file", "value"),
    prevent_initial_call=True,
)
def forget_event(_file: str | None) -> str:
    """Another file is shown: the last clicked event is not in it."""
    return CLICK_HINT


@dash.callback(
    Output("event-details", "children"),
    Input("timeline", "clickData"),
    State("timeline-file", "value"),
    State("url", "search"),
    prevent_initial_call=True,
)
def show_event(click: dict[str, Any] | None, file: str | None, search: str | None) -> Any:
    """Fill the details panel with the clicked event (bins have no single event)."""
    points = (click or {}).get("points") or [{}]
    row = points[0].get("customdata")
    if not isinstance(row, (int, float)) or isinstance(row, bool):
        return "An aggregated bin: zoom in to pick single events."
    run = pick_run(current_root(), run_from_search(search))
    if run is None:
        return dash.no_update
    found = fetch(current_root(), run, lambda root, name: _event_of(root, name, file, int(row)))
    if isinstance(found, Problem):
        return f"No details: {found.message}"
    return found


def _event_of(root: Path, run: str, file: str | None, row: int) -> Any:
    """The details panel of event ``row``, or the line saying why there is none."""
    try:
        details = run_event(root, run, file, row)
    except LookupError as exc:  # no such event (or file, or run): the click is stale
        return f"No details: {exc}"
    whole = run_timeline(root, run, file)
    if isinstance(details, str) or isinstance(whole, str):
        return details if isinstance(details, str) else whole
    return details_panel(details, whole.span_us[0])
