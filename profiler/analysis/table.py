"""Load Kineto/Chrome trace files into columnar tables: the only reader of trace files.

Any trace in Kineto's layout loads: ours, plain torch.profiler's, and other tools', across schema
generations (2021's ``Operator``/``Runtime``/``Kernel`` categories to 2025's ``cpu_op``/
``cuda_runtime``/``kernel``...), CUDA, ROCm, MTIA, XPU and CPU-only.

A load streams the file (:mod:`profiler.analysis.decode`), builds the tables a piece at a time
(:mod:`profiler.analysis.build`), and leaves a columnar copy of them beside the run
(:mod:`profiler.analysis.cache`) that the next load of the unchanged file reads instead.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd

from profiler.analysis.build import Tables, build_all
from profiler.analysis.cache import (
    TABLES,
    CachedTrace,
    cache_enabled,
    read_cache,
    source_key,
    write_cache,
)
from profiler.analysis.columns import EVENT_COLUMNS, FLOW_COLUMNS, GPU_KINDS, EventError
from profiler.analysis.decode import META_KEYS, MISSING_INT, EventStream
from profiler.analysis.devices import KIND_BY_CATEGORY, detect_device
from profiler.analysis.guards import MAX_TEXT_BYTES, text_limit
from profiler.analysis.halves import load_in_halves, split_worthwhile
from profiler.analysis.rows import COUNTER_COLUMNS, MEMORY_COLUMNS
from profiler.events import TRAINPROF_KEY
from profiler.store.chrome_trace import TraceFormatError
from profiler.store.remote import local_root

__all__ = [
    "GPU_KINDS", "KIND_BY_CATEGORY", "MAX_TEXT_BYTES", "META_KEYS", "MISSING_INT", "TraceSet",
    "TraceTable", "find_trace_files", "is_trace_file", "load", "load_files", "load_trace",
]  # fmt: skip

_TRACE_SUFFIXES = (".json", ".json.gz")
# The columns of each table, in order, as a load from the JSON builds them: a cache that holds
# others is not this version's, whatever its key says.
_COLUMNS = {
    "events": list(EVENT_COLUMNS), "flows": list(FLOW_COLUMNS), "counters": COUNTER_COLUMNS,
    "memory": list(MEMORY_COLUMNS), "threads": ["pid", "tid", "thread_name"],
    "processes": ["pid", "process_name"],
}  # fmt: skip

_MAX_RANK = 2**31 - 1  # torch.distributed's ranks are C ints

log = logging.getLogger(__name__)


def _no_flows() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="category" if t == "category" else t) for c, t in FLOW_COLUMNS.items()}
    )


@dataclass(frozen=True)
class TraceTable:
    """One trace file as tables. Times are microseconds as the file has them (``ts_us``).

    Attributes:
        path: the file.
        rank: from ``distributedInfo`` (0 when absent).
        device: ``cuda``, ``rocm``, ``mtia``, ``xpu`` or ``cpu``: what its categories, device
            activity and device properties say (:func:`profiler.analysis.devices.detect_device`).
        meta: the file's top-level keys that trainprof reads (:data:`META_KEYS`).
        events: complete events, sorted by start: ``name``, ``cat``, ``kind``, ``pid``, ``tid``,
            ``ts_us``, ``dur_us``, ``end_us`` and the args analyses use as columns
            (``external_id``, ``correlation``, ``stream``, ``device``, ``seq``, ``input_dims``,
            ``grid``, ``block``, ``occupancy_pct``, ``blocks_per_sm``, ``warps_per_sm``,
            ``registers``, ``shared_memory_bytes``, ``bytes``, ``bandwidth_gbps``,
            ``collective``, ``in_nelems``, ``out_nelems``, ``group_size``, ``dtype``,
            ``pg_name``, ``sync_kind``). Missing ints are -1, missing floats NaN, missing
            strings "".
        counters: counter samples, long format: ``name``, ``pid``, ``ts_us``, ``series``,
            ``value``.
        memory: allocator events (``[memory]`` instants): ``ts_us``, ``pid``, ``tid``,
            ``bytes``, ``total_allocated``, ``total_reserved``, ``device_type``, ``device_id``.
        flows: flow events in file order: ``id``, ``ph``, ``cat``, ``pid``, ``tid``, ``ts_us``.
        threads: ``pid``, ``tid``, ``thread_name``; ``processes``: ``pid``, ``process_name``.
        event_count: how many events the file holds, of every phase.
        derived: tables derived from this trace, computed once
            (:func:`profiler.analysis.memo.per_trace`); not part of equality.
    """

    path: Path
    rank: int
    device: str
    meta: dict[str, Any]
    events: pd.DataFrame
    counters: pd.DataFrame
    memory: pd.DataFrame
    threads: pd.DataFrame
    processes: pd.DataFrame
    event_count: int = 0
    flows: pd.DataFrame = field(default_factory=_no_flows, repr=False)
    # Results of profiler.analysis.memo.per_trace functions: they live as long as the trace.
    # init=False so that dataclasses.replace (new tables) starts an empty one.
    derived: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def trainprof(self) -> dict[str, Any] | None:
        """Our own metadata, when trainprof wrote the file."""
        value = self.meta.get(TRAINPROF_KEY)
        return value if isinstance(value, dict) else None

    @property
    def device_properties(self) -> list[dict[str, Any]]:
        """Kineto's ``deviceProperties`` (empty on CPU-only traces); entries that are not
        objects are left out."""
        props = self.meta.get("deviceProperties")
        return [p for p in props if isinstance(p, dict)] if isinstance(props, list) else []


@dataclass(frozen=True)
class TraceSet:
    """Everything :func:`load` found: the traces that loaded, and one error per file that did not.

    Attributes:
        traces: loaded traces, ordered by run, then rank, then file name.
        errors: the files that failed, each naming the file and the problem.
    """

    traces: tuple[TraceTable, ...]
    errors: tuple[TraceFormatError, ...] = field(default=())


def is_trace_file(path: Path) -> bool:
    """A Chrome/Kineto trace by its name: ``*.json`` or ``*.json.gz``, not hidden or partial."""
    return path.is_file() and path.name.endswith(_TRACE_SUFFIXES) and not path.name.startswith(".")


def find_trace_files(path: str | Path) -> list[Path]:
    """Trace files at ``path``: the file itself, a run directory's, or every run's under a root
    (as :class:`profiler.analysis.run.RunSet` lists them: symlinked directories not followed,
    files resolving outside ``path`` not read).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    from profiler.analysis.run import RunSet  # run.py builds on this module

    root = local_root(path)  # a URL: its local copy
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    if root.is_file():
        return [root]
    return sorted(p for run in RunSet(root) for p in run.trace_paths)


