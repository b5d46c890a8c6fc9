"""Key numbers as a row of small cards (Mantine's Paper): the figure first, its label above.

Values arrive formatted (units included) and go in as text, which Dash escapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dash_mantine_components as dmc
from dash import html


@dataclass(frozen=True)
class KeyNumber:
    """One card: ``label`` (``mean step``) over ``value`` (``26.49 ms``)."""

    label: str
    value: str


def key_numbers(element_id: str, numbers: Sequence[KeyNumber]) -> html.Div:
    """The cards of ``numbers``, in order, wrapping onto a new row when the page is narrow."""
    cards = [
        dmc.Paper(
            [
                dmc.Text(number.label, className="key-number-label"),
                dmc.Text(number.value, className="key-number-value"),
            ],
            withBorder=True,
            className="key-number",
        )
        for number in numbers
    ]
    return html.Div(cards, id=element_id, className="key-numbers")
