"""Load Kineto/Chrome trace files into columnar tables: the only reader of trace files.

Any trace in Kineto's layout loads: ours, plain torch.profiler's, and other tools', across schema
generations (2021's ``Operator``/``Runtime``/``Kernel`` categories to 2025's ``cpu_op``/
``cuda_runtime``/``kernel``...), CUDA, ROCm and CPU-only.

Decoding is typed (msgspec): each event's envelope is decoded into a struct and its ``args`` kept
as raw JSON, and only complete events have their args decoded, into a struct that names just the
keys analyses use; everything else is skipped without building Python objects.
"""

from __future__ import annotations

import gc
import gzip
import math
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from profiler.events import (
    PHASE_COMPLETE,
    PHASE_COUNTER,
    PHASE_FLOW_END,
    PHASE_FLOW_START,
    PHASE_INSTANT,
    PHASE_METADATA,
    TRAINPROF_KEY,
)
from profiler.store.chrome_trace import TraceFormatError

MISSING_INT = -1
# Files beyond this are refused rather than risking the machine's memory: ~50M events.
MAX_TRACE_BYTES = 8 * 1024**3
_TRACE_SUFFIXES = (".json", ".json.gz")

# Kinds: one vocabulary over both schema generations and both vendors.
KIND_BY_CATEGORY = {
    "cpu_op": "cpu_op",
    "operator": "cpu_op",
    "user_annotation": "user_annotation",
    "gpu_user_annotation": "gpu_user_annotation",
    "python_function": "python_function",
    "python": "python_function",
    "cuda_runtime": "runtime",
    "runtime": "runtime",
    "cuda_driver": "driver",
    "kernel": "kernel",
    "gpu_memcpy": "memcpy",
    "memcpy": "memcpy",
    "gpu_memset": "memset",
    "memset": "memset",
    "cuda_sync": "sync",
    "trace": "trace",
}
GPU_KINDS = ("kernel", "memcpy", "memset")


class _Args(msgspec.Struct, gc=False, rename={
    "external_id": "External id",
    "external_id_2021": "external id",
    "seq": "Sequence number",
    "fwd_tid": "Fwd thread id",
    "input_dims": "Input Dims",
    "input_dims_2021": "Input dims",
    "input_type": "Input type",
    "occupancy": "est. achieved occupancy %",
    "blocks_per_sm": "blocks per SM",
    "warps_per_sm": "warps per SM",
    "registers": "registers per thread",
    "shared_memory": "shared memory",
    "bandwidth": "memory bandwidth (GB/s)",
    "collective": "Collective name",
    "in_nelems": "In msg nelems",
    "out_nelems": "Out msg nelems",
    "group_size": "Group size",
    "pg_name": "Process Group Name",
    "sync_kind": "cuda_sync_kind",
}):  # fmt: skip
    external_id: int = MISSING_INT
    external_id_2021: int = MISSING_INT
    correlation: int = MISSING_INT
    stream: int | str = MISSING_INT
    device: int = MISSING_INT
    seq: int = MISSING_INT
    fwd_tid: int = MISSING_INT
    input_dims: msgspec.Raw = msgspec.Raw(b"")
    input_dims_2021: msgspec.Raw = msgspec.Raw(b"")
    input_type: msgspec.Raw = msgspec.Raw(b"")
    grid: msgspec.Raw = msgspec.Raw(b"")
    block: msgspec.Raw = msgspec.Raw(b"")
    occupancy: float = math.nan
    blocks_per_sm: float = math.nan
    warps_per_sm: float = math.nan
    registers: int = MISSING_INT
    shared_memory: int = MISSING_INT
    bytes: int = MISSING_INT
    bandwidth: float = math.nan
    collective: str = ""
    in_nelems: int = MISSING_INT
    out_nelems: int = MISSING_INT
    group_size: int = MISSING_INT
    dtype: str = ""
    pg_name: str = ""
    sync_kind: str = ""


