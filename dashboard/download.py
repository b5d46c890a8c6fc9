"""``/download/<run>/<file>``: a run's trace file as it lies on disk, to open in Perfetto.

A plain Flask route on the Dash app's server, so the browser saves the bytes themselves (a
``.pt.trace.json.gz`` stays gzip). Only the run's own trace files are served, found as the
Timeline finds them (:func:`dashboard.data.timeline.trace_download`): a ``..``, an absolute
path, a file that is not one of the run's traces or a link resolving outside the root is a 404,
with no word on what lies where.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import flask

from dashboard.data.runs import RunNotFound, RunRefused
from dashboard.data.timeline import trace_download

DOWNLOAD_PREFIX = "/download"
PERFETTO_HINT = "open in Perfetto (ui.perfetto.dev, Open trace file) or chrome://tracing"
_GZIP = "application/gzip"
_JSON = "application/json"


def download_href(run: str, file: str) -> str:
    """The link that downloads run ``run``'s trace file ``file``."""
    return f"{DOWNLOAD_PREFIX}/{quote(run, safe='/')}/{quote(file, safe='')}"


def register_download(server: flask.Flask, root: Path) -> None:
    """Serve ``/download/<run>/<file>`` from ``root`` on ``server``."""

    def download(target: str) -> flask.Response:
        # One rule for every path under /download/ (but those starting with a slash, which go
        # on to Dash's page shell), so none falls through to it.
        run, _, file = target.rpartition("/")
        try:
            path = trace_download(root, run, file)
        except (RunRefused, RunNotFound):
            flask.abort(404)
        return flask.send_file(
            path,
            mimetype=_GZIP if path.name.endswith(".gz") else _JSON,
            as_attachment=True,
            download_name=path.name,
            max_age=0,
        )

    server.add_url_rule(f"{DOWNLOAD_PREFIX}/<path:target>", "download", download)
