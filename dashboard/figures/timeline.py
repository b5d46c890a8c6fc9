"""The Timeline's figure: a view's shapes as horizontal segments on one row per lane.

Up to 50k shapes draw fast as WebGL line segments: one ``Scattergl`` per event kind (or, when
aggregated, per busy-fraction band), each shape three points (start, middle, end: so a click
anywhere near a long bar finds it) and a gap. Every point carries its event's row as
``customdata``, so a click maps back to the event; bins carry none. Times are milliseconds from
the trace's first event. Names go into hover text with ``<``, ``>`` and ``&`` escaped, since
plotly reads a subset of HTML there.

Nested events sit one sub-row lower per level, each lane's levels spaced by its deepest nesting
over the whole trace, so an event keeps its place in every view and a flow arrow
(:func:`flow_arrows`: a launch call to its GPU work, as Kineto's ``ac2g`` flow events link them)
can be drawn between two events from their lane and depth alone, as a layout annotation: no
shape is added to the view's budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dashboard.figures.overview import empty_figure
from dashboard.figures.palette import BLUE, CATEGORY_COLORS, INK, MUTED, TEMPLATE
from dashboard.figures.text import plain

NO_EVENTS = "No events in this trace"
#: The event kinds in the legend's order, each in its category's colour.
KIND_COLORS: dict[str, str] = {
    kind: CATEGORY_COLORS[kind]
    for kind in (
        "cpu_op",
        "user_annotation",
        "python_function",
        "runtime",
        "driver",
        "kernel",
        "memcpy",
        "memset",
        "gpu_user_annotation",
        "sync",
    )
}
OTHER_COLOR = CATEGORY_COLORS["other"]
MATCH_OUTLINE_COLOR = INK
DIMMED_OPACITY = 0.2  # events not matching a search
GROUP_LINE_COLOR = MUTED
RANKS_AXIS = "time (ms) on the ranks' common clock, from the earliest rank's first event"
# Aggregated bins: one band per busy fraction, darker when busier.
BUSY_BANDS = (0.25, 0.5, 0.75, 1.0)
_BAND_OPACITY = (0.3, 0.5, 0.75, 1.0)
_LANE_PX = 42
# The figure's height: a margin plus a row per lane, at least enough for a legible plot of one
# or two lanes and at most what a laptop screen shows (lanes past ~35 get thinner rows).
_HEIGHT_MARGIN_PX = 140
MIN_HEIGHT_PX = 360
MAX_HEIGHT_PX = 1600
STEP_BAND_COLOR = "rgba(120, 120, 120, 0.10)"
STEP_LABEL_COLOR = MUTED
_BAND_HEIGHT = 0.8  # of a lane's row, for the rows of nested events
_POINTS_PER_SHAPE = 4  # start, middle, end, gap
_HOVER_CHARS = 100
_LINE_PX = 10
FLOW_COLOR = INK  # dark over every kind's colour
FLOW_NAME = "flow"  # the ``name`` of every flow arrow's annotation
_OUTLINE_PX = 16  # drawn under a match's own segment: a dark rim around it
_TEMPLATE_JSON = TEMPLATE.to_plotly_json()  # the layout is a dict: the template as one too


def to_ms(view: Any, time_us: float | np.ndarray) -> Any:
    """Microseconds of the trace as the figure's x: milliseconds from its first event."""
    return (time_us - view.span_us[0]) / 1000.0


def to_us(view: Any, time_ms: float) -> float:
    """The figure's x (milliseconds from the first event) as the trace's microseconds."""
    return float(view.span_us[0] + float(time_ms) * 1000.0)


def search_matches(view: Any, search: str) -> np.ndarray | None:
    """Which of an exact view's shapes match ``search``: their name contains it, case aside.

    Returns:
        A boolean per row of ``view.shapes``; None when there is nothing to search for (an
        empty or blank ``search``) or the view is aggregated (bins are not single events).
    """
    text = search.strip().casefold()
    if not text or view.aggregated:
        return None
    names = view.shapes["name"].astype(str).str.casefold()
    return names.str.contains(text, regex=False).to_numpy(bool)


def figure_height(lanes: int) -> int:
    """The figure's height in pixels for ``lanes`` lanes: :data:`_LANE_PX` a lane plus a margin,
    within :data:`MIN_HEIGHT_PX` and :data:`MAX_HEIGHT_PX`."""
    return min(MAX_HEIGHT_PX, max(MIN_HEIGHT_PX, _HEIGHT_MARGIN_PX + _LANE_PX * lanes))


