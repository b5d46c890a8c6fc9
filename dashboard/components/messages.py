"""The notices every page shows the same way: no runs, a refused or unknown run, unreadable files.

Messages are text: file names and run names go into html components as strings, which Dash
escapes, never as HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dash_mantine_components as dmc
from dash import html

from dashboard.data.fetch import Problem, fetch
from dashboard.data.runs import current_root, list_runs

T = TypeVar("T")


def notice(element_id: str, text: str) -> html.Div:
    """An information box (Mantine's Alert, blue) with id ``element_id``, in a Div: what
    :func:`page_data` returns instead of data is always a Div."""
    alert = dmc.Alert(text, id=element_id, color="blue", variant="light", className="notice")
    return html.Div(alert)


def error_banner(errors: tuple[str, ...] | list[str], title: str | None = None) -> html.Div:
    """The ``error-banner``: one line per problem with the run's files, hidden when none.

    Args:
        errors: one line each, naming the file and the problem.
        title: the banner's heading (default: how many problems).

    Returns:
        Mantine's Alert (red, ``role="alert"``) in a Div, or a hidden Div when there is none.
    """
    if not errors:
        return html.Div(id="error-banner", hidden=True)
    items = [html.Li(error) for error in errors]
    heading = title or f"{len(errors)} problem(s) reading this run's files:"
    alert = dmc.Alert(
        html.Ul(items),
        id="error-banner",
        title=heading,
        color="red",
        variant="light",
        className="notice notice-error",
    )
    return html.Div(alert)


def failed_page(run: str, problem: Problem) -> html.Div:
    """The page of a run whose data could not be made: its heading and the banner saying why."""
    return html.Div(
        [
            html.H3(f"Run {run}"),
            error_banner([problem.message], title="This page of the run could not be drawn:"),
        ]
    )


def run_problem(run: str, problem: Problem) -> html.Div:
    """The notice for a run name the data layer refused or did not find, or the failed page."""
    if problem.kind == "refused":
        return notice("run-refused", f"Refused run {run!r}: run names stay inside the trace root.")
    if problem.kind == "unknown":
        return notice("run-unknown", f"There is no run named {run!r}.")
    return failed_page(run, problem)


def pick_run(root: Path, run: str | None) -> str | None:
    """``run``, or the first run under ``root`` when none is named (None when there is none)."""
    if run is not None:
        return run
    runs = list_runs(root)
    return runs[0].name if runs else None


def no_runs(root: Path) -> html.Div:
    """The notice for a root with no runs."""
    return notice("no-run", f"No runs under {root}. Run `trainprof demo` to make one.")


def page_data(run: str | None, get: Callable[[Path, str], T]) -> tuple[str, T] | html.Div:
    """What every page does first: pick the run (the first one when none is named) and fetch
    its data, or what to show instead: a notice (no runs, a refused name, an unknown run) or
    the error banner (the data could not be made; see :func:`dashboard.data.fetch.fetch`).

    Returns:
        ``(run name, get(root, run))``, or the notice or banner.
    """
    root = current_root()
    name = pick_run(root, run)
    if name is None:
        return no_runs(root)
    data = fetch(root, name, get)
    if isinstance(data, Problem):
        return run_problem(str(name), data)
    return name, data
