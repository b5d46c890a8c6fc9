"""Figures of the Memory and Modules pages: memory over time with its peak, and the module tree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboard.figures.overview import empty_figure
from dashboard.figures.palette import WORSE_COLOR, themed_figure
from dashboard.figures.text import plain

NO_SAMPLES = "No memory samples in this run"
NO_MODULES = "No nn.Module ranges in this run"
PEAK = "peak"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(value: float) -> str:
    """``value`` bytes in binary units, e.g. ``5.1 MiB``."""
    size, unit = float(value), _UNITS[0]
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            break
        size /= 1024
    return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"


def peak_hover(peak: Mapping[str, Any]) -> str:
    """The peak marker's hover text: bytes, device, module and op running then."""
    module = peak.get("module")
    where = "no module" if module is None else f"{module} ({peak.get('module_class')}"
    if module is not None:
        where += f", {peak.get('module_phase')})"
    op = peak.get("op") or "no op"
    return (
        f"peak {format_bytes(peak['allocated_bytes'])} on {plain(peak['device'])}"
        f"<br>module: {plain(where)}<br>op: {plain(op)}"
    )


def memory_figure(series: Sequence[Any], peak: Mapping[str, Any] | None) -> go.Figure:
    """Allocated (and reserved, dashed) bytes over time, one line per trace file, and the peak.

    Args:
        series: :class:`dashboard.data.MemorySeries`-like objects (``trace``, ``device``,
            ``t_ms``, ``allocated_bytes``, ``reserved_bytes`` or None).
        peak: the run's peak (``trace``, ``t_ms``, ``allocated_bytes``, ``device``, ``module``,
            ``module_class``, ``module_phase``, ``op``), or None.

    Returns:
        One allocated line per series, one reserved line per series that has reserved bytes,
        then one marker trace named :data:`PEAK` when ``peak`` is given; an empty figure with
        :data:`NO_SAMPLES` when there are no series.
    """
    if not series:
        return empty_figure(NO_SAMPLES)
    figure = themed_figure()
    for line in series:
        label = f"{line.trace} ({line.device})"
        figure.add_trace(
            go.Scatter(
                x=list(line.t_ms),
                y=list(line.allocated_bytes),
                mode="lines",
                name=f"allocated: {label}",
                line={"shape": "hv"},
                hovertemplate="%{x:,.2f} ms<br>%{y:,.0f} B<extra>allocated</extra>",
            )
        )
        if line.reserved_bytes is not None:
            figure.add_trace(
                go.Scatter(
                    x=list(line.t_ms),
                    y=list(line.reserved_bytes),
                    mode="lines",
                    name=f"reserved: {label}",
                    line={"shape": "hv", "dash": "dash"},
                    hovertemplate="%{x:,.2f} ms<br>%{y:,.0f} B<extra>reserved</extra>",
                )
            )
    if peak is not None:
        figure.add_trace(
            go.Scatter(
                x=[peak["t_ms"]],
                y=[peak["allocated_bytes"]],
                mode="markers",
                name=PEAK,
                marker={"size": 12, "symbol": "star", "color": WORSE_COLOR},
                hovertext=[peak_hover(peak)],
                hoverinfo="text",
            )
        )
    figure.update_layout(
        xaxis={"title": {"text": "time from window start (ms)"}},
        yaxis={"title": {"text": "bytes"}},
        legend={"orientation": "h", "y": -0.25},
        margin={"t": 30},
        height=450,
    )
    return figure


def module_tree_values(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """Each module's forward plus backward time, raised where needed to its children's sum.

    Plotly's ``branchvalues="total"`` drops a parent smaller than its children, which timing
    jitter can produce; a parent is never shown smaller than what its children add up to.
    """
    ids = [str(r["path"]) for r in rows]
    values = {
        p: float(r["forward_us"]) + float(r["backward_us"]) for p, r in zip(ids, rows, strict=True)
    }
    parents = {p: _parent(r, values) for p, r in zip(ids, rows, strict=True)}
    depth = {p: _depth(p, parents) for p in ids}
    children: dict[str, float] = {}
    for path in sorted(ids, key=lambda p: -depth[p]):
        values[path] = max(values[path], children.get(path, 0.0))
        if parents[path]:
            children[parents[path]] = children.get(parents[path], 0.0) + values[path]
    return [values[p] for p in ids]


def module_tree_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """A treemap of the module tree, sized by forward plus backward time.

    Args:
        rows: ``path``, ``parent`` ("" for roots), ``class_name``, ``forward_us``,
            ``backward_us``.

    Returns:
        One treemap trace: ids the paths, parents the parent paths ("" where the parent is not
        a row), values :func:`module_tree_values`; an empty figure with :data:`NO_MODULES`
        when there are no rows.
    """
    if not rows:
        return empty_figure(NO_MODULES)
    ids = [str(r["path"]) for r in rows]
    known = set(ids)
    figure = themed_figure(
        go.Treemap(
            ids=ids,
            labels=[plain(path) for path in ids],
            parents=[_parent(r, known) for r in rows],
            values=module_tree_values(rows),
            customdata=[
                [
                    plain(r["path"]),
                    plain(r["class_name"]),
                    float(r["forward_us"]),
                    float(r["backward_us"]),
                ]
                for r in rows
            ],
            branchvalues="total",
            hovertemplate=(
                "%{customdata[0]} (%{customdata[1]})<br>forward %{customdata[2]:,.1f} µs"
                "<br>backward %{customdata[3]:,.1f} µs<extra></extra>"
            ),
        )
    )
    figure.update_layout(margin={"t": 30, "l": 10, "r": 10, "b": 10}, height=550)
    return figure


def _parent(row: Mapping[str, Any], known: Any) -> str:
    parent = str(row.get("parent") or "")
    return parent if parent in known else ""


def _depth(path: str, parents: Mapping[str, str]) -> int:
    depth, seen = 0, {path}
    while parents.get(path):
        path = parents[path]
        if path in seen:  # a cycle: malformed input, stop rather than loop
            break
        seen.add(path)
        depth += 1
    return depth
