"""Overview (``/?run=NAME``): step breakdown, per-step metrics, GPU, advice, environment.

Everything here is text or figures: trace contents go into html components as strings, which
Dash escapes, never as HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dash
from dash import Input, Output, State, dcc, html

from dashboard.app import run_href
from dashboard.components.cards import KeyNumber, key_numbers
from dashboard.components.messages import error_banner, page_data
from dashboard.components.page import page_layout, register_body
from dashboard.data.fetch import Problem, fetch
from dashboard.data.live import StepChunk, new_steps
from dashboard.data.overview import RunData, run_summary
from dashboard.data.runs import current_root, run_status
from dashboard.figures.overview import (
    step_breakdown_figure,
    step_metrics_extension,
    step_metrics_figure,
    step_series,
)

dash.register_page(__name__, path="/", name="Overview", title="trainprof: overview", order=0)

GPU_METRICS = (
    ("utilization_pct", "GPU utilisation"),
    ("sm_efficiency_pct", "SM efficiency"),
    ("achieved_occupancy_pct", "Achieved occupancy"),
    ("tensor_core_pct", "Tensor-core share"),
)
ENVIRONMENT_KEYS = ("torch", "device", "cuda", "hip", "python", "hostname", "world_size")


def content(run: str | None = None, **_query: Any) -> html.Div:
    """The overview of ``run`` (the first run when none is named)."""
    loaded = page_data(run, lambda root, name: (run_summary(root, name), new_steps(root, name)))
    if isinstance(loaded, html.Div):
        return loaded
    _, (data, steps) = loaded
    return html.Div([html.H3(f"Run {data.name}"), *overview_sections(data, steps)])


layout = page_layout("overview", [dcc.Graph(id="step-metrics"), dcc.Store(id="step-cursor")])
register_body("overview", content)


def step_cursor(run: str, rows: Sequence[Mapping[str, Any]], steps: StepChunk | None) -> Any:
    """What the client has of the step logs: the run, the offset read to in each log, the
    per-step figure's traces (:func:`series_ids`) and how many points each has."""
    series = step_series(rows)
    return {
        "run": run,
        "offsets": {} if steps is None else steps.offsets,
        "series": [f"{rank}:{key}" for rank, key in series],
        "points": [len(xs) for xs, _ in series.values()],
    }


@dash.callback(
    Output("step-metrics", "extendData"),
    Output("step-metrics", "figure"),
    Output("step-cursor", "data"),
    Input("refresh", "n_intervals"),
    State("step-cursor", "data"),
    prevent_initial_call=True,
)
def extend_steps(_tick: int | None, cursor: Any) -> tuple[Any, Any, Any]:
    """Send the steps logged since the last poll, and only those: the server reads the logs
    from the offsets in ``cursor`` on, and the figure is extended, not sent again. A log
    rewritten, or a new rank or value, draws the figure again from the whole logs."""
    nothing = (dash.no_update,) * 3
    if not isinstance(cursor, dict) or not isinstance(cursor.get("run"), str):
        return nothing
    run, offsets = cursor["run"], cursor.get("offsets")
    offsets = (
        {k: v for k, v in offsets.items() if type(v) is int} if isinstance(offsets, dict) else {}
    )
    chunk = fetch(current_root(), run, lambda root, name: new_steps(root, name, offsets))
    if isinstance(chunk, Problem):  # the page's banner says why when it is drawn again
        return nothing
    shown = [s for s in cursor.get("series") or [] if isinstance(s, str)]
    extension = None if chunk.restarted else step_metrics_extension(chunk.rows, shown)
    if extension is None:
        whole = fetch(current_root(), run, new_steps)
        if isinstance(whole, Problem):
            return nothing
        redrawn = step_metrics_figure(whole.rows)
        return dash.no_update, redrawn, step_cursor(run, whole.rows, whole)
    update, indices = extension
    if not indices:
        moved = chunk.offsets != offsets
        return (
            dash.no_update,
            dash.no_update,
            {**cursor, "offsets": chunk.offsets} if moved else dash.no_update,
        )
    points = list(cursor.get("points") or [0] * len(shown))
    for index, xs in zip(indices, update["x"], strict=True):
        points[index] += len(xs)
    return (update, indices), dash.no_update, {**cursor, "offsets": chunk.offsets, "points": points}


def overview_sections(data: RunData, steps: StepChunk | None = None) -> list[Any]:
    """The page's sections for one run's data, and its step logs as read now (the per-step
    figure is drawn from them, then extended with each poll's new lines: :func:`extend_steps`);
    without them, from ``data.steps``."""
    rows = data.steps if steps is None else steps.rows
    return [
        _verdict(data),
        error_banner(data.errors),
        *_triggers(data),
        html.H4("Step-time breakdown"),
        dcc.Graph(id="step-breakdown", figure=step_breakdown_figure(data.breakdown)),
        html.H4("Per-step metrics over the whole run"),
        dcc.Graph(id="step-metrics", figure=step_metrics_figure(rows)),
        dcc.Store(id="step-cursor", data=step_cursor(data.name, rows, steps)),
        html.H4("GPU"),
        _gpu_section(data.summary["traces"]),
        html.H4("Recommendations"),
        _recommendations(data),
        html.H4("Environment"),
        _environment(data),
    ]