class _MemoryArgs(msgspec.Struct, gc=False, rename={
    "bytes": "Bytes",
    "total_allocated": "Total Allocated",
    "total_reserved": "Total Reserved",
    "device_type": "Device Type",
    "device_id": "Device Id",
}):  # fmt: skip
    bytes: int = 0
    total_allocated: int = MISSING_INT
    total_reserved: int = MISSING_INT
    device_type: int = MISSING_INT
    device_id: int = MISSING_INT


class _Event(msgspec.Struct, gc=False):
    ph: str = ""
    cat: str = ""
    name: str = ""
    pid: int | str = MISSING_INT
    tid: int | str | None = MISSING_INT
    ts: float = math.nan
    dur: float = 0.0
    id: int | str | None = None
    bp: str = ""
    args: msgspec.Raw = msgspec.Raw(b"")


# Top-level keys kept in TraceTable.meta; any other is skipped while decoding, in the same single
# pass that decodes the events (a separate pass over the document cost 5% of a load).
META_KEYS = (
    "schemaVersion", "deviceProperties", "distributedInfo", "displayTimeUnit",
    "baseTimeNanoseconds", "traceName", TRAINPROF_KEY, "record_shapes", "cupti_version",
    "cuda_runtime_version", "cuda_driver_version", "roctracer_version", "hip_runtime_version",
    "trace_id", "host_name",
)  # fmt: skip
_Document = msgspec.defstruct(
    "_Document",
    [("traceEvents", list[_Event] | None, None)]
    + [(key, msgspec.Raw, msgspec.Raw(b"")) for key in META_KEYS],
    gc=False,
)
_DOCUMENT_DECODER = msgspec.json.Decoder(_Document)
_EVENTS_DECODER = msgspec.json.Decoder(list[_Event])
_ARGS_LIST_DECODER = msgspec.json.Decoder(list[_Args])
_MEMORY_DECODER = msgspec.json.Decoder(_MemoryArgs)
_ANY_DECODER = msgspec.json.Decoder()


