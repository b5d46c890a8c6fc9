"""Figures of the Runs page: the step-time distributions and the step breakdowns of the runs
picked, side by side.

Run names are directory names under the root: plotly reads ``<...>`` in labels as markup, so
each is escaped (:func:`plain`) and shows as the text it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboard.figures.overview import CATEGORY_LABELS, empty_figure, stacked_categories
from dashboard.figures.palette import themed_figure
from dashboard.figures.text import plain

PICK_RUNS = "Select runs in the table to compare their step times"
NO_STEPS = "no logged steps"
STEP_LOG_ONLY = "step log: data wait and the rest"


def step_distribution_figure(durations_us: Mapping[str, Sequence[float]]) -> go.Figure:
    """One violin per run (with its box and mean line) of its step times, in ms.

    Args:
        durations_us: each run's step durations in µs, in the order to show; a run without
            steps keeps its place and its name says it has none.

    Returns:
        One violin trace per run, named for the run, y in ms; an empty figure with a note
        when no run is given.
    """
    if not durations_us:
        return empty_figure(PICK_RUNS)
    figure = themed_figure()
    for name, durations in durations_us.items():
        label = plain(name) if durations else f"{plain(name)} ({NO_STEPS})"
        figure.add_trace(
            go.Violin(
                name=label,
                x0=label,
                y=[float(us) / 1000.0 for us in durations],
                box={"visible": True},
                meanline={"visible": True},
                points="outliers",
                hovertemplate="%{y:,.3f} ms<extra>%{x}</extra>",
            )
        )
    figure.update_layout(
        showlegend=False,
        xaxis={"title": {"text": "run"}, "type": "category"},
        yaxis={"title": {"text": "step time (ms)"}, "rangemode": "tozero"},
        margin={"t": 30},
    )
    return figure


def breakdown_figure(runs: Sequence[Any]) -> go.Figure:
    """Stacked bars, one per run: its mean step split into the Overview's breakdown categories,
    in the Overview's colours (:func:`dashboard.figures.overview.stacked_categories`).

    Args:
        runs: ``RunComparison``-like objects (``name``, ``breakdown_us``, ``breakdown_source``),
            in the order to show. A run compared on its step logs says so under its name (its
            bar holds only ``DataLoader``, the data wait, and ``Other``, the rest); one without
            steps keeps its place, empty, and says it has none.

    Returns:
        One bar trace per category, y in ms per step, the hover giving each share of the step;
        an empty figure with a note when no run is given.
    """
    if not runs:
        return empty_figure(PICK_RUNS)
    labels = [_breakdown_label(run) for run in runs]
    values = {c: [run.breakdown_us.get(c, 0.0) / 1000.0 for run in runs] for c in CATEGORY_LABELS}
    totals = [sum(values[c][at] for c in CATEGORY_LABELS) for at in range(len(runs))]
    shares = {
        c: [100.0 * v / total if total > 0 else 0.0 for v, total in zip(vs, totals, strict=True)]
        for c, vs in values.items()
    }
    return stacked_categories(
        labels,
        values,
        x_title="run",
        y_title="mean step (ms)",
        value_hover="%{y:,.3f} ms",
        shares=shares,
    )


def _breakdown_label(run: Any) -> str:
    suffix = {"step log": f" ({STEP_LOG_ONLY})", "none": f" ({NO_STEPS})"}
    return plain(run.name) + suffix.get(run.breakdown_source, "")
