"""Figures of the Runs page: the step-time distributions of the runs picked, side by side.

Run names are directory names under the root: plotly reads ``<...>`` in labels as markup, so
each is escaped (:func:`plain`) and shows as the text it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from dashboard.figures.overview import empty_figure
from dashboard.figures.palette import themed_figure
from dashboard.figures.text import plain

PICK_RUNS = "Select runs in the table to compare their step times"
NO_STEPS = "no logged steps"


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
