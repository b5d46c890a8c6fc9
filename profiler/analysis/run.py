"""The read side of the trace store: :class:`Run` (one run directory) and :class:`RunSet` (a root).

A run is read here and nowhere else: its trace files (every rank's), ``meta/run.json`` with each
rank's ``meta/rank.<rank>.json`` merged in, its step logs, each file's fingerprint, the errors
of files that cannot be read and its status label, derived from every rank's
(``profiler.store.liveness.merge_states``). The CLI
(``profiler.load``/``summarize``), the TensorBoard export and the dashboard all ask a
:class:`Run`. Derived tables are memoised on each loaded trace
(:mod:`profiler.analysis.memo`), so a run's analyses share one computation per trace.

A path or a root may be an fsspec URL (``s3://bucket/prefix/run``): it is read from a local
copy, refreshed each time a :class:`Run` or :class:`RunSet` is made
(``profiler.store.remote.local_root``); the paths of a run are then its copy's.

Given a root, nothing outside it is read: symlinked directories are not followed, and a file
that is a link resolving outside the root is treated as absent (see
:mod:`profiler.store.run_files`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from profiler.analysis.table import TraceSet, is_trace_file, load_files
from profiler.events import META_DIR, RUN_META_FILE
from profiler.store.liveness import RunState, record_state, run_state
from profiler.store.remote import local_root, remote_url
from profiler.store.run_files import (
    MAX_LINE_PROBLEMS,
    RANK_FILE,
    RANKS_KEY,
    Fingerprint,
    RunMeta,
    StepFile,
    fingerprint,
    inside,
    meta_files,
    read_run_record,
    read_steps,
)

__all__ = ["Fingerprint", "Run", "RunNotFound", "RunRefused", "RunSet", "status_label"]


class RunRefused(ValueError):
    """A run or file name that would lead outside the trace root, or is no name at all."""


class RunNotFound(LookupError):
    """No run, or no file of the run, by that name."""


class Run:
    """One run directory: its files, metadata, step logs and status, read on first use.

    What a run holds is read once per object (ask a new :class:`Run` to see new files);
    fingerprints and the status are taken afresh on each call.

    Args:
        path: the run directory, or one trace file (a run of that file alone); or its URL.
        root: the trace root it lies under; files resolving outside it are not read
            (default: the run directory itself).
        name: the run's name (default: its path relative to ``root``, with ``/``).

    Raises:
        RemoteStoreError: ``path`` is a URL that cannot be read (naming it).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> None:  # fmt: skip
        self.path = local_root(path) if root is None else Path(path)
        self.root = Path(root) if root is not None else self.path
        if name is None and root is not None:
            name = self.path.relative_to(root).as_posix()
        elif name is None:  # a URL's run is named as the URL names it, not as its copy
            name = (remote_url(path) or self.path.as_posix()).rsplit("/", 1)[-1]
        self.name = name

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, name={self.name!r})"

    @cached_property
    def trace_paths(self) -> tuple[Path, ...]:
        """The trace files lying directly in the run directory, in file-name order (a nested
        run's belong to that run); the path itself when it is a file."""
        if self.path.is_file():
            return (self.path,)
        try:
            found = [p for p in self.path.iterdir() if is_trace_file(p)]
        except OSError:  # unreadable or gone: no traces
            return ()
        return tuple(sorted(p for p in found if inside(p, self.root)))

    @cached_property
    def meta(self) -> RunMeta:
        """``meta/run.json`` with every rank's record merged in, as read with its problems
        (``meta.meta`` None when there is neither): ``meta.meta["ranks"]`` holds each rank's
        record by rank (as a string), ``meta.meta["trace_files"]`` every rank's trace files
        (see ``profiler.store.run_files.read_run_record``)."""
        return read_run_record(self.path, self.root)

    @property
    def ranks(self) -> dict[int, dict[str, Any]]:
        """Each rank's record (host, pid, status, heartbeat, trace_files, steps...), by rank;
        empty without metadata. A run written before rank files has rank 0's, run.json."""
        ranks = (self.meta.meta or {}).get(RANKS_KEY) or {}
        return {int(rank): record for rank, record in sorted(ranks.items(), key=_by_rank)}

    def rank_states(self, *, now: float | None = None) -> dict[int, RunState]:
        """Each rank's state as a reader sees it (a stale heartbeat reads ``interrupted``)."""
        return {rank: record_state(record, now=now) for rank, record in self.ranks.items()}

    @cached_property
    def step_files(self) -> dict[int, StepFile]:
        """Every rank's ``meta/steps.<rank>.jsonl`` as read, by rank."""
        return read_steps(self.path, self.root)

    @property
    def has_meta(self) -> bool:
        """Whether the run has a ``meta/run.json`` or a rank record (readable or not)."""
        names = [p.name for p in meta_files(self.path, self.root)]
        return any(name == RUN_META_FILE or RANK_FILE.match(name) for name in names)

    def fingerprints(self) -> tuple[Fingerprint, ...]:
        """``(path, size, mtime_ns)`` of each trace file, in :attr:`trace_paths` order.

        Raises:
            OSError: a file went away since it was listed.
        """
        return tuple(fingerprint(p) for p in self.trace_paths)

    def meta_fingerprints(self) -> tuple[Fingerprint, ...]:
        """``(path, size, mtime_ns)`` of ``run.json`` and each step log, read afresh.

        Raises:
            OSError: a file went away since it was listed.
        """
        return tuple(fingerprint(p) for p in meta_files(self.path, self.root))

    def status(self, *, now: float | None = None) -> str | None:
        """The run's status as a reader sees it (None without readable metadata):
        ``profiler.store.liveness.run_state``'s label over every rank, so a ``running`` run
        whose heartbeat stopped reads ``interrupted (...)``, and a run with a failed rank
        ``failed (rank N: ...)``. ``now``: the current unix time (tests fix it)."""
        return status_label(self.meta.meta, now=now)

    def steps(self) -> list[dict[str, Any]]:
        """Every step record of every step log, each with its ``rank``, rank by rank."""
        files = self.step_files.items()
        return [{**record, "rank": rank} for rank, steps in files for record in steps.records]

    def problems(self, *, meta: bool = True) -> list[str]:
        """One line per problem of ``run.json`` (with ``meta``) and the step logs, naming the
        file relative to the run (``meta/steps.0.jsonl: line 2 is not a JSON object``); at
        most :data:`MAX_LINE_PROBLEMS` bad lines per step log. A last line cut short is none."""
        problem = self.meta.problem if meta else None
        found = [f"{META_DIR}/{RUN_META_FILE}: {problem}"] if problem else []
        found += list(self.meta.rank_problems) if meta else []
        for steps in self.step_files.values():
            found += steps.problems(f"{META_DIR}/{steps.path.name}", MAX_LINE_PROBLEMS)
        return found

    def load(self, *, cache: bool = True, max_text_bytes: int | None = None) -> TraceSet:
        """Every trace file of the run, loaded; a file that cannot be read is its error.

        Args:
            cache: read and write the columnar cache (see :func:`load_trace`).
            max_text_bytes: the most JSON text one file may hold.
        """
        return load_files(self.trace_paths, cache=cache, max_text_bytes=max_text_bytes)


