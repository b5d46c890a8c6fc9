"""A columnar cache of loaded traces: Parquet files beside the run, read instead of the JSON.

For a trace ``<dir>/<file>``, each of its tables is written to
``<dir>/meta/cache/<file>.v<FORMAT_VERSION>.<table>.parquet`` after a load from the JSON. Every
file carries its key (the source's size and mtime_ns and :data:`FORMAT_VERSION`) in its Parquet
metadata; a file whose key does not match the source as it is now is ignored, and the next
load from the JSON replaces it. ``meta/`` is where a trace store run keeps its side files, and
nothing reads it as traces. A bare trace file gets a ``meta/cache/`` beside it too, when its
directory is writable; where it is not, nothing is cached.

The cache is a speed-up only: a file that cannot be written or read (no permission, a full
disk, a corrupt or half-copied file) is skipped with a debug log, and the load goes on from the
JSON. Files appear atomically (a temporary name, then a rename), so concurrent loads of the same
trace never see half a file. ``TRAINPROF_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd

try:  # here, not at the first load: 12 ms and 5 MB, paid once
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyarrow.types as pa_types
except ImportError:  # pragma: no cover - the cache needs pyarrow; without it, loads read JSON
    pa = pq = pa_types = None

# Bump whenever the tables a load builds change (a column, a dtype, a vocabulary's order).
FORMAT_VERSION = 2
META_DIR = "meta"  # a run's side files (run.json, steps); never read as traces
CACHE_DIR = (META_DIR, "cache")
CACHE_ENV = "TRAINPROF_CACHE"
TABLES = ("events", "flows", "counters", "memory", "threads", "processes")
_KEY = b"trainprof.cache.key"
_CATEGORIES = b"trainprof.cache.categories"
_EXTRA = b"trainprof.cache.extra"
_OFF = ("0", "false", "no", "off")
# Rows per Parquet row group: the writer holds a whole group in memory (~12 MB for 60k events
# at one group; 32k-row groups cut a 100k-event load's peak by 35 bytes per event, 8k-row
# groups by 20 more: the writer's peak on diff_control's events 6.4 -> 4.3 MB, for 2 ms more
# writing and 1 ms more reading).
ROW_GROUP_ROWS = 8_192

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedTrace:
    """A trace's tables as the cache holds them.

    Attributes:
        tables: one DataFrame per name in :data:`TABLES`.
        meta: the file's top-level keys (``TraceTable.meta``).
        event_count: events of every phase in the file.
    """

    tables: dict[str, pd.DataFrame]
    meta: dict[str, Any]
    event_count: int


def cache_enabled(requested: bool = True) -> bool:
    """Whether to use the cache: asked for, not turned off by ``TRAINPROF_CACHE=0``, and
    pyarrow installed."""
    off = os.environ.get(CACHE_ENV, "1").strip().lower() in _OFF
    return requested and not off and pq is not None


def cache_files(path: Path) -> dict[str, Path]:
    """Where the cache of trace ``path`` lives, per table."""
    directory = path.parent.joinpath(*CACHE_DIR)
    return {table: directory / f"{path.name}.v{FORMAT_VERSION}.{table}.parquet" for table in TABLES}


def source_key(path: Path) -> bytes:
    """The key a cache of ``path`` must carry: its size, mtime_ns and the format version.

    Raises:
        OSError: ``path`` cannot be stat'ed.
    """
    stat = path.stat()
    key = {"format": FORMAT_VERSION, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return msgspec.json.encode(key)


def read_cache(path: Path, key: bytes) -> CachedTrace | None:
    """The cached tables of trace ``path`` if every file is there and carries ``key``.

    Returns:
        The tables, or None (nothing cached, stale, or unreadable: the caller loads the JSON).
    """
    files = cache_files(path)
    if not files["events"].is_file():
        return None
    try:
        return _read(files, key)
    except Exception as exc:  # noqa: BLE001 - a cache must never fail a load, whatever it holds
        log.debug("ignoring the cache of %s: %s", path, exc)
        return None


def _read(files: dict[str, Path], key: bytes) -> CachedTrace | None:
    tables: dict[str, pd.DataFrame] = {}
    extra: dict[str, Any] = {}
    for name, file in files.items():
        table = pq.ParquetFile(file).read()
        metadata = table.schema.metadata or {}
        if metadata.get(_KEY) != key:
            return None
        if name == "events":
            extra = msgspec.json.decode(metadata[_EXTRA])
        tables[name] = _to_frame(table, msgspec.json.decode(metadata.get(_CATEGORIES, b"{}")))
    return CachedTrace(tables=tables, meta=extra["meta"], event_count=extra["event_count"])


def _to_frame(table: Any, categories: dict[str, list[str]]) -> pd.DataFrame:
    """A DataFrame of the table's columns as they were written, sharing Arrow's memory."""
    if _has_text(table, categories):  # a small table: pandas' own round trip keeps its dtypes
        frame = table.to_pandas()
    else:
        columns = {name: table.column(name).to_numpy() for name in table.column_names}
        frame = pd.DataFrame(columns, copy=False)
    for column, values in categories.items():
        codes = frame[column].to_numpy()
        frame[column] = pd.Categorical.from_codes(codes, pd.Index(values, dtype=object))
    return frame


def _has_text(table: Any, categories: dict[str, list[str]]) -> bool:
    return any(
        not (pa_types.is_integer(field.type) or pa_types.is_floating(field.type))
        for field in table.schema
        if field.name not in categories
    )


def write_cache(
    path: Path, key: bytes, tables: dict[str, pd.DataFrame], meta: dict[str, Any], events: int
) -> None:
    """Cache the tables of trace ``path`` under ``key``; quietly nothing where it cannot.

    Args:
        path: the trace file.
        key: :func:`source_key` of the file as it was before it was read.
        tables: one DataFrame per name in :data:`TABLES`.
        meta: the file's top-level keys.
        events: events of every phase in the file.
    """
    files = cache_files(path)
    try:
        files["events"].parent.mkdir(parents=True, exist_ok=True)
        extra = msgspec.json.encode({"meta": meta, "event_count": events})
        for name, file in files.items():
            _write(file, tables[name], {_KEY: key, **({_EXTRA: extra} if name == "events" else {})})
        _remove_other_versions(path, files)
    except Exception as exc:  # noqa: BLE001 - a cache must never fail a load
        log.debug("not caching %s: %s", path, exc)


def _write(file: Path, frame: pd.DataFrame, metadata: dict[bytes, bytes]) -> None:
    table = _to_table(frame)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            # lz4 without dictionary pages: measured fastest to write and to read back here
            # (a 109k-event trace: 27 ms to write, 11 ms to read, 2 MB).
            pq.write_table(
                table,
                out,
                row_group_size=ROW_GROUP_ROWS,
                compression="lz4",
                use_dictionary=False,
                write_statistics=False,
            )
        os.replace(tmp, file)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _to_table(frame: pd.DataFrame) -> Any:
    """An Arrow table of ``frame``: categoricals as codes (their categories in the metadata,
    in order), numeric columns as they are, without copies."""
    columns = dict(frame.items())  # each column's Series once (a lookup builds a new one)
    strings = {c: s.array for c, s in columns.items() if isinstance(s.dtype, pd.CategoricalDtype)}
    categories = msgspec.json.encode({c: v.categories.tolist() for c, v in strings.items()})
    codes = {c: v.codes for c, v in strings.items()}
    if all(c in codes or s.dtype.kind in "iuf" for c, s in columns.items()):
        arrays = {c: pa.array(codes[c] if c in codes else s.to_numpy()) for c, s in columns.items()}
        # Numbers and codes are never null: required columns have no levels to write (a
        # quarter of the write's time).
        fields = [pa.field(c, array.type, nullable=False) for c, array in arrays.items()]
        table = pa.Table.from_arrays(list(arrays.values()), schema=pa.schema(fields))
    else:
        table = pa.Table.from_pandas(frame.assign(**codes), preserve_index=False)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), _CATEGORIES: categories})


def _remove_other_versions(path: Path, files: dict[str, Path]) -> None:
    """Older formats' files of this trace: nothing will read them again."""
    keep = set(files.values())
    for stale in files["events"].parent.glob(f"{glob.escape(path.name)}.v*.parquet"):
        if stale not in keep:
            with contextlib.suppress(OSError):
                stale.unlink()


def write_frame(file: Path, frame: pd.DataFrame, metadata: dict[bytes, bytes]) -> None:
    """Write ``frame`` to the Parquet ``file`` as the cache writes its tables (atomically,
    categoricals as codes), with ``metadata`` in its schema; the folder must exist.

    Raises:
        Exception: whatever pyarrow or the filesystem raises; callers decide what a failed
            write means.
    """
    _write(file, frame, metadata)


def read_frame(file: Path) -> tuple[pd.DataFrame, dict[bytes, bytes]]:
    """A frame :func:`write_frame` wrote, and its schema metadata.

    Raises:
        Exception: whatever pyarrow raises for a missing, corrupt or foreign file.
    """
    table = pq.ParquetFile(file).read()
    metadata = dict(table.schema.metadata or {})
    return _to_frame(table, msgspec.json.decode(metadata.get(_CATEGORIES, b"{}"))), metadata
