"""The Diff page's data: ``profiler.analysis.diff.diff_runs`` of two runs, cached per pair.

The pair's result is cached under both runs' file fingerprints, so rewriting any file of either
run recomputes it. Files that cannot be read are left out of their side and named.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dashboard.data.cache import RUN_CACHE_SIZE, trace_or_message
from dashboard.data.fetch import failure_message
from dashboard.data.runs import Fingerprint, list_runs, trace_fingerprints
from profiler.analysis.diff import diff_runs
from profiler.analysis.table import TraceSet, TraceTable


@dataclass(frozen=True)
class RunDiff:
    """What changed per step from run ``base`` to run ``new``. Shared by the cache: read-only.

    Attributes:
        base: the base run's name.
        new: the new run's name.
        diff: the ``trainprof.diff/1`` dict (``steps``, ``step_us``, ``categories``, ``ops``,
            ``kernels``), or None when the runs could not be compared.
        errors: one message per unreadable file, as ``<run>/<file>: <problem>``, and why the
            runs could not be compared, if so.
    """

    base: str
    new: str
    diff: dict[str, Any] | None
    errors: tuple[str, ...]


def other_runs(root: str | Path, name: str) -> tuple[str, ...]:
    """The runs ``name`` can be compared with: every run under ``root`` but itself.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    trace_fingerprints(root, name)  # refuses a bad name the way every page does
    return tuple(run.name for run in list_runs(root) if run.name != name)


def run_diff(root: str | Path, base: str, new: str) -> RunDiff:
    """``diff_runs`` of run ``base`` against run ``new``, cached until a file of either changes.

    Raises:
        RunRefused: a name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of one of the names.
    """
    return _cached_diff(base, new, trace_fingerprints(root, base), trace_fingerprints(root, new))


@lru_cache(maxsize=RUN_CACHE_SIZE)
def _cached_diff(
    base: str, new: str, base_files: tuple[Fingerprint, ...], new_files: tuple[Fingerprint, ...]
) -> RunDiff:
    base_set, base_errors = _trace_set(base, base_files)
    new_set, new_errors = _trace_set(new, new_files)
    errors = base_errors + new_errors
    try:
        diff: dict[str, Any] | None = diff_runs(base_set, new_set)
    except Exception as exc:  # odd content must not take the page down
        diff = None
        errors.append(failure_message(exc, f"comparing {base} with {new}"))
    return RunDiff(base=base, new=new, diff=diff, errors=tuple(errors))


def _trace_set(run: str, files: Iterable[Fingerprint]) -> tuple[TraceSet, list[str]]:
    """The run's traces that load, and a message for each that does not."""
    traces: list[TraceTable] = []
    errors: list[str] = []
    for fingerprint in files:
        trace = trace_or_message(fingerprint)
        if isinstance(trace, str):
            errors.append(f"{run}/{trace}")
        else:
            traces.append(trace)
    return TraceSet(traces=tuple(traces)), errors