def _verdict(data: RunData) -> html.Div:
    """The answer first: the bottleneck to fix, its saving per step and the action, with a link
    to the page that shows it; or that nothing stands out."""
    verdict = data.verdict
    parts: list[Any] = [html.H4("Verdict"), html.P(verdict.text, className="verdict-text")]
    parts.append(key_numbers("verdict-numbers", _verdict_numbers(verdict)))
    if verdict.method:
        parts.append(html.P(f"Saving estimated as {verdict.method}", className="verdict-method"))
    if verdict.page:
        names = {page["path"]: page["name"] for page in dash.page_registry.values()}
        label = f"See the evidence on the {names.get(verdict.page, verdict.page)} page"
        href = run_href(verdict.page, data.name)
        parts.append(dcc.Link(label, href=href, id="verdict-evidence"))
    return html.Div(parts, id="verdict", className=f"verdict verdict-{verdict.severity or 'none'}")


def _verdict_numbers(verdict: Any) -> list[KeyNumber]:
    """The verdict's figures as cards: the mean step, and the saving where one is estimated."""
    numbers = [
        ("mean step", _ms(verdict.step_mean_us)),
        ("saving per step", _ms(verdict.saving_us_per_step)),
        ("share of the step", None if verdict.saving_pct is None else f"{verdict.saving_pct:.1f}%"),
        ("severity", verdict.severity),
    ]
    return [KeyNumber(label, value) for label, value in numbers if value is not None]


def _ms(value_us: float | None) -> str | None:
    return None if value_us is None else f"{value_us / 1000:,.2f} ms"


def _triggers(data: RunData) -> list[html.P]:
    """What opened the run's triggered windows, one line (none for scheduled windows)."""
    if not data.triggers:
        return []
    return [html.P("; ".join(data.triggers), id="window-triggers")]


def _gpu_section(traces: list[dict[str, Any]]) -> html.Div:
    with_gpu = [t for t in traces if t.get("gpu")]
    if not with_gpu:
        return html.Div("CPU-only run: no GPU activity in these traces.", id="gpu-metrics")
    header = html.Tr([html.Th("trace"), html.Th("rank"), *(html.Th(n) for _, n in GPU_METRICS)])
    rows = [
        html.Tr(
            [
                html.Td(_file_name(t)),
                html.Td(str(t["rank"])),
                *(html.Td(_pct(t["gpu"].get(key))) for key, _ in GPU_METRICS),
            ]
        )
        for t in with_gpu
    ]
    return html.Div(html.Table([html.Thead(header), html.Tbody(rows)]), id="gpu-metrics")


def _recommendations(data: RunData) -> html.Div:
    files = len(data.summary["traces"])
    items = [
        html.Li(
            [
                html.Strong(f"[{rec['severity']}] "),
                html.Span(str(rec["message"]), className="rec-message"),
                html.Div(f"evidence: {_evidence(rec)}", className="rec-evidence"),
                html.Div(_where(rec, files), className="rec-where"),
                dcc.Link(
                    f"show on {rec.get('page', '/')}",
                    href=run_href(str(rec.get("page") or "/"), data.name),
                    className="rec-link",
                ),
            ]
        )
        for rec in data.recommendations
    ]
    if not items:
        return html.Div("No bottleneck found.", id="recommendations")
    return html.Div(html.Ul(items), id="recommendations")


def _environment(data: RunData) -> html.Div:
    env = data.environment
    facts = {key: env.get(key) for key in ENVIRONMENT_KEYS if env.get(key) is not None}
    traces = data.summary["traces"]
    facts.setdefault("device", ", ".join(sorted({str(t["device"]) for t in traces})) or None)
    facts["ranks"] = ", ".join(str(r) for r in sorted({t["rank"] for t in traces})) or None
    # Read now, not from the cached data: a stopped heartbeat changes no file.
    facts["status"] = run_status(data.run_meta)
    rows = [
        html.Tr([html.Th(key), html.Td(str(value))])
        for key, value in facts.items()
        if value is not None
    ]
    return html.Div(html.Table(html.Tbody(rows)), id="environment")


def _where(rec: dict[str, Any], files: int) -> str:
    seen = len(rec["seen_in"])
    ranks = ", ".join(str(rank) for rank in rec["ranks"])
    worst = f"worst in {_file_name(rec)}, rank {rec['rank']}"
    return f"seen in {seen} of {files} trace file(s), rank(s) {ranks}; {worst}"


def _file_name(trace: dict[str, Any]) -> str:
    return str(trace["path"]).replace("\\", "/").rsplit("/", 1)[-1]


def _evidence(rec: dict[str, Any]) -> str:
    evidence = rec.get("evidence")
    if not isinstance(evidence, dict):
        return str(evidence)
    ranges = rec.get("evidence_range") or {}
    return ", ".join(_figure(key, value, ranges.get(key)) for key, value in evidence.items())


def _figure(key: str, value: Any, span: list[float] | None) -> str:
    if span is None or span[0] == span[1]:
        return f"{key}={value}"
    return f"{key}={value} (from {span[0]:g} to {span[1]:g} over the files)"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"