@dataclass(frozen=True)
class TraceTable:
    """One trace file as tables. Times are microseconds as the file has them (``ts_us``).

    Attributes:
        path: the file.
        rank: from ``distributedInfo`` (0 when absent).
        device: ``cuda``, ``rocm`` or ``cpu``: what the GPU events and device properties say.
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
        flows: flow events: ``id``, ``ph``, ``cat``, ``pid``, ``tid``, ``ts_us``.
        threads: ``pid``, ``tid``, ``thread_name``; ``processes``: ``pid``, ``process_name``.
        event_count: how many events the file holds, of every phase.
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
    flow_events: tuple[Any, ...] = field(default=(), repr=False)

    @cached_property
    def flows(self) -> pd.DataFrame:
        """Flow events (``id``, ``ph``, ``cat``, ``pid``, ``tid``, ``ts_us``), built on first use:
        most analyses never need them, and a trace can hold one per CPU->GPU launch."""
        return _flows(list(self.flow_events))

    @property
    def trainprof(self) -> dict[str, Any] | None:
        """Our own metadata, when trainprof wrote the file."""
        value = self.meta.get(TRAINPROF_KEY)
        return value if isinstance(value, dict) else None

    @property
    def device_properties(self) -> list[dict[str, Any]]:
        """Kineto's ``deviceProperties`` (empty on CPU-only traces)."""
        props = self.meta.get("deviceProperties")
        return props if isinstance(props, list) else []


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
    """Trace files at ``path``: the file itself, a run directory's, or every run's under a root.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    if root.is_file():
        return [root]
    # rglob skips nothing by itself; meta/ holds run.json, which is no trace.
    return sorted(p for p in root.rglob("*") if is_trace_file(p) and "meta" not in p.parts[-2:-1])


def load(path: str | Path, *, progress: bool = False) -> TraceSet:
    """Load every trace at ``path`` (a file, a run directory or a root of runs).

    A file that cannot be read is reported in ``errors`` and the others still load.

    Args:
        path: where to look.
        progress: show a progress bar (rich) while loading.

    Returns:
        The traces and the errors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TraceFormatError: ``path`` is a single file and it cannot be loaded.
    """
    files = find_trace_files(path)
    if Path(path).is_file():
        return TraceSet(traces=(load_trace(files[0]),))
    traces: list[TraceTable] = []
    errors: list[TraceFormatError] = []
    for file in _with_progress(files, progress):
        try:
            traces.append(load_trace(file))
        except TraceFormatError as exc:
            errors.append(exc)
    traces.sort(key=lambda t: (str(t.path.parent), t.rank, t.path.name))
    return TraceSet(traces=tuple(traces), errors=tuple(errors))


def _with_progress(files: Sequence[Path], progress: bool) -> Iterable[Path]:
    if not progress or len(files) < 2 and sum(f.stat().st_size for f in files) < 20 * 1024**2:
        yield from files
        return
    from rich.progress import track

    yield from track(files, description="loading traces", transient=True)


def read_trace_bytes(path: Path) -> bytes:
    """The JSON text of a trace file, gunzipped when it is gzip.

    Raises:
        TraceFormatError: unreadable, empty, truncated gzip, or too large.
    """
    try:
        size = path.stat().st_size
        if size > MAX_TRACE_BYTES:
            raise TraceFormatError(path, f"{size / 1024**3:.1f} GiB is over the 8 GiB limit")
        data = path.read_bytes()
    except OSError as exc:
        raise TraceFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    if not data:
        raise TraceFormatError(path, "empty file")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise TraceFormatError(path, f"corrupt or truncated gzip: {exc}") from exc
        if not data:
            raise TraceFormatError(path, "empty after gunzip")
    return data


def load_trace(path: str | Path) -> TraceTable:
    """Load one trace file.

    Raises:
        TraceFormatError: the file is not a readable Chrome/Kineto trace; the message says why.
    """
    path = Path(path)
    with _collector_paused():
        return _load_trace(path)


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


def _load_trace(path: Path) -> TraceTable:
    data = read_trace_bytes(path)
    meta: dict[str, Any] = {}
    try:
        if data.lstrip()[:1] == b"[":  # the Chrome format's bare-array form
            events = _EVENTS_DECODER.decode(data)
        else:
            document: Any = _DOCUMENT_DECODER.decode(data)  # a struct built from META_KEYS
            if document.traceEvents is None:
                raise TraceFormatError(path, "no traceEvents array: not a Chrome/Kineto trace")
            events = document.traceEvents
            for key in META_KEYS:
                raw = getattr(document, key)
                if raw:
                    meta[key] = _ANY_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise TraceFormatError(path, f"not a Kineto trace: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise TraceFormatError(path, f"invalid or truncated JSON: {exc}") from exc
    return _build(path, events, meta)


def _build(path: Path, events: list[_Event], meta: dict[str, Any]) -> TraceTable:
    complete = [e for e in events if e.ph == PHASE_COMPLETE and e.ts == e.ts]  # drop NaN ts
    by_phase: dict[str, list[_Event]] = {}
    for event in events:  # the rest, in one pass
        if event.ph != PHASE_COMPLETE:
            by_phase.setdefault(event.ph, []).append(event)
    table = _complete_table(complete)
    instants = by_phase.get(PHASE_INSTANT, []) + by_phase.get("I", [])
    flows = [e for ph in (PHASE_FLOW_START, PHASE_FLOW_END, "t") for e in by_phase.get(ph, [])]
    metadata = by_phase.get(PHASE_METADATA, [])
    return TraceTable(
        path=path,
        rank=_rank(meta),
        device=_device_kind(table, meta),
        meta=meta,
        events=table,
        counters=_counters(by_phase.get(PHASE_COUNTER, [])),
        memory=_memory([e for e in instants if e.name == "[memory]"]),
        flow_events=tuple(flows),
        threads=_names([e for e in metadata if e.name == "thread_name"], "thread_name"),
        processes=_names([e for e in metadata if e.name == "process_name"], "process_name"),
        event_count=len(events),
    )


def _int_id(value: int | str | None) -> int:
    """pid/tid as ints: Kineto's GPU lanes in 2021 traces are "stream 7"; other labels -> -1."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        tail = value.rsplit(" ", 1)[-1]
        if tail.lstrip("-").isdigit():
            return int(tail)
    return MISSING_INT


