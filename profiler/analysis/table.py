"""Load Kineto/Chrome trace files into columnar tables: the only reader of trace files.

Any trace in Kineto's layout loads: ours, plain torch.profiler's, and other tools', across schema
generations (2021's ``Operator``/``Runtime``/``Kernel`` categories to 2025's ``cpu_op``/
``cuda_runtime``/``kernel``...), CUDA, ROCm and CPU-only.

Decoding is typed (msgspec): each event's envelope is decoded into a struct and its ``args`` kept
as raw JSON, and only complete events have their args decoded, into a struct that names just the
keys analyses use; everything else is skipped without building Python objects.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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


_TOP_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])
_EVENTS_DECODER = msgspec.json.Decoder(list[_Event])
_ARGS_DECODER = msgspec.json.Decoder(_Args)
_MEMORY_DECODER = msgspec.json.Decoder(_MemoryArgs)
_ANY_DECODER = msgspec.json.Decoder()
_NO_ARGS = _Args()


@dataclass(frozen=True)
class TraceTable:
    """One trace file as tables. Times are microseconds as the file has them (``ts_us``).

    Attributes:
        path: the file.
        rank: from ``distributedInfo`` (0 when absent).
        device: ``cuda``, ``rocm`` or ``cpu``: what the GPU events and device properties say.
        meta: the file's top-level keys other than ``traceEvents``.
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
    flows: pd.DataFrame
    threads: pd.DataFrame
    processes: pd.DataFrame
    event_count: int = 0

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
    data = read_trace_bytes(path)
    meta: dict[str, Any] = {}
    try:
        if data.lstrip()[:1] == b"[":  # the Chrome format's bare-array form
            events_raw = data
        else:
            top = _TOP_DECODER.decode(data)
            if "traceEvents" not in top:
                raise TraceFormatError(path, "no traceEvents array: not a Chrome/Kineto trace")
            events_raw = top.pop("traceEvents")
            meta = {key: _ANY_DECODER.decode(raw) for key, raw in top.items()}
        events = _EVENTS_DECODER.decode(events_raw)
    except msgspec.ValidationError as exc:
        raise TraceFormatError(path, f"not a Kineto trace: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise TraceFormatError(path, f"invalid or truncated JSON: {exc}") from exc
    return _build(path, events, meta)


def _build(path: Path, events: list[_Event], meta: dict[str, Any]) -> TraceTable:
    complete = [e for e in events if e.ph == PHASE_COMPLETE and e.ts == e.ts]
    table = _complete_table(complete)
    device = _device_kind(table, meta)
    return TraceTable(
        path=path,
        rank=_rank(meta),
        device=device,
        meta=meta,
        events=table,
        counters=_counters([e for e in events if e.ph == PHASE_COUNTER]),
        memory=_memory(
            [e for e in events if e.ph in (PHASE_INSTANT, "I") and e.name == "[memory]"]
        ),
        flows=_flows([e for e in events if e.ph in (PHASE_FLOW_START, PHASE_FLOW_END, "t")]),
        threads=_names(
            [e for e in events if e.ph == PHASE_METADATA and e.name == "thread_name"], "thread_name"
        ),
        processes=_names(
            [e for e in events if e.ph == PHASE_METADATA and e.name == "process_name"],
            "process_name",
        ),
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


def _stream(value: int | str) -> int:
    """Stream ids; Kineto writes -1 as 4294967295 (unsigned 32-bit) on some sync records."""
    stream = _int_id(value)
    return MISSING_INT if stream == 0xFFFFFFFF else stream


def _raw_text(raw: msgspec.Raw) -> str:
    """Compact JSON text of a list-valued arg (shapes, grid, block), whatever the writer's spacing:
    these hold only numbers, so dropping whitespace is safe and makes equal shapes equal text."""
    return bytes(raw).translate(None, b" \n\r\t").decode() if raw else ""


def _complete_table(events: list[_Event]) -> pd.DataFrame:
    args = [_ARGS_DECODER.decode(e.args) if e.args else _NO_ARGS for e in events]
    cats = [e.cat for e in events]
    kinds = {cat: KIND_BY_CATEGORY.get(cat.lower(), "other") for cat in set(cats)}
    ts = np.fromiter((e.ts for e in events), dtype=np.float64, count=len(events))
    dur = np.fromiter((e.dur for e in events), dtype=np.float64, count=len(events))
    frame = pd.DataFrame(
        {
            "name": pd.Categorical([e.name for e in events]),
            "cat": pd.Categorical(cats),
            "kind": pd.Categorical([kinds[c] for c in cats]),
            "pid": np.fromiter((_int_id(e.pid) for e in events), np.int64, len(events)),
            "tid": np.fromiter((_int_id(e.tid) for e in events), np.int64, len(events)),
            "ts_us": ts,
            "dur_us": dur,
            "end_us": ts + dur,
            "external_id": _ints(max(a.external_id, a.external_id_2021) for a in args),
            "correlation": _ints(a.correlation for a in args),
            "stream": _ints(_stream(a.stream) for a in args),
            "device": _ints(a.device for a in args),
            "seq": _ints(a.seq for a in args),
            "fwd_tid": _ints(a.fwd_tid for a in args),
            "input_dims": pd.Categorical(
                [_raw_text(a.input_dims or a.input_dims_2021) for a in args]
            ),
            "grid": pd.Categorical([_raw_text(a.grid) for a in args]),
            "block": pd.Categorical([_raw_text(a.block) for a in args]),
            "occupancy_pct": _floats(a.occupancy for a in args),
            "blocks_per_sm": _floats(a.blocks_per_sm for a in args),
            "warps_per_sm": _floats(a.warps_per_sm for a in args),
            "registers": _ints(a.registers for a in args),
            "shared_memory_bytes": _ints(a.shared_memory for a in args),
            "bytes": _ints(a.bytes for a in args),
            "bandwidth_gbps": _floats(a.bandwidth for a in args),
            "collective": pd.Categorical([a.collective for a in args]),
            "in_nelems": _ints(a.in_nelems for a in args),
            "out_nelems": _ints(a.out_nelems for a in args),
            "group_size": _ints(a.group_size for a in args),
            "dtype": pd.Categorical([a.dtype for a in args]),
            "pg_name": pd.Categorical([a.pg_name for a in args]),
            "sync_kind": pd.Categorical([a.sync_kind for a in args]),
        }
    )
    return frame.sort_values("ts_us", kind="stable", ignore_index=True)


def _ints(values: Iterable[int]) -> np.ndarray:
    return np.fromiter(values, dtype=np.int64)


def _floats(values: Iterable[float]) -> np.ndarray:
    return np.fromiter(values, dtype=np.float64)


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
    rows = [(_int_id(e.id), e.ph, e.cat, _int_id(e.pid), _int_id(e.tid), e.ts) for e in events]
    return pd.DataFrame(rows, columns=["id", "ph", "cat", "pid", "tid", "ts_us"])


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
