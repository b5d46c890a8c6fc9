"""Memory (``/memory?run=NAME``): allocated bytes over time, the peak, and memory per module.

One line per trace file on the device ``profiler.analysis.memory`` picks for it; the peak is the
highest of the files' peaks, marked on the chart and named in text with the module and op that
were running. Module paths and op names are text components, which Dash escapes.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard.components.grid import Column, data_grid
from dashboard.components.messages import (
    error_banner,
    notice,
    page_data,
)
from dashboard.components.page import page_layout, register_body
from dashboard.data.memory import run_memory
from dashboard.figures.memory import NO_SAMPLES, format_bytes, memory_figure

dash.register_page(__name__, path="/memory", name="Memory", title="trainprof: memory", order=4)

NO_MEMORY = NO_SAMPLES
COLUMNS = (
    Column("trace", "trace"),
    Column("path", "path", wide=True),
    Column("class_name", "class"),
    Column("calls", "calls", "count"),
    Column("delta_bytes", "mean Δ bytes", "bytes"),
    Column("peak_bytes", "peak bytes", "bytes"),
    Column("peak_delta_bytes", "peak Δ bytes", "bytes"),
    Column("backward_delta_bytes", "backward mean Δ bytes", "bytes"),
    Column("backward_peak_delta_bytes", "backward peak Δ bytes", "bytes"),
    Column("device", "device"),
)


def content(run: str | None = None, **_query: Any) -> html.Div:
    """The memory of ``run`` (the first run when none is named)."""
    loaded = page_data(run, run_memory)
    if isinstance(loaded, html.Div):
        return loaded
    run, memory = loaded
    heading = [html.H3(f"Memory of run {run}"), error_banner(memory.errors)]
    if not memory.series:
        return html.Div([*heading, notice("no-memory", NO_MEMORY)])
    return html.Div(
        [
            *heading,
            html.P(peak_summary(memory.peak), id="memory-peak"),
            dcc.Graph(id="memory-timeline", figure=memory_figure(memory.series, memory.peak)),
            html.H4("Memory per module, forward and backward"),
            data_grid("module-memory-table", COLUMNS, memory.modules),
        ]
    )


layout = page_layout("memory")
register_body("memory", content)


def peak_summary(peak: dict[str, Any] | None) -> str:
    """One sentence on the peak: bytes, device, file, time, module, op, share of capacity."""
    if peak is None:
        return "No peak: no file has samples on its device."
    text = (
        f"Peak: {format_bytes(peak['allocated_bytes'])} allocated on {peak['device']}"
        f" at {peak['t_ms']:,.1f} ms in {peak['trace']}"
    )
    if peak.get("capacity_pct") is not None:
        text += f" ({peak['capacity_pct']:.1f}% of the device's memory)"
    if peak.get("module") is not None:
        text += f", during module {peak['module']} ({peak['module_class']}, {peak['module_phase']})"
    else:
        text += ", outside any module"
    text += f", op {peak['op']}." if peak.get("op") else ", outside any op."
    return text