def _complete_table(events: list[_Event]) -> pd.DataFrame:
    # One decode call over all args (joined into one array) instead of one call per event, and
    # columns through map/attrgetter: per-event Python calls dominated the load time.
    raws = [e.args if e.args else b"{}" for e in events]
    args = _ARGS_LIST_DECODER.decode(b"[" + b",".join(raws) + b"]")
    cats = [e.cat for e in events]
    kinds = {cat: KIND_BY_CATEGORY.get(cat.lower(), "other") for cat in set(cats)}
    kind = [kinds[c] for c in cats]
    ts = _array(events, "ts", np.float64)
    dur = _array(events, "dur", np.float64)
    stream = _ids(list(map(attrgetter("stream"), args)))
    stream[stream == 0xFFFFFFFF] = MISSING_INT  # Kineto writes -1 as unsigned 32-bit there
    columns: dict[str, Any] = {
        "name": _categorical([e.name for e in events]),
        "cat": _categorical(cats),
        "kind": _categorical(kind),
        "pid": _ids([e.pid for e in events]),
        "tid": _ids([e.tid for e in events]),
        "ts_us": ts,
        "dur_us": dur,
        "end_us": ts + dur,
        "external_id": np.maximum(_array(args, "external_id"), _array(args, "external_id_2021")),
        "correlation": _array(args, "correlation"),
        "stream": stream,
    }
    # Launch and copy details exist only on GPU work, shapes only on host ops: build those
    # columns over the rows that can have them (a ninth of the events are GPU work, typically).
    kind_array = np.array(kind, dtype=object)
    gpu = np.flatnonzero(np.isin(kind_array, GPU_KINDS))
    host = np.flatnonzero(~np.isin(kind_array, GPU_KINDS))
    host_args, gpu_args = [args[i] for i in host], [args[i] for i in gpu]
    columns["input_dims"] = _texts(host_args, host, len(args), "input_dims", "input_dims_2021")
    columns["grid"] = _texts(gpu_args, gpu, len(args), "grid")
    columns["block"] = _texts(gpu_args, gpu, len(args), "block")
    for column, field_name, dtype, gpu_only in _ARG_COLUMNS:
        rows, subset = (gpu, gpu_args) if gpu_only else (slice(None), args)
        if dtype is str:
            texts = np.full(len(args), "", dtype=object)
            texts[rows] = _array(subset, field_name, str)
            columns[column] = _categorical(texts)
        else:
            values = np.full(len(args), np.nan if dtype is np.float64 else MISSING_INT, dtype)
            values[rows] = _array(subset, field_name, dtype)
            columns[column] = values
    return pd.DataFrame(columns).sort_values("ts_us", kind="stable", ignore_index=True)


# (column, _Args field, dtype, only on GPU work) for args copied as they are.
_ARG_COLUMNS: list[tuple[str, str, Any, bool]] = [
    ("device", "device", np.int64, True),
    ("seq", "seq", np.int64, False),
    ("fwd_tid", "fwd_tid", np.int64, False),
    ("occupancy_pct", "occupancy", np.float64, True),
    ("blocks_per_sm", "blocks_per_sm", np.float64, True),
    ("warps_per_sm", "warps_per_sm", np.float64, True),
    ("registers", "registers", np.int64, True),
    ("shared_memory_bytes", "shared_memory", np.int64, True),
    ("bytes", "bytes", np.int64, True),
    ("bandwidth_gbps", "bandwidth", np.float64, True),
    ("collective", "collective", str, False),
    ("in_nelems", "in_nelems", np.int64, False),
    ("out_nelems", "out_nelems", np.int64, False),
    ("group_size", "group_size", np.int64, False),
    ("dtype", "dtype", str, False),
    ("pg_name", "pg_name", str, False),
    ("sync_kind", "sync_kind", str, False),
]


def _array(items: list[Any], name: str, dtype: Any = np.int64) -> Any:
    values = list(map(attrgetter(name), items))
    return values if dtype is str else np.array(values, dtype=dtype)


