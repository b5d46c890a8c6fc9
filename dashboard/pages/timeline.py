"""Timeline (``/timeline?run=NAME[&file=FILE]``): one trace file as lanes, zoomable, clickable;
or, for a run of several ranks, a group of its ranks on their common clock (``file=ranks 0-7``,
what such a run shows first), each rank's lanes a group (:mod:`dashboard.data.timeline`).

Level of detail is decided on the server: each zoom or pan asks the data layer for the view of
the new x range (at most 50k shapes; aggregated bins when zoomed out, exact events when zoomed
in), and a reset asks for the whole trace. Clicking an event fills the details panel; a
launch call or GPU work also gets its flow (a launch to its kernel, as Kineto's ``ac2g`` flow
events and the correlation id link them): an arrow between the two, patched into the figure's
annotations without redrawing the events and kept through zooms (``timeline-flow``), and the
partner named in the panel with a button that jumps to it (zooms onto both ends, through
plotly's own relayout, and shows its details). Names from the trace are shown as text
components, which Dash escapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dash
from dash import ALL, Input, Output, Patch, State, ctx, dcc, html

from dashboard.app import run_from_search
from dashboard.components.messages import error_banner, notice, page_data, pick_run
from dashboard.components.page import page_layout, register_body
from dashboard.components.timeline import (
    JUMP,
    WHOLE,
    details_panel,
    download_links,
    flow_partners,
    match_text,
    status_text,
    x_window,
)
from dashboard.data.distributed import run_alignment
from dashboard.data.fetch import Problem, fetch
from dashboard.data.runs import current_root
from dashboard.data.timeline import (
    EventDetails,
    RankGroup,
    RanksView,
    TimelineView,
    is_rank_group,
    run_event,
    run_rank_groups,
    run_ranks_timeline,
    run_steps,
    run_timeline,
    run_trace_files,
)
from dashboard.figures.timeline import (
    ranks_annotations,
    ranks_timeline_figure,
    search_matches,
    timeline_annotations,
    timeline_figure,
    to_ms,
    to_us,
)

dash.register_page(
    __name__, path="/timeline", name="Timeline", title="trainprof: timeline", order=1
)

CLICK_HINT = "Click an event for its details."
# A jump shows both ends of the flow with this much room on each side (of their span), at least
# _JUMP_MIN_PAD_US: a launch and its kernel often lie microseconds apart.
_JUMP_PAD = 0.5
_JUMP_MIN_PAD_US = 20.0


def content(
    run: str | None = None, file: str | None = None, step: str | None = None, **_query: Any
) -> html.Div:
    """The timeline of ``file`` of ``run``: a trace file's name or a rank group's key (the first
    run when not named; its first rank group, else its first file); zoomed onto ``step``
    (``ProfilerStep#N``) when the file has that step (a link from the Steps page's slow steps),
    else whole."""
    loaded = page_data(run, run_trace_files)
    if isinstance(loaded, html.Div):
        return loaded
    run, files = loaded
    heading = html.H3(f"Timeline of run {run}")
    if not files:
        return html.Div([heading, notice("no-trace-files", "This run has no trace files yet.")])
    groups = fetch(current_root(), run, run_rank_groups)
    groups = () if isinstance(groups, Problem) else groups  # its files' own views say why
    if file is None:
        file = groups[0].key if groups else files[0]
    view = fetch(current_root(), run, lambda root, name: _view_of(root, name, file, WHOLE))
    if isinstance(view, Problem):
        return html.Div([heading, _file_problem(run, file, view)])
    download = download_links(run, _files_of(groups, files, file))
    steps = _steps_of(run, file)
    options = [{"label": g.label, "value": g.key} for g in groups]
    return html.Div(
        [
            heading,
            dcc.Dropdown(
                id="timeline-file",
                options=options + [{"label": f, "value": f} for f in files],
                value=file,
                clearable=False,
                style={"maxWidth": "48em"},
            ),
            html.P(download, id="timeline-download"),
            dcc.Input(
                id="timeline-search",
                type="search",
                debounce=True,
                placeholder="highlight events whose name contains...",
                style={"width": "24em"},
            ),
            html.Span(id="timeline-matches", style={"marginLeft": "1em"}),
            *_alignment_notes(run, file),
            *_view_parts(*_on_step(run, file, view, steps, step), file, steps),
        ]
    )


def _on_step(run: str, file: str, whole: Any, steps: Any, step: str | None) -> tuple[Any, Any]:
    """The view to open on, and its x range (figure ms): step ``step``'s when the file's
    ``steps`` (:func:`_steps_of`) have it, else ``whole`` and None."""
    if steps is None or isinstance(whole, str) or not (step and step.isdigit()):
        return whole, None
    hit = steps[steps["step"] == int(step)]
    if hit.empty:
        return whole, None
    drawn = _drawn(whole)
    window = tuple(to_ms(drawn, float(hit[edge].iloc[0])) for edge in ("start_us", "end_us"))
    view = fetch(current_root(), run, lambda root, name: _view_of(root, name, file, window))
    return (whole, None) if isinstance(view, (Problem, str)) else (view, window)


def _files_of(groups: Sequence[RankGroup], files: Sequence[str], choice: str) -> list[str]:
    """The trace files ``choice`` draws: a rank group's, or the file itself."""
    group = next((g for g in groups if g.key == choice), None)
    if group is not None:
        return [file for _, file in group.files]
    return [choice] if choice in files else []


@dash.callback(
    Output("timeline-download", "children"),
    Input("timeline-file", "value"),
    State("url", "search"),
    prevent_initial_call=True,
)
def relink(choice: str | None, search: str | None) -> Any:
    """The download links of a newly picked file or rank group."""
    run = pick_run(current_root(), run_from_search(search))
    if run is None or choice is None:
        return dash.no_update
    files = fetch(current_root(), run, run_trace_files)
    groups = fetch(current_root(), run, run_rank_groups)
    if isinstance(files, Problem):
        return []
    groups = () if isinstance(groups, Problem) else groups
    return download_links(run, _files_of(groups, files, choice))


def _alignment_notes(run: str, choice: str) -> list[Any]:
    """For a rank group: what the alignment could not do (ranks left on their own clocks)."""
    aligned = fetch(current_root(), run, run_alignment) if is_rank_group(choice) else None
    if aligned is None or isinstance(aligned, Problem) or not aligned.warnings:
        return []
    return [notice("timeline-clock", "Clocks: " + "; ".join(aligned.warnings) + ".")]


layout = page_layout(
    "timeline",
    [
        dcc.Dropdown(id="timeline-file"),
        html.P(id="timeline-download"),
        dcc.Input(id="timeline-search"),
        html.Span(id="timeline-matches"),
        html.P(id="timeline-status"),
        dcc.Graph(id="timeline"),
        dcc.Store(id="timeline-zoom"),
        dcc.Store(id="timeline-flow"),
        dcc.Store(id="timeline-jump"),
        html.Div(id="event-details"),
    ],
)
register_body("timeline", content)


def _file_problem(run: str, file: Any, problem: Problem) -> html.Div:
    if problem.kind == "refused":
        return notice("file-refused", f"Refused trace file {file!r}.")
    if problem.kind == "unknown":
        what = "rank group" if is_rank_group(file) else "file"
        return notice("file-unknown", f"Run {run} has no {what} {file!r}.")
    return error_banner([problem.message])


def _view_parts(view: Any, window: Any, file: str, steps: Any) -> list[Any]:
    if isinstance(view, str):
        # The callbacks' components exist, empty, so picking another file still works.
        return [
            error_banner([view]),
            html.P(id="timeline-status"),
            dcc.Graph(id="timeline", style={"display": "none"}),
            *_stores(),
            html.Div(id="event-details"),
        ]
    return [
        error_banner([]),
        html.P(_status(view), id="timeline-status"),
        dcc.Loading(
            dcc.Graph(
                id="timeline",
                figure=_figure(view, file, steps=steps, window=window),
                config={"scrollZoom": True, "displaylogo": False},
            ),
            delay_show=300,
            # The graph stays visible, dimmed, while a zoom is fetched (the default hides it).
            overlay_style={"visibility": "visible", "opacity": 0.6},
        ),
        *_stores(),
        html.H4("Event details"),
        html.Div(CLICK_HINT, id="event-details"),
    ]


def _stores() -> list[Any]:
    """The zoom asked, the flow drawn (``{"file", "flows"}``) and the window a jump asks for."""
    return [dcc.Store(id=key) for key in ("timeline-zoom", "timeline-flow", "timeline-jump")]


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
    Output("timeline-matches", "children"),
    Input("timeline-zoom", "data"),
    Input("timeline-file", "value"),
    Input("timeline-search", "value"),
    State("url", "search"),
    State("timeline-flow", "data"),
    prevent_initial_call=True,
)
def rezoom(
    relayout: dict[str, Any] | None,
    file: str | None,
    text: str | None,
    search: str | None,
    flow: dict[str, Any] | None = None,
) -> Any:
    """Ask for the view of the new x range (or the whole trace of a newly picked file), with
    the events matching the search box highlighted (a new search keeps the last zoom) and the
    flow of the clicked event drawn."""
    unchanged = dash.no_update, dash.no_update, dash.no_update
    run = pick_run(current_root(), run_from_search(search))
    if run is None or file is None:
        return unchanged
    window = _window_asked(relayout)
    if window is None:
        return unchanged
    view = fetch(current_root(), run, lambda root, name: _view_of(root, name, file, window))
    if isinstance(view, Problem):
        return dash.no_update, view.message, dash.no_update
    if isinstance(view, str):
        return dash.no_update, view, dash.no_update
    text = text or ""
    matches = search_matches(_drawn(view), text)
    count = None if matches is None else int(matches.sum())
    # A relayout made by code (a jump) keeps its range only in the figure (see _figure).
    ranged = window if isinstance(window, tuple) else None
    figure = _figure(view, file, text, _steps_of(run, file), _flows_of(flow, file), ranged)
    return figure, _status(view), match_text(text, count)


