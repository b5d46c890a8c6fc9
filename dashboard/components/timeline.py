"""The Timeline page's pieces: the status line, the details panel (with the flow partners of
a launch or a kernel, each with a button that jumps to it), and reading a zoom.

Everything from the trace goes in as text children, which Dash escapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dash import html

from dashboard.download import PERFETTO_HINT, download_href

_MAX_ARG_CHARS = 400
WHOLE = "whole"  # what x_window says of a reset (autorange)
JUMP = "timeline-jump"  # the ``type`` of a flow partner's jump button's id


def status_text(view: Any) -> str:
    """What the view draws: exact events, or bins and a hint to zoom in."""
    if not view.aggregated:
        return f"{view.shape_count:,} events drawn exactly"
    return (
        f"aggregated: {view.event_count:,} events in {view.shape_count:,} bins"
        f" ({view.bins_per_lane:,} per lane, {_duration(view.bin_us)} each);"
        " zoom in for exact events"
    )


def match_text(search: str, matches: int | None) -> str:
    """What a search found in the view: ``matches`` events (None: the view is aggregated)."""
    if not search.strip():
        return ""
    if matches is None:
        return f'Search "{search.strip()}": zoom in to exact events to see matches.'
    return f'{matches:,} events in view match "{search.strip()}".'


def download_links(run: str, files: Sequence[str]) -> list[Any]:
    """A download link for each of ``files`` of run ``run``, and how to open them elsewhere."""
    if not files:
        return []
    links = [
        html.A(f"download {file}", href=download_href(run, file), download=file,
               className="trace-download", style={"marginRight": "1em"})
        for file in files
    ]  # fmt: skip
    return [*links, html.Span(f"({PERFETTO_HINT})", style={"color": "#555"})]


def x_window(relayout: dict[str, Any] | None) -> tuple[float, float] | str | None:
    """The x range a relayout event asks for: ``(low, high)`` in the figure's milliseconds,
    :data:`WHOLE` for an autorange (a reset), or None when the x axis did not change."""
    if not relayout:
        return None
    if relayout.get("xaxis.autorange"):
        return WHOLE
    pair = relayout.get("xaxis.range")
    low, high = pair if isinstance(pair, list) and len(pair) == 2 else (None, None)
    low = relayout.get("xaxis.range[0]", low)
    high = relayout.get("xaxis.range[1]", high)
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
        return None
    return (float(min(low, high)), float(max(low, high)))


def details_panel(details: Any, origin_us: float) -> html.Div:
    """The clicked event: what it is, its args, its stack and the work linked to it.

    Args:
        details: an ``EventDetails``.
        origin_us: the trace's first event, so times read as on the figure's axis.
    """
    event = details.event
    facts = [
        ("kind", f"{event.kind} (category {details.cat})"),
        ("lane", event.lane),
        ("start", f"{(event.start_us - origin_us) / 1000:,.4f} ms"),
        ("duration", _duration(event.dur_us)),
        *((key, _short(value)) for key, value in details.args.items()),
    ]
    parts: list[Any] = [html.H5(event.name, id="event-name"), _facts(facts)]
    parts += _refs("Stack (outermost first)", "event-stack", details.stack, origin_us)
    launched = details.launched
    title = f"GPU work it launched ({details.launched_count:,})"
    if details.launched_count > len(launched):
        title += f", the first {len(launched):,}"
    parts += _refs(title, "event-launched", launched, origin_us)
    parts += _refs("Launched by", "event-launched-by", details.launched_by, origin_us)
    if details.launch_op is not None:
        parts += _refs("CPU op of the launch", "event-launch-op", [details.launch_op], origin_us)
    parts += _flow_partners(details, origin_us)
    return html.Div(parts)


def flow_partners(details: Any) -> list[Any]:
    """The events at the other end of the clicked event's flows (``EventRef``), in order."""
    event = details.event
    return [to if start.row == event.row else start for start, to in details.flows]


def _flow_partners(details: Any, origin_us: float) -> list[Any]:
    """Each flow partner named, with a button that jumps to it (it becomes the clicked one)."""
    partners = flow_partners(details)
    if not partners:
        return []
    launches = details.flows[0][0].row == details.event.row
    title = "Flow: to its GPU work" if launches else "Flow: from its launch"
    items = [
        html.Li(
            [
                html.Button("jump to it", id={"type": JUMP, "row": ref.row},
                            className="flow-jump", style={"marginRight": "0.5em"}),
                _ref_text(ref, origin_us),
            ]
        )
        for ref in partners
    ]  # fmt: skip
    return [html.H6(title), html.Ol(items, id="event-flow")]


def _facts(facts: Sequence[tuple[str, str]]) -> html.Dl:
    items: list[Any] = []
    for key, value in facts:
        items += [html.Dt(key, style={"fontWeight": "bold"}), html.Dd(str(value))]
    return html.Dl(items, style={"display": "grid", "gridTemplateColumns": "max-content auto"})


def _refs(title: str, element_id: str, refs: Sequence[Any], origin_us: float) -> list[Any]:
    if not refs:
        return []
    items = [html.Li(_ref_text(ref, origin_us)) for ref in refs]
    return [html.H6(title), html.Ol(items, id=element_id)]


def _ref_text(ref: Any, origin_us: float) -> str:
    return (
        f"{ref.name} ({ref.kind}, {ref.lane}, at {(ref.start_us - origin_us) / 1000:,.4f} ms,"
        f" {_duration(ref.dur_us)})"
    )


def _duration(micros: float) -> str:
    if micros >= 1000:
        return f"{micros / 1000:,.3f} ms"
    return f"{micros:,.3f} µs"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_ARG_CHARS else text[: _MAX_ARG_CHARS - 1] + "…"
