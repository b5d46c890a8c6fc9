"""Figures of the Steps page: the always-on step logs over the whole run, in ms, MiB/GiB and %.

Each takes step-log records (``meta/steps.<rank>.jsonl`` lines, each with its ``rank``) and
draws one line per rank (names get `` (rank N)`` when there are several). A value no step
carries draws no trace; a figure with nothing to draw says what was not sampled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.overview import CATEGORY_COLORS, empty_figure
from dashboard.figures.palette import PHASE_COLORS, WORSE_COLOR, themed_figure

US_PER_MS = 1000.0
#: The most points a line sends, and bars the phase figure draws: beyond, consecutive steps are
#: pooled (a 100k-step run's line is 2,000 means of 50 steps: ~100 KB, not 3 MB).
MAX_POINTS = 2_000
MAX_BARS = 300
MIB = 1024**2
GIB = 1024**3
NO_STEPS = "No steps logged yet"
NO_PHASES = "No step has its forward/backward/optimizer split timed yet"
NOT_SAMPLED = "not sampled"
SLOW_STEP = "slow step"
SLOW_COLOR = WORSE_COLOR
#: The phase split's parts, as the step log names them, with the label and the colour of each
#: (the palette's phases: data wait is the DataLoader's colour, the rest "other").
PHASES: tuple[tuple[str, str, str], ...] = (
    ("data_wait_us", "data wait", PHASE_COLORS["data_wait"]),
    ("forward_us", "forward", PHASE_COLORS["forward"]),
    ("backward_us", "backward", PHASE_COLORS["backward"]),
    ("optimizer_us", "optimizer", PHASE_COLORS["optimizer"]),
    ("rest_us", "rest of the step", CATEGORY_COLORS["other"]),
)
_PHASE_KEYS = ("forward_us", "backward_us", "optimizer_us")
_GPU_UTIL = re.compile(r"^gpu(\d+)_util_pct$")
_GPU_MEMORY = re.compile(r"^gpu(\d+)_memory_used_bytes$")


def step_time_figure(
    steps: Sequence[Mapping[str, Any]], slow: Sequence[Mapping[str, Any]] = ()
) -> go.Figure:
    """Step time and data wait per step in ms, the slow steps marked on the step-time line.

    Args:
        steps: step-log records with ``step``, ``dur_us``, optionally ``data_wait_us``.
        slow: slow steps (``rank``, ``step``, ``dur_us``, ``median_us``, ``ratio``).
    """
    by_rank = _by_rank(steps)
    if not by_rank:
        return empty_figure(NO_STEPS)
    figure = themed_figure()
    for rank, rows in by_rank.items():
        suffix = _suffix(rank, by_rank)
        for key, name, dash in (
            ("dur_us", "step time", None),
            ("data_wait_us", "data wait", "dot"),
        ):
            xs, ys, pooled = _thinned(*_points(rows, key, 1 / US_PER_MS))
            if xs:
                line = _line(xs, ys, name + suffix + pooled, "%{y:,.2f} ms", dash=dash)
                figure.add_trace(line)
    if slow:
        figure.add_trace(_slow_markers(slow, len(by_rank) > 1))
    return _layout(figure, "time (ms)")


def phase_figure(steps: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Stacked bars of each sampled step: data wait, forward, backward, optimizer and the rest.

    Only the steps whose split was timed (``forward_us`` etc. not None: every step of a deep
    window and a sample of the others) have a bar; ``rest of the step`` is the step time less
    the parts (never below 0). Beyond :data:`MAX_BARS` timed steps, a bar is the mean of
    consecutive ones of a rank (``steps a-b``).
    """
    timed = [row for row in steps if any(row.get(key) is not None for key in _PHASE_KEYS)]
    if not timed:
        return empty_figure(NO_PHASES)
    timed.sort(key=lambda row: (int(row.get("rank", 0)), row["step"]))
    several = len({int(row.get("rank", 0)) for row in timed}) > 1
    groups = _bar_groups(timed)
    labels = [_bar_label(group, several) for group in groups]
    figure = themed_figure()
    for key, name, color in PHASES:
        values = [float(np.mean([_part(row, key) for row in g])) / US_PER_MS for g in groups]
        figure.add_trace(
            go.Bar(x=labels, y=values, name=name, marker_color=color,
                   hovertemplate=f"{name}: %{{y:,.2f}} ms<extra>%{{x}}</extra>")
        )  # fmt: skip
    figure.update_layout(barmode="stack", xaxis={"type": "category"})
    return _layout(figure, "time (ms)", x_title="sampled step")