def _flows_of(flow: dict[str, Any] | None, file: str) -> list[Any]:
    """The flows stored for ``file`` (none for another file's)."""
    if not isinstance(flow, dict) or flow.get("file") != file:
        return []
    return list(flow.get("flows") or [])


def _window_asked(relayout: dict[str, Any] | None) -> Any:
    """The x range to draw: a zoom's; a new file's whole trace; a search's, the last zoom."""
    if ctx.triggered_id == "timeline-file":
        return WHOLE
    window = x_window(relayout)
    if ctx.triggered_id == "timeline-search":
        return WHOLE if window is None else window
    return window


View = TimelineView | RanksView


def _view_of(root: Path, run: str, choice: str, window: Any) -> View | str:
    """The whole view of a file or rank group (``window`` is :data:`WHOLE`), or that of the x
    range (the figure's milliseconds)."""
    if is_rank_group(choice):
        whole: View | str = run_ranks_timeline(root, run, choice)
    else:
        whole = run_timeline(root, run, choice)
    if isinstance(whole, str) or isinstance(window, str):
        return whole
    start_us, end_us = (to_us(_drawn(whole), edge) for edge in window)
    if is_rank_group(choice):
        return run_ranks_timeline(root, run, choice, start_us, end_us)
    return run_timeline(root, run, choice, start_us, end_us)