def _ids(values: list[Any]) -> np.ndarray:
    """pid/tid/stream as int64: the fast path when all are ints, else :func:`_int_id` each."""
    try:
        return np.array(values, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return np.array([v if type(v) is int else _int_id(v) for v in values], dtype=np.int64)


_WHITESPACE = b" \n\r\t"


def _texts(
    args: list[_Args], rows: np.ndarray, size: int, name: str, fallback: str | None = None
) -> pd.Categorical:
    """Compact JSON text of a list-valued arg (shapes, grid, block) at ``rows`` of a column of
    ``size``, whatever the writer's spacing: these hold only numbers, so dropping whitespace is
    safe and makes equal shapes equal text."""
    raws = list(map(attrgetter(name), args))
    if fallback is not None:
        raws = [r or f for r, f in zip(raws, map(attrgetter(fallback), args), strict=True)]
    # Normalise each distinct text once, not each event's: shapes repeat across thousands of ops.
    codes, uniques = pd.factorize(np.array([bytes(r) for r in raws], dtype=object))
    texts = np.array([u.translate(None, _WHITESPACE).decode() for u in uniques], dtype=object)
    column = np.full(size, "", dtype=object)
    column[rows] = texts[codes] if len(codes) else []
    return _categorical(column)


def _categorical(values: Any) -> pd.Categorical:
    """Strings as a categorical (interned: one copy of each distinct name). Factorising an
    object array is about twice as fast as pd.Categorical on a list under pandas' Arrow strings."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    return pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype=object))


def _counters(events: list[_Event]) -> pd.DataFrame:
    rows = []
    for event in events:
        values = _ANY_DECODER.decode(event.args) if event.args else {}
        if not isinstance(values, dict):
            continue
        for series, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append((event.name, _int_id(event.pid), event.ts, series, float(value)))
    return pd.DataFrame(rows, columns=["name", "pid", "ts_us", "series", "value"])


def _memory(events: list[_Event]) -> pd.DataFrame:
    rows = []
    for event in events:
        args = _MEMORY_DECODER.decode(event.args) if event.args else _MemoryArgs()
        rows.append(
            (
                event.ts,
                _int_id(event.pid),
                _int_id(event.tid),
                args.bytes,
                args.total_allocated,
                args.total_reserved,
                args.device_type,
                args.device_id,
            )
        )
    columns = [
        "ts_us",
        "pid",
        "tid",
        "bytes",
        "total_allocated",
        "total_reserved",
        "device_type",
        "device_id",
    ]
    return pd.DataFrame(rows, columns=columns).sort_values("ts_us", ignore_index=True)


def _flows(events: list[_Event]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": _ids([e.id for e in events]),
            "ph": pd.Categorical([e.ph for e in events]),
            "cat": pd.Categorical([e.cat for e in events]),
            "pid": _ids([e.pid for e in events]),
            "tid": _ids([e.tid for e in events]),
            "ts_us": _array(events, "ts", np.float64),
        }
    )


def _names(events: list[_Event], column: str) -> pd.DataFrame:
    rows = []
    for event in events:
        args = _ANY_DECODER.decode(event.args) if event.args else {}
        name = args.get("name", "") if isinstance(args, dict) else ""
        rows.append((_int_id(event.pid), _int_id(event.tid), str(name)))
    frame = pd.DataFrame(rows, columns=["pid", "tid", column])
    # Kineto writes some thread names twice; one row per lane keeps joins on (pid, tid) 1:1.
    if column == "thread_name":
        return frame.drop_duplicates(["pid", "tid"], keep="last", ignore_index=True)
    return frame.drop(columns="tid").drop_duplicates("pid", keep="last", ignore_index=True)


def _rank(meta: dict[str, Any]) -> int:
    info = meta.get("distributedInfo")
    rank = info.get("rank") if isinstance(info, dict) else None
    return rank if isinstance(rank, int) and not isinstance(rank, bool) else 0


def _device_kind(events: pd.DataFrame, meta: dict[str, Any]) -> str:
    gpu_work = events["kind"].isin(GPU_KINDS).any()
    if not gpu_work and not meta.get("deviceProperties"):
        return "cpu"
    runtime = events.loc[events["kind"] == "runtime", "name"]
    if runtime.astype(str).str.startswith("hip").any() or "roctracer_version" in meta:
        return "rocm"
    return "cuda" if gpu_work or meta.get("deviceProperties") else "cpu"