def memory_figure(steps: Sequence[Mapping[str, Any]], device: str | None) -> go.Figure:
    """Memory at each step's end and its peak within the step, in MiB or GiB.

    Args:
        steps: records with ``memory_bytes`` and ``peak_memory_bytes``.
        device: ``cuda`` (the allocator's allocated bytes), else the process's RSS.
    """
    what = "CUDA allocated" if device == "cuda" else "RSS"
    series = (("memory_bytes", what), ("peak_memory_bytes", f"peak {what} in the step"))
    return _lines(steps, series, _bytes_axis(steps, [key for key, _ in series]))


def system_figure(steps: Sequence[Mapping[str, Any]]) -> go.Figure:
    """CPU % of the process (100 = one core busy) and each GPU's utilisation %, per step."""
    gpus = _sampled_keys(steps, _GPU_UTIL)
    series = (("cpu_pct", "CPU %"), *((key, f"GPU {index} utilisation %") for key, index in gpus))
    return _lines(steps, series, ("%", 1.0), note=f"CPU and GPU utilisation: {NOT_SAMPLED}")


def gpu_memory_figure(steps: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Each GPU's used memory as NVML reports it (the whole device, every process)."""
    series = [(key, f"GPU {index} memory used") for key, index in _sampled_keys(steps, _GPU_MEMORY)]
    return _lines(steps, series, _bytes_axis(steps, [key for key, _ in series]),
                  note=f"GPU memory: {NOT_SAMPLED}")  # fmt: skip


def gpu_sampled(steps: Sequence[Mapping[str, Any]]) -> tuple[bool, bool]:
    """Whether any step carries GPU utilisation, and whether any carries GPU memory."""
    return bool(_sampled_keys(steps, _GPU_UTIL)), bool(_sampled_keys(steps, _GPU_MEMORY))


def memory_unit(largest_bytes: float) -> tuple[str, float]:
    """``("GiB", 2**30)`` from 1 GiB up, else ``("MiB", 2**20)``."""
    return ("GiB", GIB) if largest_bytes >= GIB else ("MiB", MIB)


def _lines(
    steps: Sequence[Mapping[str, Any]],
    series: Sequence[tuple[str, str]],
    unit: tuple[str, float],
    note: str = NO_STEPS,
) -> go.Figure:
    """One line per rank and series key, values divided by ``unit``'s divisor."""
    label, divisor = unit
    figure = themed_figure()
    by_rank = _by_rank(steps)
    for rank, rows in by_rank.items():
        for key, name in series:
            xs, ys, pooled = _thinned(*_points(rows, key, 1 / divisor), peak=key.startswith("peak"))
            if xs:
                name_shown = name + _suffix(rank, by_rank) + pooled
                figure.add_trace(_line(xs, ys, name_shown, f"%{{y:,.1f}} {label}"))
    if not figure.data:
        return empty_figure(note)
    return _layout(figure, label)


def _line(
    xs: list[Any], ys: list[Any], name: str, value: str, dash: str | None = None
) -> go.Scatter:
    hover = f"step %{{x}}: {value}<extra>{name}</extra>"
    return go.Scatter(x=xs, y=ys, name=name, mode="lines", line={"dash": dash}, hovertemplate=hover)


def _slow_markers(slow: Sequence[Mapping[str, Any]], several: bool) -> go.Scatter:
    text = [
        f"{'rank ' + str(s['rank']) + ' ' if several else ''}step {s['step']}: "
        f"{s['dur_us'] / US_PER_MS:,.2f} ms, {s['ratio']:.1f}x the median "
        f"({s['median_us'] / US_PER_MS:,.2f} ms)"
        for s in slow
    ]
    return go.Scatter(
        x=[s["step"] for s in slow],
        y=[s["dur_us"] / US_PER_MS for s in slow],
        name=SLOW_STEP,
        mode="markers",
        marker={"color": SLOW_COLOR, "size": 11, "symbol": "x"},
        text=text,
        hovertemplate="%{text}<extra>slow step</extra>",
    )


def _layout(figure: go.Figure, y_title: str, x_title: str = "step") -> go.Figure:
    figure.update_layout(
        xaxis={"title": {"text": x_title}},
        yaxis={"title": {"text": y_title}, "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.25},
        margin={"t": 30},
        uirevision="steps",  # a redraw with new steps keeps the user's zoom
    )
    return figure


def _by_rank(steps: Sequence[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    by_rank: dict[int, list[Mapping[str, Any]]] = {}
    for row in steps:
        by_rank.setdefault(int(row.get("rank", 0)), []).append(row)
    return {rank: sorted(rows, key=lambda r: r["step"]) for rank, rows in sorted(by_rank.items())}


def _thinned(
    xs: list[Any], ys: list[Any], *, peak: bool = False
) -> tuple[list[Any], list[Any], str]:
    """At most :data:`MAX_POINTS` points: each the mean (``peak``: the highest) of consecutive
    steps, at the first step's x; and what to add to the line's name when steps were pooled."""
    count = len(xs)
    if count <= MAX_POINTS:
        return xs, ys, ""
    size = -(-count // MAX_POINTS)
    starts = np.arange(0, count, size)
    values = np.asarray(ys, dtype=float)
    if peak:
        pooled, how = np.maximum.reduceat(values, starts), "highest"
    else:
        pooled, how = np.add.reduceat(values, starts) / np.diff(np.append(starts, count)), "mean"
    return [xs[i] for i in starts], pooled.tolist(), f" ({how} of {size} steps)"


def _bar_groups(timed: list[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The timed steps in bars: one each, or runs of consecutive ones of a rank."""
    size = -(-len(timed) // MAX_BARS)
    groups: list[list[Mapping[str, Any]]] = []
    for row in timed:
        last = groups[-1] if groups else None
        if last and len(last) < size and last[0].get("rank", 0) == row.get("rank", 0):
            last.append(row)
        else:
            groups.append([row])
    return groups


def _bar_label(group: Sequence[Mapping[str, Any]], several: bool) -> str:
    rank = f"rank {group[0].get('rank', 0)} " if several else ""
    first, last = group[0]["step"], group[-1]["step"]
    return f"{rank}step {first}" if len(group) == 1 else f"{rank}steps {first}-{last}"


def _points(rows: Sequence[Mapping[str, Any]], key: str, scale: float) -> tuple[list[Any], ...]:
    points = [(row["step"], row[key] * scale) for row in rows if row.get(key) is not None]
    return tuple(map(list, zip(*points, strict=True))) if points else ([], [])


def _suffix(rank: int, by_rank: Mapping[int, Any]) -> str:
    return f" (rank {rank})" if len(by_rank) > 1 else ""


def _part(row: Mapping[str, Any], key: str) -> float:
    if key != "rest_us":
        return float(row.get(key) or 0.0)
    parts = sum(float(row.get(k) or 0.0) for k, _, _ in PHASES if k != "rest_us")
    return max(0.0, float(row["dur_us"]) - parts)


def _sampled_keys(
    steps: Sequence[Mapping[str, Any]], pattern: re.Pattern[str]
) -> list[tuple[str, int]]:
    """The record keys matching ``pattern`` that some step carries, by device index."""
    found = {key: match for row in steps for key in row if (match := pattern.match(key))}
    return sorted(((key, int(match.group(1))) for key, match in found.items()), key=lambda k: k[1])


def _bytes_axis(steps: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> tuple[str, float]:
    values = [float(row[key]) for row in steps for key in keys if row.get(key) is not None]
    return memory_unit(max(values, default=0.0))
