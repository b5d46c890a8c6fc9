"""``profiler.show``: the dashboard inline in a Jupyter notebook, or served from a script.

In a notebook the dashboard's server runs in a thread of the kernel and the page is shown in
the cell's output as an iframe (Dash's ``jupyter_mode="inline"``); the notebook goes on. From a
script or a terminal, ``show`` serves the dashboard as ``trainprof dashboard`` does and says
where; a script waits there until interrupted (Ctrl+C), a terminal IPython keeps its prompt.

Like ``profiler.cli``, this module sits above the dashboard: capture never imports it.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HEIGHT_PX = 800
#: Pages that may show the dashboard in a frame: a notebook served from this machine (any
#: port). A notebook served from elsewhere (JupyterHub) names its origin: ``frame_ancestors``.
NOTEBOOK_ORIGINS = (
    "'self'",
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
)


@dataclass(frozen=True)
class Dashboard:
    """A dashboard that :func:`show` started.

    Attributes:
        url: the page shown (the run's Overview, or the first run's).
        root: the trace root it serves.
        run: the run it opened on; None for the root's first.
        inline: whether it was shown in a notebook's output.
    """

    url: str
    root: Path
    run: str | None
    inline: bool

    def __repr__(self) -> str:
        return f"trainprof dashboard of {self.root} at {self.url}"


def show(
    run_dir_or_root: str | os.PathLike[str],
    *,
    port: int | None = None,
    height: int = DEFAULT_HEIGHT_PX,
    host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] = (),
    frame_ancestors: Iterable[str] = NOTEBOOK_ORIGINS,
) -> Dashboard:
    """Show the dashboard of a run (its Overview) or of every run under a trace root.

    In a Jupyter notebook the page appears in the cell's output, ``height`` pixels tall, and
    the call returns at once; elsewhere it serves the dashboard and prints its URL (a script
    then waits there until Ctrl+C).

    Args:
        run_dir_or_root: a run directory (one holding trace files or ``meta/run.json``: the
            dashboard serves its parent and opens on it) or a trace root.
        port: the port to serve on; None takes a free one.
        height: the inline frame's height in pixels.
        host: the interface to listen on.
        allowed_hosts: more host names requests may carry (see ``create_app``).
        frame_ancestors: origins whose pages may frame the dashboard (only asked in a
            notebook: served otherwise, no page may frame it).

    Returns:
        What was started: its URL, root and run.

    Raises:
        FileNotFoundError: the path is not a directory.
        ValueError: ``height`` or ``port`` is out of range.
        ImportError: the dashboard's packages are missing (with the install line).
    """
    path = Path(run_dir_or_root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory (give a run directory or a root)")
    if height <= 0:
        raise ValueError(f"height must be positive, got {height}")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    root, run = split_run(path)
    try:
        from dashboard.app import create_app, run_href
    except ImportError as exc:  # pragma: no cover - the dashboard ships with trainprof
        raise ImportError(f"the dashboard needs dash and its components ({exc})") from exc
    inline = in_notebook()
    port = port or free_port(host)
    framers = tuple(frame_ancestors) if inline else ()
    app = create_app(root, allowed_hosts=allowed_hosts, frame_ancestors=framers, first_run=run)
    shown = Dashboard(f"http://{_url_host(host)}:{port}{run_href('/', run)}", root, run, inline)
    if inline:
        # Dash serves from a thread of the kernel, waits until the server answers and puts
        # the page in the cell's output (an IFrame; through Jupyter's proxy where it has one).
        app.run(host=host, port=port, jupyter_mode="inline", jupyter_height=height)
        return shown
    print(f"trainprof: serving the runs under {root} at {shown.url} (Ctrl+C stops)", flush=True)
    # Outside IPython, Flask serves here until interrupted; in a terminal IPython, Dash serves
    # from a thread ("external": it prints the URL too) and the prompt comes back.
    app.run(host=host, port=port, debug=False, jupyter_mode="external")
    return shown


def split_run(path: Path) -> tuple[Path, str | None]:
    """``(root, run)`` for a run directory (its parent and its name), ``(path, None)`` for a
    trace root."""
    from profiler.analysis.run import Run

    resolved = path.resolve()
    parent = resolved.parent
    candidate = Run(resolved, root=parent)
    if parent != resolved and (candidate.trace_paths or candidate.has_meta):
        return parent, candidate.name
    return resolved, None


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (a notebook or JupyterLab, not a terminal)
    where Dash can show an app inline (its Jupyter support has what it needs)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    from dash import jupyter_dash

    return bool(jupyter_dash.active)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now, on ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _url_host(host: str) -> str:
    """``host`` as a URL names it: ``localhost`` for a wildcard, brackets around IPv6."""
    if host in ("", "0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host
