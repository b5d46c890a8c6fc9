"""The args the tables read, as msgspec structs: only the keys analyses use are decoded.

Two ways to decode a piece of a trace (:mod:`profiler.analysis.decode`) share these:

- *typed*: every event's args into :class:`EventArgs` as the events themselves are decoded, in
  one pass over the text (what almost every piece of a trace takes);
- *raw*: the events' args kept as raw JSON, then a complete event's decoded into
  :class:`CompleteArgs` and an allocator event's into :class:`MemoryArgs` (counters' and
  metadata's read whole), for a piece that the typed pass cannot take. That is the reference:
  a piece that does not fit :class:`EventArgs` is decoded this way, and its errors are the ones
  a load reports.

Every struct is frozen: the default of an event without args is one shared instance.
"""

from __future__ import annotations

import math

import msgspec

MISSING_INT = -1


class CompleteArgs(msgspec.Struct, gc=False, frozen=True, rename={
    "external_id": "External id",
    "external_id_2021": "external id",
    "seq": "Sequence number",
    "fwd_tid": "Fwd thread id",
    "input_dims": "Input Dims",
    "input_dims_2021": "Input dims",
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
    """A complete event's args that become columns of the events table."""

    external_id: int = MISSING_INT
    external_id_2021: int = MISSING_INT
    correlation: int = MISSING_INT
    stream: int | str = MISSING_INT
    device: int = MISSING_INT
    seq: int = MISSING_INT
    fwd_tid: int = MISSING_INT
    input_dims: msgspec.Raw = msgspec.Raw(b"")
    input_dims_2021: msgspec.Raw = msgspec.Raw(b"")
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


class MemoryArgs(msgspec.Struct, gc=False, frozen=True, rename={
    "alloc_bytes": "Bytes",
    "total_allocated": "Total Allocated",
    "total_reserved": "Total Reserved",
    "device_type": "Device Type",
    "device_id": "Device Id",
}):  # fmt: skip
    """An allocator event's args (``[memory]`` instants, with ``profile_memory``)."""

    alloc_bytes: int = 0
    total_allocated: int = MISSING_INT
    total_reserved: int = MISSING_INT
    device_type: int = MISSING_INT
    device_id: int = MISSING_INT


def _union(name: str, *parts: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """One struct with the fields (and JSON names) of ``parts``, which share none."""
    fields = [field for part in parts for field in msgspec.structs.fields(part)]
    rename = {f.name: f.encode_name for f in fields if f.name != f.encode_name}
    return msgspec.defstruct(
        name,
        [(f.name, f.type, f.default) for f in fields],
        gc=False,
        frozen=True,
        rename=rename,
        module=__name__,
    )


# Any event's args in the typed pass: a complete event's and an allocator event's fields.
EventArgs = _union("EventArgs", CompleteArgs, MemoryArgs)