def load(
    path: str | Path,
    *,
    progress: bool = False,
    cache: bool = True,
    max_text_bytes: int | None = None,
) -> TraceSet:
    """Load every trace at ``path`` (a file, a run directory or a root of runs).

    A file that cannot be read is reported in ``errors`` and the others still load.

    Args:
        path: where to look.
        progress: show a progress bar (rich) while loading.
        cache: read and write the columnar cache (see :func:`load_trace`).
        max_text_bytes: the most JSON text one file may hold (see :func:`load_trace`).

    Returns:
        The traces and the errors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TraceFormatError: ``path`` is a single file and it cannot be loaded.
        ValueError: ``max_text_bytes`` or ``$TRAINPROF_MAX_TRACE_BYTES`` is not a size.
    """
    limit = text_limit(max_text_bytes)  # a bad setting is said once, before any file
    path = local_root(path)  # a URL: its local copy
    files = find_trace_files(path)
    if Path(path).is_file():
        return TraceSet(traces=(load_trace(files[0], cache=cache, max_text_bytes=limit),))
    loaded = load_files(_with_progress(files, progress), cache=cache, max_text_bytes=limit)
    traces = sorted(loaded.traces, key=lambda t: (str(t.path.parent), t.rank, t.path.name))
    return TraceSet(traces=tuple(traces), errors=loaded.errors)


def load_files(
    files: Iterable[Path], *, cache: bool = True, max_text_bytes: int | None = None
) -> TraceSet:
    """Load each of ``files`` in turn; a file that cannot be read becomes its error.

    Args:
        files: trace files.
        cache: read and write the columnar cache (see :func:`load_trace`).
        max_text_bytes: the most JSON text one file may hold (see :func:`load_trace`).

    Returns:
        The traces in ``files`` order, and the errors.
    """
    traces: list[TraceTable] = []
    errors: list[TraceFormatError] = []
    for file in files:
        try:
            traces.append(load_trace(file, cache=cache, max_text_bytes=max_text_bytes))
        except TraceFormatError as exc:
            errors.append(exc)
    return TraceSet(traces=tuple(traces), errors=tuple(errors))


def _with_progress(files: Sequence[Path], progress: bool) -> Iterable[Path]:
    if not progress or len(files) < 2 and _size(files) < 20 * 1024**2:
        yield from files
        return
    from rich.console import Console
    from rich.progress import track

    # On stderr, beside the errors, and only on a terminal: elsewhere rich writes an empty
    # line where the bar would be, into the JSON on stdout or between the error lines.
    console = Console(stderr=True)
    if not console.is_terminal:
        yield from files
        return
    yield from track(files, description="loading traces", transient=True, console=console)