def _drawn(view: View) -> TimelineView:
    """What is drawn of a file's or a rank group's view."""
    return view.view if isinstance(view, RanksView) else view


def _steps_of(run: str, choice: str) -> Any:
    """A file's steps to shade (None for a rank group, or when they cannot be read)."""
    if is_rank_group(choice):
        return None
    steps = fetch(current_root(), run, lambda root, name: run_steps(root, name, choice))
    return None if isinstance(steps, (Problem, str)) else steps


def _figure(
    view: View,
    choice: str,
    search: str = "",
    steps: Any = None,
    flows: Sequence[Any] = (),
    window: Any = None,
) -> dict[str, Any]:
    """The figure of ``view``; with ``window`` (figure ms), its x range set to it: a range set
    by code is no user edit that plotly's uirevision keeps, so without it the axis would
    spring back to the whole trace."""
    if isinstance(view, RanksView):
        figure = ranks_timeline_figure(view, revision=choice, search=search, flows=flows)
    else:
        figure = timeline_figure(view, revision=choice, search=search, steps=steps, flows=flows)
    if window is not None:
        figure["layout"]["xaxis"]["range"] = list(window)
    return figure


def _status(view: View) -> str:
    text = status_text(_drawn(view))
    if isinstance(view, RanksView):
        text = f"{len(view.groups)} ranks on one clock; " + text
    return text


