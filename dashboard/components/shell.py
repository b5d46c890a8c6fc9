"""The frame around every page: a header with the run picker, a navbar of pages, the page.

Built from dash-mantine-components (Mantine's AppShell, NavLink, Alert, Paper), whose CSS
ships inside its JavaScript bundle and is served by the app itself: nothing loads from a
CDN, so the dashboard looks the same offline and under the app's content security policy.
Pages draw plain Dash components inside it; Mantine's theme gives them the font and colours,
and ``assets/trainprof.css`` (served by Dash from the package) styles the plain HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dash_mantine_components as dmc
from dash import dcc, html

from dashboard.figures.palette import FONT_FAMILY

HEADER_PX = 56
NAVBAR_PX = 168
#: Mantine's theme: the figures' font, and Mantine's blue for links and the active page.
THEME: dict[str, Any] = {
    "fontFamily": FONT_FAMILY,
    "primaryColor": "blue",
    "defaultRadius": "md",
    "headings": {"fontFamily": FONT_FAMILY},
}


def app_shell(header: Sequence[Any], nav: Any, main: Sequence[Any]) -> dmc.MantineProvider:
    """Mantine's provider around an AppShell: ``header`` in a row at the top, ``nav`` in the
    navbar on the left, ``main`` beside it.

    Below Mantine's ``sm`` breakpoint (a phone) the navbar folds away; at 1280 px it leaves
    the page about 1,080 px, which every page fits without scrolling sideways.
    """
    return dmc.MantineProvider(
        dmc.AppShell(
            [
                dmc.AppShellHeader(
                    dmc.Group(list(header), h="100%", px="md", gap="sm", wrap="nowrap")
                ),
                dmc.AppShellNavbar(nav, p="xs"),
                dmc.AppShellMain(list(main), className="page"),
            ],
            header={"height": HEADER_PX},
            navbar={"width": NAVBAR_PX, "breakpoint": "sm"},
            padding="md",
        ),
        theme=THEME,
    )


def brand() -> dmc.Title:
    """The app's name, top left: the ``h2`` over the pages' ``h3`` titles, as it always was."""
    return dmc.Title("trainprof", order=2, fz="xl", className="brand")


def nav_link(label: str, href: str) -> dmc.NavLink:
    """A page's entry in the navbar: an ``<a>`` to ``href``, marked while its page is shown.

    Mantine follows it without reloading the page, as ``dcc.Link`` does.
    """
    return dmc.NavLink(label=label, href=href, active="exact", className="nav-link")


def scheme_toggle(element_id: str) -> dmc.ColorSchemeToggle:
    """Mantine's light/dark switch: it sets the page's colour scheme and keeps the choice in
    the browser's local storage; the assets' CSS carries the figures and tables along."""
    return dmc.ColorSchemeToggle(
        id=element_id,
        lightIcon="☾",  # shown in light mode: what a click turns on
        darkIcon="☀",
        variant="default",
        size="lg",
        **{"aria-label": "dark or light colours"},
    )


def status_line(element_id: str) -> html.Span:
    """The header's right-hand note (what is being loaded), filled by a callback."""
    return html.Span(id=element_id, className="status-line")


def picker(element_id: str, placeholder: str) -> html.Div:
    """The header's run picker: a ``dcc.Dropdown`` (the tests and the URL sync drive it)."""
    dropdown = dcc.Dropdown(id=element_id, placeholder=placeholder, clearable=False)
    return html.Div(dropdown, className="run-picker")