def _size(files: Sequence[Path]) -> int:
    """Bytes on disk; a file gone since it was listed counts 0 (its load will say so)."""
    total = 0
    for file in files:
        with contextlib.suppress(OSError):
            total += file.stat().st_size
    return total


def load_trace(
    path: str | Path, *, cache: bool = True, max_text_bytes: int | None = None
) -> TraceTable:
    """Load one trace file.

    Args:
        path: the file (``.json`` or ``.json.gz``).
        cache: read the tables from the columnar cache when it matches the file as it is now,
            and write it after a load from the JSON (``<dir>/meta/cache/``, see
            :mod:`profiler.analysis.cache`; ``TRAINPROF_CACHE=0`` turns it off too). Either
            way the tables are the same; a cache that cannot be read is passed over.
        max_text_bytes: the most JSON text the file may hold once gunzipped (default
            ``$TRAINPROF_MAX_TRACE_BYTES``, else :data:`MAX_TEXT_BYTES`, 16 GiB); a file with
            more is refused as soon as its text passes it.

    Raises:
        TraceFormatError: the file is not a readable Chrome/Kineto trace, or is past a limit
            (:mod:`profiler.analysis.guards`); the message names it and says why. Nothing
            else: whatever goes wrong while reading the file is said this way.
        ValueError: ``max_text_bytes`` or ``$TRAINPROF_MAX_TRACE_BYTES`` is not a size.
    """
    path = Path(path)
    limit = text_limit(max_text_bytes)
    try:
        return _load_trace(path, cache, limit)
    except TraceFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - one file's problem, said as one, never a crash
        raise TraceFormatError(path, _problem(exc)) from exc


def _load_trace(path: Path, cache: bool, max_text_bytes: int) -> TraceTable:
    key = _cache_key(path) if cache_enabled(cache) else None
    cached = read_cache(path, key) if key is not None else None
    trace = _cached_trace(path, cached) if cached is not None else None
    if trace is not None:
        return trace
    with _collector_paused():
        tables, meta = _from_json(path, max_text_bytes)
    if key is not None:
        frames = {name: getattr(tables, name) for name in TABLES}
        write_cache(path, key, frames, meta, tables.event_count)
    return _trace_table(path, tables, meta)


def _from_json(path: Path, max_text_bytes: int) -> tuple[Tables, dict[str, Any]]:
    """The file's tables and top-level keys, built a piece of its text at a time (a large
    file's halves in two processes, :mod:`profiler.analysis.halves`)."""
    if split_worthwhile(path):
        loaded = load_in_halves(path, max_text_bytes)
        if loaded is not None:
            return loaded
    stream = EventStream(path, max_text_bytes=max_text_bytes)
    return build_all(stream).finish(), stream.meta


def _cached_trace(path: Path, cached: CachedTrace) -> TraceTable | None:
    """The trace from its cache, or None where the cache does not hold what a load builds
    (then the JSON is read, and its tables replace the cache)."""
    try:
        if not isinstance(cached.meta, dict) or type(cached.event_count) is not int:
            return None
        if any(list(cached.tables[name].columns) != _COLUMNS[name] for name in TABLES):
            return None
        return _trace_table(path, Tables(**cached.tables, event_count=cached.event_count),
                            cached.meta)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a cache must never fail a load
        log.debug("ignoring the cache of %s: %s", path, exc)
        return None


def _problem(exc: Exception) -> str:
    """What went wrong reading a file, in words, for an error that is not a TraceFormatError."""
    if isinstance(exc, EventError):
        return str(exc)
    if isinstance(exc, msgspec.DecodeError):
        return f"invalid JSON: {exc}"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply to decode"
    if isinstance(exc, MemoryError):
        return "ran out of memory while loading it"
    return f"cannot be read ({type(exc).__name__}: {exc})"


def _cache_key(path: Path) -> bytes | None:
    try:
        return source_key(path)
    except OSError:
        return None  # the load says what is wrong with the file


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: a load allocates ~2 objects per event and no cycles,
    and each collection it would trigger walks every object alive in the process (in a
    dashboard or a notebook, many), which cost a quarter of the load time in the benchmark."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _trace_table(path: Path, tables: Tables, meta: dict[str, Any]) -> TraceTable:
    return TraceTable(
        path=path,
        rank=_rank(meta),
        device=detect_device(tables.events, meta),
        meta=meta,
        events=tables.events,
        counters=tables.counters,
        memory=tables.memory,
        threads=tables.threads,
        processes=tables.processes,
        event_count=tables.event_count,
        flows=tables.flows,
    )


def _rank(meta: dict[str, Any]) -> int:
    info = meta.get("distributedInfo")
    rank = info.get("rank") if isinstance(info, dict) else None
    return rank if type(rank) is int and 0 <= rank <= _MAX_RANK else 0