@dash.callback(
    Output("event-details", "children", allow_duplicate=True),
    Output("timeline-flow", "data", allow_duplicate=True),
    Input("timeline-file", "value"),
    prevent_initial_call=True,
)
def forget_event(_file: str | None) -> tuple[str, None]:
    """Another file is shown: the last clicked event (and its flow) is not in it."""
    return CLICK_HINT, None


@dash.callback(
    Output("event-details", "children"),
    Output("timeline-flow", "data"),
    Input("timeline", "clickData"),
    State("timeline-file", "value"),
    State("url", "search"),
    prevent_initial_call=True,
)
def show_event(click: dict[str, Any] | None, file: str | None, search: str | None) -> Any:
    """Fill the details panel with the clicked event (bins have no single event), and keep its
    flows for :func:`draw_flow`."""
    points = (click or {}).get("points") or [{}]
    row = points[0].get("customdata")
    if not isinstance(row, (int, float)) or isinstance(row, bool):
        return "An aggregated bin: zoom in to pick single events.", dash.no_update
    run = pick_run(current_root(), run_from_search(search))
    if run is None or file is None:
        return dash.no_update, dash.no_update
    lane = points[0].get("y")
    found = fetch(
        current_root(), run, lambda root, name: _event_of(root, name, file, int(row), lane)
    )
    if isinstance(found, Problem):
        return f"No details: {found.message}", dash.no_update
    panel, details, _, group = found
    return panel, _flow_data(file, details, group)


@dash.callback(
    Output("timeline", "figure", allow_duplicate=True),
    Input("timeline-flow", "data"),
    State("timeline-file", "value"),
    State("url", "search"),
    prevent_initial_call=True,
)
def draw_flow(flow: dict[str, Any] | None, file: str | None, search: str | None) -> Any:
    """The clicked event's flow arrows in the figure: only its annotations change (a
    ``Patch``), not its events."""
    run = pick_run(current_root(), run_from_search(search))
    if run is None or file is None or not isinstance(flow, dict):
        return dash.no_update
    whole = fetch(current_root(), run, lambda root, name: _view_of(root, name, file, WHOLE))
    if isinstance(whole, (Problem, str)):
        return dash.no_update
    flows = _flows_of(flow, file)
    patch = Patch()
    if isinstance(whole, RanksView):
        patch["layout"]["annotations"] = ranks_annotations(whole, flows)
    else:
        patch["layout"]["annotations"] = timeline_annotations(whole, _steps_of(run, file), flows)
    return patch


