"""The notices every page shows the same way: no runs, a refused or unknown run, unreadable files.

Messages are text: file names and run names go into html components as strings, which Dash
escapes, never as HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dash import html

from dashboard.data.runs import current_root, list_runs

T = TypeVar("T")

_NOTICE = {"padding": "0.75em", "borderRadius": "4px", "margin": "0.5em 0"}
ERROR_STYLE = {**_NOTICE, "background": "#fde2e1", "border": "1px solid #e45756"}
INFO_STYLE = {**_NOTICE, "background": "#eef3fb", "border": "1px solid #4c78a8"}


def notice(element_id: str, text: str) -> html.Div:
    """An information box with id ``element_id``."""
    return html.Div(text, id=element_id, style=INFO_STYLE)


def error_banner(errors: tuple[str, ...] | list[str]) -> html.Div:
    """The ``error-banner``: one line per unreadable file, hidden when there are none."""
    if not errors:
        return html.Div(id="error-banner", hidden=True)
    items = [html.Li(error) for error in errors]
    title = html.Strong(f"{len(errors)} file(s) of this run could not be read:")
    return html.Div([title, html.Ul(items)], id="error-banner", role="alert", style=ERROR_STYLE)


def run_problem(run: str, error: ValueError | LookupError) -> html.Div:
    """The notice for a run name the data layer refused (ValueError) or did not find."""
    if isinstance(error, ValueError):
        return notice("run-refused", f"Refused run {run!r}: run names stay inside the trace root.")
    return notice("run-unknown", f"There is no run named {run!r}.")


def pick_run(root: Path, run: str | None) -> str | None:
    """``run``, or the first run under ``root`` when none is named (None when there is none)."""
    if run is not None:
        return run
    runs = list_runs(root)
    return runs[0].name if runs else None


def no_runs(root: Path) -> html.Div:
    """The notice for a root with no runs."""
    return notice("no-run", f"No runs under {root}. Run `trainprof demo` to make one.")


def page_data(run: str | None, fetch: Callable[[Path, str], T]) -> tuple[str, T] | html.Div:
    """What every page does first: pick the run (the first one when none is named) and fetch
    its data, or the notice to show instead (no runs, a refused name, an unknown run).

    Returns:
        ``(run name, fetch(root, run))``, or the notice.
    """
    root = current_root()
    name = pick_run(root, run)
    if name is None:
        return no_runs(root)
    try:
        return name, fetch(root, name)
    except (ValueError, LookupError) as exc:
        return run_problem(name, exc)
