"""A page's HTML is its skeleton; its data arrives through one callback (architecture.md).

Dash Pages builds its validation layout from every page's layout, called with no arguments,
and embeds it in every HTML response; a layout that drew a run would put all eight pages'
figures of the first run into each response. So a page's ``layout`` is only a body to fill
(:func:`page_layout`), and :func:`register_body` fills it from the URL: when the body appears
(a page opened, its query changed) and when the run's files change under the same view (the
shell's ``run-version`` store changes).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

import dash
from dash import Input, Output, dcc, html

#: Every page body's id ends so; the app's last-resort error handler draws its banner there.
BODY_SUFFIX = "-body"
_HIDDEN = {"display": "none"}
# Dash Pages' router writes this store (the page title) with each page it puts in.
_ROUTED = "_pages_store"


def body_id(slug: str) -> str:
    """The id of page ``slug``'s body."""
    return slug + BODY_SUFFIX


def page_layout(slug: str, placeholders: Sequence[Any] = ()) -> Callable[..., html.Div]:
    """The layout function of page ``slug``: its empty body, whatever the query.

    Args:
        slug: the page's short name; the body's id is :func:`body_id` of it.
        placeholders: empty components carrying the ids that the page's other callbacks use.
            They go only into the validation layout (a call with no query), which must name
            every id a callback refers to; a shown page gets them from its content instead.
    """

    def layout(**query: Any) -> html.Div:
        hidden = [html.Div(list(placeholders), style=_HIDDEN)] if not query else []
        # The spinner shows while the body is filled, not while a page's own callbacks run.
        filled: Any = {body_id(slug): "children"}
        body = dcc.Loading(
            html.Div(hidden, id=body_id(slug)),
            target_components=filled,
            delay_show=300,
            overlay_style={"visibility": "visible", "opacity": 0.5},
            type="dot",
        )
        return html.Div(body)

    return layout


def register_body(slug: str, content: Callable[..., Any]) -> None:
    """Fill page ``slug``'s body with ``content(**query)`` for the URL's query.

    Args:
        slug: the page's short name.
        content: draws the page from the query's values (``run``, ``file``, ``base``...).
    """

    # The shell's poll answers ``run-version`` only for a new view (a page opened, its query
    # changed) or a run whose files changed under it: both want the body drawn. So does a new
    # query, and so does each answer of the pages router: it puts in an empty body again
    # (for a new query too), maybe after the poll's answer drew the old one.
    @dash.callback(
        Output(body_id(slug), "children"),
        Input("run-version", "data"),
        Input("url", "search"),
        Input(_ROUTED, "data"),
    )
    def fill(_version: Any, search: str | None, _routed: Any) -> Any:
        # Dash Pages executes the page files again for each app it builds: the module in
        # sys.modules now holds the page's current code, as the page registry does.
        current = getattr(sys.modules.get(content.__module__), content.__name__, content)
        return current(**query_of(search))


def query_of(search: str | None) -> dict[str, Any]:
    """A URL's ``?...`` part as keyword arguments, as Dash Pages passes them to a layout: a
    key given once is a string, a key repeated is a list (which the pages refuse)."""
    parsed = parse_qs((search or "").lstrip("?"), keep_blank_values=True)
    return {key: values[0] if len(values) == 1 else values for key, values in parsed.items()}
