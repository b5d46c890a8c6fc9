"""Summarise many trace files: one per-rank summary per file, in this process or through Dask.

Where the work runs:

* in this process, one file after the other, for a few files or where the summaries are
  already stored (reading one takes milliseconds);
* on a ``dask.distributed`` ``LocalCluster`` of worker processes (one thread each, one per
  core), started for the call and closed after it, when at least
  :data:`LOCAL_CLUSTER_MIN_FILES` files, or :data:`LOCAL_CLUSTER_MIN_BYTES` of them, need a
  fresh summary. Starting the cluster and importing the analysis in each worker cost about
  5 s on a loaded 2-core machine, and a small trace's summary about 0.5 s: below ~25 such
  files, or ~12 s of work, the cluster costs more than it saves;
* on an existing Dask cluster (``dask="tcp://scheduler:8786"``): each worker reads the files
  at the paths this process names, so they must be on storage every worker reaches, with
  trainprof installed there.

Either way, each worker holds one trace at a time and returns only its summary (kilobytes),
and the results come back in the order of the files, equal whichever way they were made.
``dask="local"`` asks for a LocalCluster whatever the count. Dask is an optional dependency
(``pip install 'trainprof[dask]'``); without it everything runs in this process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from profiler.analysis.cache import cache_enabled
from profiler.analysis.rank_summary import (
    RankSummary,
    has_rank_summary,
    rank_summary,
    summary_key,
)
from profiler.analysis.table import _size as file_bytes
from profiler.store.chrome_trace import TraceFormatError

#: Files needing a fresh summary from which a LocalCluster pays for its start (see above).
LOCAL_CLUSTER_MIN_FILES = 32
#: ... or their bytes on disk: ~2.5M events of gzip'd trace, ~12 s of loading and analysis here.
LOCAL_CLUSTER_MIN_BYTES = 64 * 1024**2
#: ``dask=`` value asking for a LocalCluster.
LOCAL = "local"
DASK_EXTRA_HINT = "pip install 'trainprof[dask]'"

Result = RankSummary | TraceFormatError
Progress = Callable[[int], None]


class DaskUnavailable(RuntimeError):
    """A Dask cluster was asked for, and dask.distributed is not installed or not reachable."""


def summarize_files(
    files: Sequence[Path],
    *,
    dask: str | None = None,
    by_shape: bool = False,
    cache: bool = True,
    progress: bool = False,
    in_process: bool = False,
) -> list[Result]:
    """The per-rank summary of each file (:func:`profiler.analysis.rank_summary.rank_summary`),
    or the error that names it, in the order of ``files``.

    Args:
        files: trace files.
        dask: a scheduler address (``tcp://host:8786``), ``"local"`` for a LocalCluster, or
            None to choose: a LocalCluster for many files needing work (when Dask is
            installed), else this process.
        by_shape: the entries' top ops per name and input shapes.
        cache: read and write stored summaries and trace caches.
        progress: a progress bar (rich, on stderr, only on a terminal) while summarising.
        in_process: with ``dask`` None, never start a LocalCluster (a server's callbacks).

    Raises:
        DaskUnavailable: ``dask`` was given and dask.distributed is not installed, or the
            scheduler cannot be reached.
    """
    paths = [Path(file) for file in files]
    if dask is None and (in_process or not _worth_a_cluster(paths, by_shape, cache)):
        with _progress(len(paths), progress) as advance:
            return [_summarize_inline(path, by_shape, cache, advance) for path in paths]
    return _summarize_on_dask(paths, dask or LOCAL, by_shape, cache, progress)


def _summarize_inline(path: Path, by_shape: bool, cache: bool, advance: Progress) -> Result:
    result = _result(summarize_file(str(path), by_shape, cache))
    advance(1)
    return result


def summarize_file(path: str, by_shape: bool, cache: bool) -> RankSummary | tuple[str, str]:
    """One file's summary, or its error as ``(path, problem)``: a value, not raised, and not
    the exception, whose pickled form cannot be rebuilt (what a worker sends back)."""
    try:
        return rank_summary(path, by_shape=by_shape, cache=cache)
    except TraceFormatError as exc:
        return exc.path, exc.problem


def _result(value: RankSummary | tuple[str, str]) -> Result:
    return TraceFormatError(*value) if isinstance(value, tuple) else value


def _worth_a_cluster(paths: Sequence[Path], by_shape: bool, cache: bool) -> bool:
    """Whether enough files need a fresh summary for a LocalCluster to pay (see the module).

    Whether Dask is installed is asked last: importing dask.distributed to find out takes
    0.4 s here, a fifth of `trainprof summary` on a 100k-event trace, and few files never
    need it."""
    if (os.cpu_count() or 1) < 2:
        return False
    use_cache = cache_enabled(cache)
    todo = [p for p in paths if not (use_cache and has_rank_summary(p, summary_key(p, by_shape)))]
    many = len(todo) >= LOCAL_CLUSTER_MIN_FILES or file_bytes(todo) >= LOCAL_CLUSTER_MIN_BYTES
    return many and _dask_installed()


def _dask_installed() -> bool:
    try:
        require_dask()
    except DaskUnavailable:
        return False
    return True


def _summarize_on_dask(
    paths: Sequence[Path], address: str, by_shape: bool, cache: bool, progress: bool
) -> list[Result]:
    with dask_client(address, workers=len(paths)) as client:
        futures = client.map(
            summarize_file, [str(p) for p in paths], by_shape=by_shape, cache=cache, pure=False
        )
        from distributed import as_completed

        with _progress(len(futures), progress) as advance:
            for _ in as_completed(futures):
                advance(1)
        values = client.gather(futures)
    return [_result(value) for value in values]


def require_dask() -> None:
    """Raise :class:`DaskUnavailable`, naming the extra to install, without dask.distributed."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise DaskUnavailable(
            f"a Dask cluster needs dask.distributed ({exc}): {DASK_EXTRA_HINT}"
        ) from exc


@contextlib.contextmanager
def dask_client(address: str, *, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``address``, or of a LocalCluster started
    for it (``"local"``: one single-threaded worker process per core, at most ``workers``),
    closed on exit.

    Raises:
        DaskUnavailable: dask.distributed is not installed, or the scheduler cannot be reached.
    """
    require_dask()
    from distributed import Client, LocalCluster

    if address != LOCAL:
        try:
            client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise DaskUnavailable(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
        with client:
            yield client
        return
    count = max(1, min(os.cpu_count() or 1, workers or os.cpu_count() or 1))
    cluster = LocalCluster(
        n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _progress(total: int, wanted: bool) -> Iterator[Progress]:
    """A rich progress bar on stderr, only where asked, on a terminal and for several files;
    yields a function that advances it."""
    if not wanted or total < 2:
        yield lambda _: None
        return
    from rich.console import Console
    from rich.progress import Progress as Bar

    console = Console(stderr=True)  # never into the JSON on stdout
    if not console.is_terminal:
        yield lambda _: None
        return
    with Bar(console=console, transient=True) as bar:
        task = bar.add_task("summarising traces", total=total)
        yield lambda done: bar.advance(task, done)
