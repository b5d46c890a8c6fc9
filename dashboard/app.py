"""The Dash app: a shell with a run picker and page links, and one page per route under pages/.

Every view is a deep link, ``/<page>?run=<run name>``: the picker and the links keep ``?run=``
in the URL, and each page reads the run from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import dash
from dash import Input, Output, ctx, dcc, html

from dashboard.data.runs import ROOT_CONFIG_KEY, list_runs

PAGES_FOLDER = Path(__file__).resolve().parent / "pages"
RUN_PARAM = "run"


def create_app(root: str | Path) -> dash.Dash:
    """Build the dashboard over the runs under ``root``.

    Args:
        root: the trace store root (it may not exist yet: the app then says there are no runs).

    Returns:
        The app; ``app.run(host=..., port=...)`` serves it.
    """
    # __name__, not "dashboard": Flask needs a module with a file to find its root path.
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder=str(PAGES_FOLDER),
        title="trainprof",
    )
    app.server.config[ROOT_CONFIG_KEY] = str(Path(root).resolve())
    app.layout = _shell
    _register_shell_callbacks(app, Path(root).resolve())
    return app


def run_href(page: str, run: str | None) -> str:
    """The deep link to ``page`` showing ``run``."""
    return page if not run else f"{page}?{RUN_PARAM}={quote(run, safe='/')}"


def run_from_search(search: str | None) -> str | None:
    """The ``run`` query parameter of a URL's ``?...`` part, if any."""
    values = parse_qs((search or "").lstrip("?")).get(RUN_PARAM)
    return values[0] if values else None


def _shell() -> html.Div:
    return html.Div(
        [
            dcc.Location(id="url", refresh="callback-nav"),
            html.Header(
                [
                    html.H2("trainprof", style={"margin": "0 1em 0 0"}),
                    dcc.Dropdown(
                        id="run-picker",
                        placeholder="pick a run",
                        clearable=False,
                        style={"minWidth": "22em"},
                    ),
                    html.Nav(id="nav", style={"marginLeft": "1em"}),
                ],
                style={"display": "flex", "alignItems": "center", "gap": "0.5em"},
            ),
            html.Hr(),
            dash.page_container,
        ],
        style={"fontFamily": "sans-serif", "margin": "1em"},
    )


def _nav_links(run: str | None) -> list[Any]:
    return [
        dcc.Link(page["name"], href=run_href(page["path"], run), style={"marginRight": "1em"})
        for page in dash.page_registry.values()
    ]


def _register_shell_callbacks(app: dash.Dash, root: Path) -> None:
    @app.callback(
        Output("url", "search"),
        Output("run-picker", "value"),
        Output("run-picker", "options"),
        Output("nav", "children"),
        Input("url", "search"),
        Input("run-picker", "value"),
    )
    def sync_run(search: str | None, picked: str | None) -> tuple[Any, ...]:
        """Keep the picker, the links and the URL's ``?run=`` on the same run."""
        names = [run.name for run in list_runs(root)]
        wanted = run_from_search(search)
        if ctx.triggered_id == "run-picker" and picked:
            wanted = picked
        elif wanted is None and names:
            wanted = names[0]  # a bare URL shows the first run, as a deep link
        new_search: Any = dash.no_update
        if wanted is not None and wanted != run_from_search(search):
            new_search = run_href("", wanted)
        shown = wanted if wanted in names else None
        return new_search, shown, names, _nav_links(wanted)
