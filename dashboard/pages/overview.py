"""Overview (``/?run=NAME``): step breakdown, per-step metrics, GPU, advice, environment.

Everything here is text or figures: trace contents go into html components as strings, which
Dash escapes, never as HTML.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard.app import run_href
from dashboard.components.messages import error_banner, page_data
from dashboard.data.overview import RunData, run_summary
from dashboard.data.runs import run_status
from dashboard.figures.overview import step_breakdown_figure, step_metrics_figure

dash.register_page(__name__, path="/", name="Overview", title="trainprof: overview", order=0)

GPU_METRICS = (
    ("utilization_pct", "GPU utilisation"),
    ("sm_efficiency_pct", "SM efficiency"),
    ("achieved_occupancy_pct", "Achieved occupancy"),
    ("tensor_core_pct", "Tensor-core share"),
)
ENVIRONMENT_KEYS = ("torch", "device", "cuda", "hip", "python", "hostname", "world_size")


def layout(run: str | None = None, **_query: Any) -> html.Div:
    """The overview of ``run`` (the first run when none is named)."""
    loaded = page_data(run, run_summary)
    if isinstance(loaded, html.Div):
        return loaded
    _, data = loaded
    return html.Div([html.H3(f"Run {data.name}"), *overview_sections(data)])


def overview_sections(data: RunData) -> list[Any]:
    """The page's sections for one run's data."""
    return [
        error_banner(data.errors),
        html.H4("Step-time breakdown"),
        dcc.Graph(id="step-breakdown", figure=step_breakdown_figure(data.breakdown)),
        html.H4("Per-step metrics over the whole run"),
        dcc.Graph(id="step-metrics", figure=step_metrics_figure(data.steps)),
        html.H4("GPU"),
        _gpu_section(data.summary["traces"]),
        html.H4("Recommendations"),
        _recommendations(data),
        html.H4("Environment"),
        _environment(data),
    ]


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