@dash.callback(
    Output("event-details", "children", allow_duplicate=True),
    Output("timeline-flow", "data", allow_duplicate=True),
    Output("timeline-jump", "data"),
    Input({"type": JUMP, "row": ALL}, "n_clicks"),
    State("timeline-file", "value"),
    State("url", "search"),
    State("timeline", "clickData"),
    prevent_initial_call=True,
)
def jump(
    clicks: list[int | None], file: str | None, search: str | None, click: dict[str, Any] | None
) -> Any:
    """A flow partner's button: it becomes the clicked event, and the figure zooms onto both
    ends of its flow (the window goes to the clientside relayout below, as a user's zoom). The
    partner lies in the clicked event's file: in a rank group, that of the lane last clicked."""
    unchanged = dash.no_update, dash.no_update, dash.no_update
    if not any(clicks):  # a new panel's buttons, none pressed yet
        return unchanged
    pressed = ctx.triggered_id
    run = pick_run(current_root(), run_from_search(search))
    if not isinstance(pressed, dict) or run is None or file is None:
        return unchanged
    row = int(pressed["row"])
    lane = (((click or {}).get("points") or [{}])[0]).get("y", 0)
    found = fetch(current_root(), run, lambda root, name: _event_of(root, name, file, row, lane))
    if isinstance(found, Problem):
        return f"No details: {found.message}", dash.no_update, dash.no_update
    panel, details, origin_us, group = found
    flow = _flow_data(file, details, group)
    return panel, flow, _jump_window(details, origin_us)


# A jump moves the x axis as a user's zoom does: plotly's relayout, which the zoom store and
# the server's view of the new window follow.
dash.clientside_callback(
    """function (window_ms) {
        const gd = document.querySelector('#timeline .js-plotly-plot');
        if (gd && Array.isArray(window_ms)) {
            Plotly.relayout(gd, {'xaxis.range[0]': window_ms[0], 'xaxis.range[1]': window_ms[1]});
        }
        return window.dash_clientside.no_update;
    }""",
    Output("timeline-jump", "clear_data"),
    Input("timeline-jump", "data"),
    prevent_initial_call=True,
)


def _flow_data(file: str, details: Any, group: Any = None) -> dict[str, Any] | None:
    """What ``timeline-flow`` stores of an event's flows: the file (or rank group) shown and
    each flow's ends, in a rank group on the common clock and the group's lanes."""
    if not isinstance(details, EventDetails):
        return None
    first_lane, offset_us = (0, 0.0) if group is None else (group.first_lane, group.offset_us)
    ends = [
        [(ref.start_us + offset_us, ref.lane_at + first_lane, ref.depth) for ref in pair]
        for pair in details.flows
    ]
    return {"file": file, "flows": ends}


def _jump_window(details: Any, origin_us: float) -> Any:
    """The x range (the figure's ms) holding the event and its flow partners, with room."""
    refs = [details.event, *flow_partners(details)]
    low = min(ref.start_us for ref in refs)
    high = max(ref.start_us + ref.dur_us for ref in refs)
    pad = max(_JUMP_PAD * (high - low), _JUMP_MIN_PAD_US)
    return [(low - pad - origin_us) / 1000.0, (high + pad - origin_us) / 1000.0]


def _event_of(root: Path, run: str, choice: str, row: int, y: Any) -> Any:
    """The details panel of event ``row`` of the file shown (of a rank group: the file of the
    rank whose lane ``y`` is on), its details and the figure's origin; or the line saying why
    there is none (and None, 0, None); and in a rank group, the rank's lane group."""
    whole = _view_of(root, run, choice, WHOLE)
    if isinstance(whole, str):
        return whole, None, 0.0, None
    file, offset_us, group = choice, 0.0, None
    if isinstance(whole, RanksView):
        group = whole.group_of(int(y // 1)) if isinstance(y, (int, float)) else None
        if group is None:
            return "No details: the click is on no rank's lane.", None, 0.0, None
        file, offset_us = group.file, group.offset_us
    try:
        details = run_event(root, run, file, row)
    except LookupError as exc:  # no such event (or file, or run): the click is stale
        return f"No details: {exc}", None, 0.0, None
    if isinstance(details, str):
        return details, None, 0.0, None
    origin_us = _drawn(whole).span_us[0] - offset_us
    return details_panel(details, origin_us), details, origin_us, group
