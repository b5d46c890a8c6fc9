"""One colour per category on every page, and the plotly template every figure is drawn with.

A kernel is the same orange in the Overview's breakdown, on the Timeline and in a diff; the
figure modules take their colours from here, never spell their own. The hues are Tableau 10
(as Vega ships it), whose neighbours stay apart for most colour-blind readers; the few
categories past ten take a lighter shade of their family's hue (driver beside runtime).
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

BLUE = "#4c78a8"
ORANGE = "#f58518"
RED = "#e45756"
TEAL = "#72b7b2"
GREEN = "#54a24b"
YELLOW = "#eeca3b"
PURPLE = "#b279a2"
PINK = "#ff9da6"
BROWN = "#9d755d"
GREY = "#bab0ac"
LIGHT_GREEN = "#88d27a"
LIGHT_PURPLE = "#d6a5c9"
DARK_GREY = "#79706e"
INK = "#212529"  # text: Mantine's default text colour, so figures read like the page
MUTED = "#666666"  # secondary text and lines drawn over data (group labels, step numbers)
GRID = "#e9ecef"
FONT_FAMILY = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"

#: What time is spent on, by the name the analysis (breakdown categories) and the trace
#: (event kinds) give it: CPU work is blue, GPU compute orange, copies red, and so on.
CATEGORY_COLORS: dict[str, str] = {
    "cpu_exec": BLUE,
    "cpu_op": BLUE,
    "kernel": ORANGE,
    "memcpy": RED,
    "memset": PINK,
    "communication": TEAL,
    "runtime": GREEN,
    "driver": LIGHT_GREEN,
    "dataloader": YELLOW,
    "user_annotation": PURPLE,
    "gpu_user_annotation": LIGHT_PURPLE,
    "python_function": BROWN,
    "sync": DARK_GREY,
    "other": GREY,
}
#: HTA's kernel types, in their category's colour (computation is the kernel orange).
KERNEL_TYPE_COLORS: dict[str, str] = {
    "COMPUTATION": CATEGORY_COLORS["kernel"],
    "COMMUNICATION": CATEGORY_COLORS["communication"],
    "MEMORY": CATEGORY_COLORS["memcpy"],
    "OTHER": CATEGORY_COLORS["other"],
}
#: The parts of a training step the always-on log times; data wait is the DataLoader's colour.
PHASE_COLORS: dict[str, str] = {
    "data_wait": YELLOW,
    "forward": "#499894",
    "backward": "#d37295",
    "optimizer": "#b6992d",
}
#: Roles, not categories: the two sides of a comparison and which way a change went.
BASE_COLOR = GREY
NEW_COLOR = BLUE
WORSE_COLOR = RED
BETTER_COLOR = GREEN
#: One colour per rank (a straggler is drawn in WORSE_COLOR, which no rank gets).
RANK_COLORS = (BLUE, GREEN, PURPLE, BROWN, YELLOW, TEAL, ORANGE)


def _template() -> go.layout.Template:
    template = go.layout.Template(pio.templates["plotly_white"])
    axis = {"gridcolor": GRID, "zerolinecolor": GRID, "linecolor": GRID, "automargin": True}
    template.layout.update(
        font={"family": FONT_FAMILY, "size": 13, "color": INK},
        colorway=[BLUE, ORANGE, RED, TEAL, GREEN, YELLOW, PURPLE, PINK, BROWN, GREY],
        xaxis=axis,
        yaxis=axis,
        hoverlabel={"font": {"family": FONT_FAMILY}},
        legend={"bgcolor": "rgba(255, 255, 255, 0.6)"},
        margin={"t": 30, "l": 60, "r": 20, "b": 50},
    )
    return template


#: Every dashboard figure's template: plotly_white with the page's font and this palette.
TEMPLATE = _template()


def themed_figure(data: Any = None) -> go.Figure:
    """``go.Figure(data)`` drawn with :data:`TEMPLATE`: how every dashboard figure starts.

    The template goes on each figure rather than into plotly's global default, so that
    ``profiler.show`` in a notebook leaves the user's own figures as they were.
    """
    return go.Figure(data, layout={"template": TEMPLATE})


def kernel_type_color(kernel_type: str) -> str:
    """The colour of a kernel type, or of an overlap of types (``A overlapping B``: A's)."""
    first = kernel_type.split(" overlapping ", 1)[0]
    return KERNEL_TYPE_COLORS.get(first, CATEGORY_COLORS["other"])


def rank_color(rank: int) -> str:
    """Rank ``rank``'s colour in figures with one series per rank."""
    return RANK_COLORS[rank % len(RANK_COLORS)]
