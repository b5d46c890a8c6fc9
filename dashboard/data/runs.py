"""The runs under the trace root, as :class:`profiler.analysis.run.RunSet` reads them.

Runs are directories under the trace root that hold trace files or ``meta/run.json``; a run's
name is its path relative to the root. Nothing outside the root is read (``RunSet``'s rules):
symlinked directories are not followed, and a file that is a link (or lies under a linked
``meta/``) resolving outside the root is treated as absent, so a run cannot point the
dashboard at ``~/.ssh`` or ``/etc``. This module only adapts that read side to the pages.

A root may be an fsspec URL (``s3://bucket/prefix``): :func:`root_path` gives its local copy,
which the app serves; each ``RunSet`` made over that copy refreshes it from the store first
(at most every ``profiler.store.remote.REFRESH_S``), so new runs and files show up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.analysis.run import Run, RunNotFound, RunRefused, RunSet, status_label
from profiler.events import META_DIR, RUN_META_FILE
from profiler.store.remote import local_root
from profiler.store.run_files import Fingerprint, fingerprint, inside

__all__ = [
    "META_DIR", "RUN_META", "ROOT_CONFIG_KEY", "Fingerprint", "RunInfo", "RunNotFound",
    "RunRefused", "current_root", "existing_run", "fingerprint", "inside", "list_runs",
    "open_run", "read_run_meta", "read_steps", "resolve_run", "root_path", "run_status",
    "run_version", "trace_fingerprints", "trace_files",
]  # fmt: skip

RUN_META = RUN_META_FILE
ROOT_CONFIG_KEY = "TRAINPROF_ROOT"


@dataclass(frozen=True)
class RunInfo:
    """A run the dashboard can show.

    Attributes:
        name: the run directory relative to the root, with ``/`` separators.
        path: the run directory.
        trace_files: how many trace files lie directly in it.
        has_meta: whether it has ``meta/run.json``.
    """

    name: str
    path: Path
    trace_files: int
    has_meta: bool


def root_path(root: str | Path) -> Path:
    """The local directory the app serves for ``root``: the root itself, or for a URL its
    local copy (refreshed as the pages read it).

    Raises:
        RemoteStoreError: ``root`` is a URL that cannot be read (naming it).
    """
    return local_root(root, empty_ok=True).resolve()


def list_runs(root: str | Path) -> list[RunInfo]:
    """Every run under ``root`` (the root itself too, named ``.``, if it holds traces), sorted
    by name; empty when the root does not exist."""
    return [RunInfo(r.name, r.path, len(r.trace_paths), r.has_meta) for r in RunSet(root)]


def open_run(root: str | Path, name: str) -> Run:
    """Run ``name`` under ``root``, read fresh (its files as they are now).

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    return RunSet(root).run(name)


def resolve_run(root: str | Path, name: str) -> Path:
    """The directory of run ``name`` (which may not exist).

    Raises:
        RunRefused: the name is not a string, is empty, absolute, has a ``..`` part or a NUL,
            or resolves (through symlinks) outside the root.
    """
    return RunSet(root).resolve(name)


def existing_run(root: str | Path, name: str) -> Path:
    """The directory of run ``name``, which must exist and be a run.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    return open_run(root, name).path


def trace_fingerprints(root: str | Path, name: str) -> tuple[Fingerprint, ...]:
    """The fingerprint of every trace file of run ``name``, in file-name order.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    return open_run(root, name).fingerprints()


def run_version(
    root: str | Path, name: str, *, with_meta: bool, now: float | None = None
) -> str | None:
    """A token that changes whenever run ``name``'s files change: a new capture window, a
    rewritten file or, ``with_meta``, a new line of per-step metrics or a new run status (a
    ``running`` run whose heartbeat stopped reads as interrupted without any file changing).

    Args:
        root: the trace store root.
        name: the run's name.
        with_meta: count ``meta/`` files and the run's status too.
        now: the current unix time for the status (tests pass a fixed one).

    Returns:
        The token, or None when the name is refused or there is no such run.
    """
    try:
        run = open_run(root, name)
        stamp = repr([run.fingerprints(), run.meta_fingerprints() if with_meta else ()])
    except (RunRefused, RunNotFound):
        return None
    except OSError:  # a file went away between listing and stat: the next poll sees it
        return None
    if with_meta:
        stamp += repr(run.status(now=now))
    return hashlib.blake2b(stamp.encode(), digest_size=8).hexdigest()


# The Overview asks at each draw (never cached): a heartbeat stops without any file changing.
run_status = status_label


def current_root() -> Path:
    """The trace root of the Dash app serving the current request."""
    import flask

    return Path(flask.current_app.config[ROOT_CONFIG_KEY])


def trace_files(directory: Path, root: str | Path | None = None) -> list[Path]:
    """The trace files lying directly in ``directory`` (see :attr:`Run.trace_paths`)."""
    return list(Run(directory, root=directory if root is None else root).trace_paths)


def read_run_meta(
    run_dir: Path, root: str | Path | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """``meta/run.json`` of a run (None when absent), and why it could not be read.

    A ``run.json`` resolving outside ``root`` (default: ``run_dir``) counts as absent.
    """
    read = Run(run_dir, root=run_dir if root is None else root).meta
    problem = [f"{META_DIR}/{RUN_META}: {read.problem}"] if read.problem else []
    return read.meta, problem


def read_steps(
    run_dir: Path, root: str | Path | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every step record of a run's step logs with its ``rank``, and the step logs' problems
    (see :meth:`Run.steps`, :meth:`Run.problems`). Files resolving outside ``root`` (default:
    ``run_dir``) are not read."""
    run = Run(run_dir, root=run_dir if root is None else root)
    return run.steps(), run.problems(meta=False)
