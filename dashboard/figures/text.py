"""Trace contents in plotly labels and hovers, as the text they are.

Plotly renders a few HTML tags (``<b>``, ``<br>``, ``<a href>``...) in labels and hover text,
so a C++ kernel name such as ``kernel<float, 4>`` or an op named ``<b>x</b>`` would be mangled
or styled. Every string from a trace goes through :func:`plain` before it reaches a figure.
"""

from __future__ import annotations

from typing import Any

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def plain(text: Any) -> str:
    """``text`` as a string with ``&``, ``<`` and ``>`` escaped for plotly."""
    return str(text).translate(_ESCAPES)
