"""The Dash app: a shell with a run picker and page links, and one page per route under pages/.

Every view is a deep link, ``/<page>?run=<run name>``: the picker and the links keep ``?run=``
in the URL, and each page reads the run from it.

The shell polls the root (every ``refresh_s``): the picker lists new runs, and the page shown is
drawn again when its run's files change (a new capture window, new per-step metrics), so a job
that is still writing can be watched without a restart. While a trace is read or analysed, the
status line says which file and for how long.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import dash
from dash import Input, Output, State, ctx, dcc, html

from dashboard.components.grid import register_csv_export
from dashboard.components.messages import error_banner
from dashboard.components.page import BODY_SUFFIX
from dashboard.components.shell import (
    app_shell,
    brand,
    nav_link,
    picker,
    scheme_toggle,
    status_line,
)
from dashboard.data.cache import work_in_progress
from dashboard.data.distributed import use_dask
from dashboard.data.live import overview_version
from dashboard.data.runs import ROOT_CONFIG_KEY, list_runs, root_path, run_version
from dashboard.download import register_download
from dashboard.security import allowed_host_names, harden

PAGES_FOLDER = Path(__file__).resolve().parent / "pages"
RUN_PARAM = "run"
BASE_PARAM = "base"  # the diff's other run
DEFAULT_REFRESH_S = 2.0
# Pages that show the run's status: a new status must redraw them. (Their step-log figure is
# extended by its own poll: a new steps line redraws nothing.)
_META_PAGES = frozenset({"/"})
# Pages drawn from the step logs as a whole: a new steps line redraws them.
_STEP_PAGES = frozenset({"/steps"})
_RUNS_PAGE = "/runs"
_PAGE_CONTENT = "_pages_content"  # dash.page_container's element for the page's layout

log = logging.getLogger("dashboard")


def create_app(
    root: str | Path,
    *,
    refresh_s: float = DEFAULT_REFRESH_S,
    allowed_hosts: Iterable[str] = (),
    dask: str | None = None,
    frame_ancestors: Iterable[str] = (),
    first_run: str | None = None,
) -> dash.Dash:
    """Build the dashboard over the runs under ``root``.

    Args:
        root: the trace store root (it may not exist yet: the app then says there are no runs),
            or an fsspec URL (``s3://bucket/prefix``), served from a local copy.
        refresh_s: how often the page looks for new runs, new files and loading progress.
        allowed_hosts: host names or addresses, besides ``localhost``, ``127.0.0.1`` and
            ``[::1]``, that requests may carry in their ``Host`` header (any port); any other
            host gets a 400 (DNS rebinding). The address the server binds to belongs here,
            unless it is a wildcard (``0.0.0.0``): then every name users reach it by does.
        dask: a Dask scheduler address (``tcp://host:8786``) or ``"local"``: the Distributed
            page and the Timeline's ranks read each file's per-rank summary, made on the
            cluster (see ``profiler.analysis.fanout``); None: each file is loaded here.
        frame_ancestors: origins (CSP sources such as ``http://localhost:*``) whose pages may
            show the app in a frame, as Jupyter does (``profiler.show``); none by default.
        first_run: the run a URL naming none opens on (default: the first by name).

    Returns:
        The app; ``app.run(host=..., port=...)`` serves it.
    """
    if refresh_s <= 0:
        raise ValueError(f"refresh_s must be positive, got {refresh_s}")
    root = root_path(root)  # a URL (s3://...): its local copy
    # __name__, not "dashboard": Flask needs a module with a file to find its root path.
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder=str(PAGES_FOLDER),
        title="trainprof",
        on_error=_callback_failed,
    )
    app.server.config[ROOT_CONFIG_KEY] = str(Path(root).resolve())
    hosts = allowed_host_names(allowed_hosts)
    harden(app.server, hosts, app.csp_hashes, tuple(frame_ancestors))
    register_download(app.server, Path(root).resolve())
    use_dask(dask)
    app.layout = lambda: _shell(refresh_s)
    _register_shell_callbacks(app, Path(root).resolve(), first_run)
    _register_live_callbacks(app, Path(root).resolve())
    register_csv_export(app)
    return app


def run_href(page: str, run: str | None) -> str:
    """The deep link to ``page`` showing ``run``."""
    return page if not run else f"{page}?{RUN_PARAM}={quote(run, safe='/')}"


def run_from_search(search: str | None) -> str | None:
    """The ``run`` query parameter of a URL's ``?...`` part, if any."""
    values = query_values(search, RUN_PARAM)
    return values[0] if values else None


def query_values(search: str | None, key: str) -> list[str]:
    """Every value of query parameter ``key`` in a URL's ``?...`` part."""
    return parse_qs((search or "").lstrip("?")).get(key, [])


def _shell(refresh_s: float) -> Any:
    page_drawn: Any = {_PAGE_CONTENT: "children"}
    header = [
        brand(),
        picker("run-picker", "pick a run"),
        status_line("run-status"),
        scheme_toggle("color-scheme"),
    ]
    main = [
        dcc.Location(id="url", refresh="callback-nav"),
        dcc.Interval(id="refresh", interval=int(refresh_s * 1000)),
        dcc.Store(id="run-version"),
        # Only a page being drawn shows the spinner, not a page's own callbacks (a zoom).
        dcc.Loading(
            dash.page_container,
            target_components=page_drawn,
            delay_show=300,
            overlay_style={"visibility": "visible", "opacity": 0.5},
            type="dot",
        ),
    ]
    return app_shell(header, html.Nav(id="nav"), main)


def _nav_links(run: str | None) -> list[Any]:
    return [
        nav_link(page["name"], run_href(page["path"], run)) for page in dash.page_registry.values()
    ]


def _register_shell_callbacks(app: dash.Dash, root: Path, first_run: str | None) -> None:
    # Two callbacks, not one: Dash drops the answer of a request still in flight when the same
    # callback is asked again, so a refresh tick arriving while a pick was answered lost the
    # pick. Ticks only list the runs; picks and URL changes alone move the run shown.
    @app.callback(
        Output("url", "search"),
        Output("run-picker", "value"),
        Output("nav", "children"),
        Input("url", "search"),
        Input("run-picker", "value"),
    )
    def sync_run(search: str | None, picked: str | None) -> tuple[Any, ...]:
        """Keep the picker, the links and the URL's ``?run=`` on the same run."""
        names = [run.name for run in list_runs(root)]
        wanted = run_from_search(search)
        if "run-picker.value" in set(ctx.triggered_prop_ids) and picked:
            wanted = picked
        elif wanted is None and names:  # a bare URL shows the first run, as a deep link
            wanted = first_run if first_run in names else names[0]
        new_search: Any = dash.no_update
        if wanted is not None and wanted != run_from_search(search):
            new_search = run_href("", wanted)
        shown = wanted if wanted in names else None
        return new_search, shown, _nav_links(wanted)

    @app.callback(
        Output("run-picker", "options"),
        Input("refresh", "n_intervals"),
        State("run-picker", "options"),
    )
    def list_options(_tick: int | None, listed: Any) -> Any:
        """The runs under the root, sent only when they changed: resending the same options
        would redraw an open picker menu under the user's pointer every tick."""
        names = [run.name for run in list_runs(root)]
        return dash.no_update if names == listed else names


def _register_live_callbacks(app: dash.Dash, root: Path) -> None:
    @app.callback(
        Output("run-version", "data"),
        Output("run-status", "children"),
        Input("refresh", "n_intervals"),
        Input("url", "pathname"),
        Input("url", "search"),
        State("run-version", "data"),
        State("run-status", "children"),
    )
    def poll(
        _tick: int | None, path: str | None, search: str | None, seen: Any, status: Any
    ) -> tuple[Any, Any]:
        """Note the shown runs' files; ask for a redraw when they changed under the same view."""
        run = run_from_search(search) or next((r.name for r in list_runs(root)), None)
        view = f"{path}?{search}"
        shown = [run, *query_values(search, BASE_PARAM)] if run is not None else []
        version = "|".join(str(_version(root, name, path)) for name in shown)
        redraw = isinstance(seen, dict) and seen.get("view") == view and seen["version"] != version
        text = _status_text()
        new_status: Any = dash.no_update if text == (status or "") else text
        if isinstance(seen, dict) and seen.get("view") == view and not redraw:
            return dash.no_update, new_status
        return {"view": view, "version": version, "redraw": redraw}, new_status


def _callback_failed(exc: Exception) -> Any:
    """The last guard of every callback (Dash's ``on_error``): log the traceback, and in place
    of a page that could not be drawn show the banner, so the answer is never a 500 or blank.

    Page data reaches pages through ``dashboard.data.fetch``, which turns the analysis's
    failures into banners itself; what lands here is a bug in a page or a figure.
    """
    outputs = ctx.outputs_list
    log.error("callback for %s failed", outputs, exc_info=exc)
    line = f"{type(exc).__name__}: {exc}"
    banner = error_banner([line], title="This view could not be drawn (the server log has more):")

    def value(output: Any) -> Any:
        drawn = isinstance(output, dict) and _is_page_body(output.get("id"))
        return banner if drawn and output.get("property") == "children" else dash.no_update

    return [value(o) for o in outputs] if isinstance(outputs, list) else value(outputs)


def _is_page_body(element: Any) -> bool:
    """The router's page container or a page's body: where a page is drawn."""
    return isinstance(element, str) and (element == _PAGE_CONTENT or element.endswith(BODY_SUFFIX))


def _version(root: Path, name: str, path: str | None) -> str | None:
    """What must change for the page at ``path`` showing run ``name`` to be drawn again."""
    if path == _RUNS_PAGE:  # never: it updates its rows in place (keeping the selection)
        return None
    if path in _META_PAGES:
        return overview_version(root, name)
    if path in _STEP_PAGES:
        return run_version(root, name, with_meta=True)
    return run_version(root, name, with_meta=False)


def _status_text() -> str:
    work = work_in_progress()
    if not work:
        return ""
    busy = work[0]
    more = f" (+{len(work) - 1} more)" if len(work) > 1 else ""
    size_mb = busy.size_bytes / 1024**2
    return f"{busy.stage} {busy.file} ({size_mb:.1f} MB): {busy.elapsed_s:.0f} s{more}"