def _by_rank(item: tuple[str, Any]) -> int:
    return int(item[0])


def status_label(meta: dict[str, Any] | None, *, now: float | None = None) -> str | None:
    """A run's status as a reader sees it, from its decoded ``run.json`` or merged record
    (:attr:`Run.meta`; None without one).

    ``profiler.store.liveness.run_state``'s label: a ``running`` run whose heartbeat stopped
    reads ``interrupted (no heartbeat since ...)``, a degraded one carries its reason.

    Args:
        meta: the decoded ``run.json``.
        now: the current unix time (tests pass a fixed one).
    """
    return None if meta is None else run_state(meta, now=now).label


class RunSet:
    """Every run under a trace root: directories holding trace files or ``meta/run.json``.

    Symlinked directories are not followed, hidden ones and ``meta/`` are not runs, and the
    root itself is a run (named ``.``) when it holds traces.

    Args:
        root: the trace store root, a path or a URL (read from its local copy, refreshed).

    Raises:
        RemoteStoreError: ``root`` is a URL that cannot be read (naming it).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        #: The root's URL, when it is one.
        self.url = remote_url(root)
        self.root = local_root(root, empty_ok=True)  # like a local root not made yet

    def __iter__(self) -> Iterator[Run]:
        """The runs, in name order; none when the root does not exist."""
        runs = []
        for dirpath, dirnames, _ in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d != META_DIR and not d.startswith("."))
            run = Run(dirpath, root=self.root)
            if run.trace_paths or run.has_meta:
                runs.append(run)
        return iter(sorted(runs, key=lambda r: r.name))

    def resolve(self, name: str) -> Path:
        """The directory of run ``name``, refusing any name that leads outside the root.

        Raises:
            RunRefused: the name is not a string (a query repeats ``run=``), is empty,
                absolute, has a ``..`` part or a NUL, names a ``meta/`` or hidden folder, or
                resolves outside the root.
        """
        # A URL's query can hand a reader anything: ``?run=a&run=b`` arrives as a list.
        if not isinstance(name, str) or not name or "\x00" in name:
            raise RunRefused("a run name must be a non-empty path under the trace root")
        posix, windows = PurePosixPath(name), PureWindowsPath(name)
        if posix.is_absolute() or windows.is_absolute() or windows.drive:
            raise RunRefused(f"run name {name!r} is absolute; names are relative to the trace root")
        if ".." in posix.parts or ".." in windows.parts:
            raise RunRefused(f"run name {name!r} leads outside the trace root")
        if any(part == META_DIR or part.startswith(".") for part in posix.parts):
            # A run's meta/ (run.json would pass for a trace) or a hidden folder is no run.
            raise RunRefused(f"run name {name!r} names a run's {META_DIR}/ or a hidden folder")
        base = self.root.resolve()
        try:
            candidate = (base / posix).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long for the OS
            raise RunRefused(f"run name {name!r} cannot be resolved ({exc})") from exc
        if not candidate.is_relative_to(base):
            raise RunRefused(f"run name {name!r} leads outside the trace root")
        return candidate

    def run(self, name: str) -> Run:
        """Run ``name``, which must exist.

        Raises:
            RunRefused: the name leads outside the root (see :meth:`resolve`).
            RunNotFound: there is no run of that name.
        """
        path = self.resolve(name)
        base = self.root.resolve()
        run = Run(path, root=base, name=name)
        if not path.is_dir() or not (run.trace_paths or run.has_meta):
            raise RunNotFound(f"no run named {name!r} under the trace root")
        return run