def step_bands(view: Any, steps: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every other step as a shaded background band, and each step's number over it.

    Args:
        view: the view drawn (its ``span_us`` sets the x origin).
        steps: ``step``, ``start_us``, ``end_us`` per step, in time order.

    Returns:
        plotly layout ``shapes`` (the bands of the 1st, 3rd... step, under the data) and
        ``annotations`` (``step N`` at the top of each step's middle).
    """
    start = to_ms(view, steps["start_us"].to_numpy(float))
    end = to_ms(view, steps["end_us"].to_numpy(float))
    bands = [
        {
            "type": "rect", "xref": "x", "x0": float(x0), "x1": float(x1), "yref": "paper",
            "y0": 0, "y1": 1, "fillcolor": STEP_BAND_COLOR, "line": {"width": 0}, "layer": "below",
        }
        for x0, x1 in zip(start[::2], end[::2], strict=True)
    ]  # fmt: skip
    labels = [
        {
            "xref": "x", "x": float((x0 + x1) / 2), "yref": "paper", "y": 1, "yanchor": "top",
            "showarrow": False, "text": f"step {int(step)}", "font": {"color": STEP_LABEL_COLOR},
        }
        for step, x0, x1 in zip(steps["step"], start, end, strict=True)
    ]  # fmt: skip
    return bands, labels


#: One end of a flow: ``(start_us, lane, depth)``, the event's start in the trace's µs, its
#: lane's position in the view's lanes and its depth there (JSON-friendly, for a store).
FlowEnd = tuple[float, int, int]


def flow_arrows(view: Any, flows: Sequence[Sequence[FlowEnd]]) -> list[dict[str, Any]]:
    """An arrow from each flow's first end (the launch call) to its second (its GPU work),
    from start to start, as plotly layout annotations named :data:`FLOW_NAME`.

    Args:
        view: the view drawn (its ``span_us`` sets the x origin, its ``lanes`` the rows).
        flows: ``(from, to)`` pairs of :data:`FlowEnd`; pairs with an end on no lane of the
            view are left out.
    """
    arrows = []
    for ends in flows:
        (x0, y0), (x1, y1) = (_flow_point(view, end) for end in ends)
        if y0 is None or y1 is None:
            continue
        arrows.append(
            {
                "name": FLOW_NAME, "x": x1, "y": y1, "ax": x0, "ay": y0,
                "xref": "x", "yref": "y", "axref": "x", "ayref": "y", "text": "",
                "showarrow": True, "arrowhead": 2, "arrowsize": 1.2, "arrowwidth": 2,
                "arrowcolor": FLOW_COLOR, "standoff": 0, "startstandoff": 0,
            }
        )  # fmt: skip
    return arrows


def _flow_point(view: Any, end: Sequence[float]) -> tuple[float, float | None]:
    start_us, lane, depth = float(end[0]), int(end[1]), int(end[2])
    if not 0 <= lane < len(view.lanes):
        return 0.0, None
    y = lane + _BAND_HEIGHT * depth / (_max_depth(view.lanes[lane]) + 1)
    return round(float(to_ms(view, start_us)), 4), round(y, 3)


def _max_depth(lane: Any) -> int:
    return int(getattr(lane, "max_depth", 0))


def timeline_figure(
    view: Any,
    *,
    revision: str = "",
    search: str = "",
    steps: pd.DataFrame | None = None,
    flows: Sequence[Sequence[FlowEnd]] = (),
) -> dict[str, Any]:
    """The view as segments on lanes.

    Args:
        view: a ``TimelineView`` (``lanes``, ``span_us``, ``aggregated``, ``shapes``).
        revision: plotly's ``uirevision``: zoom and pan survive new data while it stays the
            same (give the file's name).
        search: text to highlight (:func:`search_matches`): in an exact view the matching
            events are drawn at full strength over a dark rim (one more trace, first, named
            with their count), the others dimmed to :data:`DIMMED_OPACITY`.
        steps: the trace's steps (:func:`step_bands`), shaded and numbered behind the events.
        flows: arrows to draw (:func:`flow_arrows`), after the steps' numbers.

    Returns:
        The figure as a dict (what ``dcc.Graph`` takes): one ``scattergl`` per event kind
        (exact) or busy band (aggregated), in that order, and with a search the rim of the
        matches before them and one trace of each kind's matches after; an empty figure saying
        :data:`NO_EVENTS` when the trace has no lanes. A dict, not a ``go.Figure``: plotly's
        objects check every point of every list, ten times the cost of the rest at 50k shapes.
    """
    if not view.lanes:
        return dict(empty_figure(NO_EVENTS).to_dict())
    shapes = view.shapes
    if view.aggregated:
        traces = _bin_traces(view, shapes)
    else:
        traces = _event_traces(view, shapes, search_matches(view, search), search.strip())
    layout = _layout(view.lanes, revision)
    layout["annotations"] = timeline_annotations(view, steps, flows)
    if steps is not None and len(steps):
        layout["shapes"] = step_bands(view, steps)[0]
    return {"data": traces, "layout": layout}


def timeline_annotations(
    view: Any, steps: pd.DataFrame | None, flows: Sequence[Sequence[FlowEnd]]
) -> list[dict[str, Any]]:
    """A file's figure's annotations: each step's number (:func:`step_bands`), then the flow
    arrows (:func:`flow_arrows`); what a new click patches in without redrawing the events."""
    labels = step_bands(view, steps)[1] if steps is not None and len(steps) else []
    return labels + flow_arrows(view, flows)


def ranks_timeline_figure(
    ranks: Any, *, revision: str = "", search: str = "", flows: Sequence[Sequence[FlowEnd]] = ()
) -> dict[str, Any]:
    """Several ranks' view (a ``RanksView``) as :func:`timeline_figure` draws one trace's, with a
    line between ranks' lane groups and each group named at its first lane.

    Times are milliseconds from the earliest rank's first event on the ranks' common clock; the
    groups are ``ranks.groups`` (``label``, ``first_lane``, ``clock_offset_us``); ``flows`` are
    on that clock and the group's lanes (:func:`ranks_annotations`).
    """
    figure = timeline_figure(ranks.view, revision=revision, search=search)
    if not ranks.view.lanes:
        return figure
    layout = figure["layout"]
    layout["xaxis"]["title"]["text"] = RANKS_AXIS
    layout["shapes"] = [
        {
            "type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y",
            "y0": group.first_lane - 0.3, "y1": group.first_lane - 0.3,
            "line": {"color": GROUP_LINE_COLOR, "width": 2},
        }
        for group in ranks.groups[1:]
    ]  # fmt: skip
    layout["annotations"] = ranks_annotations(ranks, flows)
    return figure


def ranks_annotations(ranks: Any, flows: Sequence[Sequence[FlowEnd]]) -> list[dict[str, Any]]:
    """A rank group's figure's annotations: each group's name at its first lane, then the flow
    arrows (:func:`flow_arrows`, their ends on the common clock and the group's lanes)."""
    notes = [
        {
            "xref": "paper", "x": 1, "xanchor": "right", "yref": "y", "y": group.first_lane - 0.3,
            "yanchor": "top", "showarrow": False, "text": plain(_group_note(group)),
            "font": {"color": GROUP_LINE_COLOR}, "bgcolor": "rgba(255, 255, 255, 0.8)",
        }
        for group in ranks.groups
    ]  # fmt: skip
    return notes + flow_arrows(ranks.view, flows)


def _group_note(group: Any) -> str:
    """A group's name and the clock offset applied to it."""
    return f"{group.label} (clock offset {group.clock_offset_us:+,.1f} µs)"


def _event_traces(
    view: Any, shapes: pd.DataFrame, matches: np.ndarray | None, search: str
) -> list[dict[str, Any]]:
    y = shapes["lane"].to_numpy() + _depth_offsets(view.lanes, shapes)
    kinds = shapes["kind"].to_numpy()
    if matches is None:
        return [
            _kind_trace(view, shapes, y, kinds == kind, f"{kind} ({(kinds == kind).sum():,})", kind)
            for kind in _kinds_in_order(shapes["kind"])
        ]
    label = f'matching "{plain(search)}" ({matches.sum():,})'
    rim = _segments(view, shapes[matches], y[matches], label, MATCH_OUTLINE_COLOR, None)
    rim["line"]["width"] = _OUTLINE_PX
    dimmed, bright = [], []
    for kind in _kinds_in_order(shapes["kind"]):
        rest = (kinds == kind) & ~matches
        dimmed.append(_kind_trace(view, shapes, y, rest, f"{kind} ({rest.sum():,})", kind))
        dimmed[-1]["opacity"] = DIMMED_OPACITY
        hits = (kinds == kind) & matches
        if hits.any():
            bright.append(_kind_trace(view, shapes, y, hits, f"{kind}: matching", kind))
            bright[-1]["showlegend"] = False
    return [*dimmed, rim, *bright]


def _kind_trace(
    view: Any, shapes: pd.DataFrame, y: np.ndarray, mask: np.ndarray, name: str, kind: str
) -> dict[str, Any]:
    """The events of ``mask`` (all of one kind) in that kind's colour, with their hover text."""
    part = shapes[mask]
    hover = [
        f"{_label(name)}<br>{dur:,.3f} µs"
        for name, dur in zip(part["name"], part["end_us"] - part["start_us"], strict=True)
    ]
    return _segments(view, part, y[mask], name, KIND_COLORS.get(kind), hover)


def _bin_traces(view: Any, shapes: pd.DataFrame) -> list[dict[str, Any]]:
    width = view.bin_us or 1.0
    fraction = (shapes["busy_us"] / width).clip(0.0, 1.0).to_numpy()
    band = np.minimum(np.searchsorted(BUSY_BANDS, fraction, side="left"), len(BUSY_BANDS) - 1)
    traces = []
    for number, (top, opacity) in enumerate(zip(BUSY_BANDS, _BAND_OPACITY, strict=True)):
        part = shapes[band == number].assign(row=None)
        hover = _bin_hover(part, width)
        low = 0 if number == 0 else int(100 * BUSY_BANDS[number - 1])
        label = f"busy {low}-{int(100 * top)}% ({len(part):,} bins)"
        color = _rgba(BLUE, opacity)
        traces.append(_segments(view, part, part["lane"].to_numpy(float), label, color, hover))
    return traces


def _bin_hover(part: pd.DataFrame, width_us: float) -> list[str]:
    busy_pct = 100 * part["busy_us"] / width_us
    return [
        f"mostly {_label(name) or '(instants)'}<br>{events:,} events, {busy:.0f}% busy"
        for name, events, busy in zip(part["name"], part["events"], busy_pct, strict=True)
    ]


def _label(name: Any) -> str:
    """A name for a hover label: escaped, and cut short (the details panel has it whole)."""
    text = str(name)
    return plain(text if len(text) <= _HOVER_CHARS else text[: _HOVER_CHARS - 1] + "…")


def _segments(
    view: Any,
    part: pd.DataFrame,
    y: np.ndarray,
    name: str,
    color: str | None,
    hover: list[str] | None,
) -> dict[str, Any]:
    """One trace drawing each row of ``part`` as a segment at ``y``: start, middle, end, gap
    (no hover text: it shows none, and clicks go through to the traces over it)."""
    # Rounded to 0.1 µs and 0.001 of a row: the JSON is half the size, the drawing the same.
    start = np.round(to_ms(view, part["start_us"].to_numpy()), 4)
    end = np.round(to_ms(view, part["end_us"].to_numpy()), 4)
    x = _interleave(start, np.round((start + end) / 2, 4), end)
    y = np.round(y, 3)
    rows = part["row"].to_numpy(object)
    trace = {
        "type": "scattergl",
        "x": x,
        "y": _interleave(y, y, y),
        "customdata": _interleave(rows, rows, rows),
        "hovertext": _interleave(hover, hover, hover) if hover is not None else None,
        "hoverinfo": "text" if hover is not None else "skip",
        "mode": "lines",
        "name": name,
        "line": {"width": _LINE_PX, "color": color or OTHER_COLOR},
        "connectgaps": False,
    }
    return trace if hover is not None else {k: v for k, v in trace.items() if v is not None}


def _interleave(*columns: Sequence[Any] | np.ndarray) -> list[Any]:
    """``[a0, b0, c0, None, a1, b1, c1, None, ...]``: points of segments, then a gap."""
    count = len(columns[0])
    points = np.full(count * _POINTS_PER_SHAPE, None, dtype=object)
    for offset, column in enumerate(columns):
        values = column.tolist() if isinstance(column, np.ndarray) else list(column)
        points[offset::_POINTS_PER_SHAPE] = values
    return points.tolist()  # plain Python values: plotly sends lists, not typed arrays


def _depth_offsets(lanes: Sequence[Any], shapes: pd.DataFrame) -> np.ndarray:
    """Nested events one sub-row lower per level, every lane's stack within its row (spaced by
    the lane's deepest nesting in the trace: an event's row is the same in every view)."""
    depth = shapes["depth"].to_numpy(float)
    deepest = np.array([_max_depth(lane) for lane in lanes], dtype=float)
    return _BAND_HEIGHT * depth / (deepest[shapes["lane"].to_numpy(int)] + 1)


def _kinds_in_order(kinds: pd.Series) -> list[str]:
    present = set(kinds.astype(str))
    return [k for k in KIND_COLORS if k in present] + sorted(present - set(KIND_COLORS))


def _layout(lanes: Sequence[Any], revision: str) -> dict[str, Any]:
    return {
        "template": _TEMPLATE_JSON,
        "uirevision": revision,
        "height": figure_height(len(lanes)),
        "margin": {"l": 10, "r": 10, "t": 30, "b": 40},
        "hovermode": "closest",
        "dragmode": "zoom",
        "xaxis": {"title": {"text": "time (ms) from the trace's first event"}, "zeroline": False},
        "yaxis": {
            "tickvals": list(range(len(lanes))),
            "ticktext": [plain(lane.label) for lane in lanes],
            "range": [len(lanes) - 0.05, -0.25],
            "fixedrange": True,
            "automargin": True,
            "zeroline": False,
        },
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    }


def _rgba(color: str, opacity: float) -> str:
    """A ``#rrggbb`` colour at ``opacity``."""
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, {opacity})"
