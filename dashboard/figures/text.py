"""Trace contents in plotly labels and hovers, as the text they are.

Plotly renders a few HTML tags (``<b>``, ``<br>``, ``<a href>``...) in labels and hover text,
so a C++ kernel name such as ``kernel<float, 4>`` or an op named ``<b>x</b>`` would be mangled
or styled. Every string from a trace goes through :func:`plain` before it reaches a figure.
"""

from __future__ import annotations

from typing import Any

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
LABEL_CHARS = 60  # kernel names run to thousands of characters; the hover shows them whole


def plain(text: Any) -> str:
    """``text`` as a string with ``&``, ``<`` and ``>`` escaped for plotly."""
    return str(text).translate(_ESCAPES)


def unique_labels(names: list[str]) -> list[str]:
    """Axis labels for ``names``: cut to :data:`LABEL_CHARS` (before escaping, so no entity is
    cut in half), escaped, and numbered where two cut names would collide."""
    labels: list[str] = []
    for name in names:
        cut = name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"
        base = label = plain(cut)
        count = 2
        while label in labels:
            label, count = f"{base} ({count})", count + 1
        labels.append(label)
    return labels
