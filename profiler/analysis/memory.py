"""Memory over time, its peak and what was running then, and memory per module.

Two sources: Kineto's ``[memory]`` instants (``profile_memory=True``), which carry the allocator's
totals after every allocation and free, and trainprof's ``trainprof.memory`` counters, sampled at
every module boundary (CUDA allocator totals on GPU; the process's RSS on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from profiler.analysis.devices import DEVICE_KINDS
from profiler.analysis.memo import per_trace
from profiler.analysis.modules import module_ranges
from profiler.analysis.table import MISSING_INT, TraceTable
from profiler.events import COUNTER_MEMORY, PROFILER_STEP_PREFIX

SOURCE_KINETO = "kineto"  # allocator totals at every allocation and free
SOURCE_COUNTERS = "trainprof"  # CUDA allocator totals, sampled at module boundaries
SOURCE_RSS = "trainprof.rss"  # the process's resident set on CPU: allocator bytes plus the rest
# Where one device has several sources, the first here wins: every allocation beats samples at
# module boundaries, and allocator bytes beat RSS (which counts the interpreter and libraries).
SOURCE_PREFERENCE = (SOURCE_KINETO, SOURCE_COUNTERS, SOURCE_RSS)

# c10::DeviceType as Kineto writes it in "Device Type" (c10/core/DeviceType.h; ROCm builds report
# their GPUs as CUDA, as torch.cuda does).
DEVICE_TYPE_NAMES = {0: "cpu", 1: "cuda", 6: "hip", 12: "xpu", 13: "mps", 19: "mtia"}
CUDA_DEVICE_TYPE = 1
CPU = "cpu"
_MAX_BYTES = 2**63 - 1  # a totalGlobalMem past int64 is no device's
TIMELINE_COLUMNS = ["ts_us", "device", "allocated_bytes", "reserved_bytes", "source", "pid", "tid"]
MODULE_MEMORY_COLUMNS = [
    "path",
    "class_name",
    "calls",
    "delta_bytes",
    "peak_bytes",
    "peak_delta_bytes",
    "backward_delta_bytes",
    "backward_peak_bytes",
    "backward_peak_delta_bytes",
    "device",
]
_PHASE_AGGREGATES = {
    "delta_bytes": "mean",
    "peak_bytes": "max",
    "peak_delta_bytes": "max",
}


@dataclass(frozen=True)
class MemoryPeak:
    """The highest allocated memory on one device, and what was running when it was reached.

    Attributes:
        device: ``cpu``, ``cuda:0``...
        ts_us: when the peak was first reached.
        allocated_bytes: the peak.
        reserved_bytes: the allocator's reserved bytes then (None where unknown).
        source: which samples it comes from (:data:`SOURCE_PREFERENCE`).
        module: qualified name of the innermost module range covering ``ts_us`` (None: none).
        module_class: that module's class name.
        module_phase: ``forward`` or ``backward``.
        op: the innermost CPU op covering ``ts_us`` (None: none).
        capacity_bytes: the device's memory (``deviceProperties``' ``totalGlobalMem``).
    """

    device: str
    ts_us: float
    allocated_bytes: int
    reserved_bytes: int | None
    source: str
    module: str | None
    module_class: str | None
    module_phase: Literal["forward", "backward"] | None
    op: str | None
    capacity_bytes: int | None

    @property
    def capacity_pct(self) -> float | None:
        """The peak as a share of the device's memory, where that is known."""
        if not self.capacity_bytes:
            return None
        return 100.0 * self.allocated_bytes / self.capacity_bytes


def memory_timeline(trace: TraceTable) -> pd.DataFrame:
    """Allocated (and reserved) bytes over time, per device and source.

    From Kineto's ``[memory]`` instants: ``Total Allocated`` / ``Total Reserved`` (reserved only
    on accelerators: the CPU allocator reserves nothing); where a file lacks the totals, allocated
    is the running sum of ``Bytes`` from the window's start. From ``trainprof.memory`` counters:
    ``allocated_bytes`` / ``reserved_bytes`` on CUDA, and on CPU ``rss_bytes`` in the allocated
    column with source :data:`SOURCE_RSS`.

    Args:
        trace: a loaded trace.

    Returns:
        ``ts_us``, ``device``, ``allocated_bytes``, ``reserved_bytes`` (NaN where unknown),
        ``source``, ``pid``, ``tid`` (-1 for counters), sorted by time; empty when the trace
        has no memory samples.
    """
    parts = [part for part in (_kineto(trace), _counters(trace)) if not part.empty]
    if not parts:
        return pd.DataFrame(
            {column: pd.Series(dtype=_dtype(column)) for column in TIMELINE_COLUMNS}
        )
    timeline = pd.concat(parts, ignore_index=True)
    return timeline.sort_values("ts_us", kind="stable", ignore_index=True)[TIMELINE_COLUMNS]


def device_series(timeline: pd.DataFrame, device: str | None = None) -> pd.DataFrame:
    """One device's samples from its preferred source (:data:`SOURCE_PREFERENCE`).

    Args:
        timeline: :func:`memory_timeline`'s result.
        device: the device; None picks the accelerator with the highest allocation, or the CPU
            on a CPU-only trace.

    Returns:
        The rows of ``timeline`` for that device and source, in time order (empty if none).
    """
    if device is None:
        device = _default_device(timeline)
    rows = timeline[timeline["device"] == device]
    present = set(rows["source"])
    source = next((s for s in SOURCE_PREFERENCE if s in present), None)
    return rows[rows["source"] == source]


@per_trace
def memory_peak(trace: TraceTable, device: str | None = None) -> MemoryPeak | None:
    """The peak of allocated bytes on ``device``, attributed to what was running then.

    The module is the innermost ``nn.Module`` range (forward on the threads, backward on
    trainprof's backward lane) covering the peak's time in the same process; the op is the
    innermost ``cpu_op`` covering it on the allocating thread (any thread of the process for
    counter samples, which name none). "Innermost" is the covering range that started last.

    Args:
        trace: a loaded trace.
        device: as :func:`device_series`.

    Returns:
        The peak, or None when the trace has no memory samples for the device.
    """
    series = device_series(memory_timeline(trace), device)
    if series.empty:
        return None
    peak = series.loc[series["allocated_bytes"].idxmax()]
    ts_us, pid, tid = float(peak["ts_us"]), int(peak["pid"]), int(peak["tid"])
    module = _innermost_module(trace, ts_us, pid)
    reserved = peak["reserved_bytes"]
    return MemoryPeak(
        device=str(peak["device"]),
        ts_us=ts_us,
        allocated_bytes=int(peak["allocated_bytes"]),
        reserved_bytes=None if pd.isna(reserved) else int(reserved),
        source=str(peak["source"]),
        module=None if module is None else module[0],
        module_class=None if module is None else module[1],
        module_phase=None if module is None else module[2],
        op=_innermost_op(trace, ts_us, pid, tid),
        capacity_bytes=_capacity(trace, str(peak["device"])),
    )


def module_memory(trace: TraceTable, device: str | None = None) -> pd.DataFrame:
    """Memory allocated during each module's forward and backward, per module path.

    Per range: allocated bytes at its start (the last sample at or before it), at its end, and
    the highest sample in between. trainprof's counters are taken by the module hooks just
    outside the forward range (before it opens, after it closes), so with them the end is the
    first sample at or after the range's end; Kineto's samples sit inside, so with them it is the
    last sample at or before it. Calls with no sample before their start are left out of the
    means.

    Backward ranges (trainprof's backward lane, built when the window is written) are measured
    from Kineto's samples only (``profile_memory=True``), taken at every allocation and free, so
    each allocation falls in the range that was open then, at no cost while training. The hooks'
    counters are read only at each backward pass's start and end (no hook runs at a module's
    backward boundaries: see ``profiler/capture/module_hooks.py``), so without Kineto's samples
    the backward columns are NaN.

    Args:
        trace: a loaded trace.
        device: as :func:`device_series`.

    Returns:
        Per path, in first-run order: ``path``, ``class_name``, ``calls`` (forward calls),
        ``delta_bytes`` (mean of end minus start), ``peak_bytes`` (highest allocated inside any
        call), ``peak_delta_bytes`` (highest rise over the start inside any call), the same three
        for the backward ranges as ``backward_*``, and ``device``.
    """
    series = device_series(memory_timeline(trace), device)
    ranges = module_ranges(trace)
    forward = ranges[~ranges["backward"]]
    if series.empty or forward.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in MODULE_MEMORY_COLUMNS})
    table = _phase_memory(series, forward).join(
        forward.groupby("path", sort=False).agg(
            class_name=("class_name", "first"), calls=("dur_us", "size")
        )
    )
    backward = ranges[ranges["backward"]]
    if series["source"].iloc[0] == SOURCE_KINETO and not backward.empty:
        measured = _phase_memory(series, backward).add_prefix("backward_")
        table = table.join(measured, how="left")
    else:
        table = table.assign(**{f"backward_{c}": np.nan for c in _PHASE_AGGREGATES})
    table["device"] = str(series["device"].iloc[0])
    return table.reset_index()[MODULE_MEMORY_COLUMNS]


def _phase_memory(series: pd.DataFrame, ranges: pd.DataFrame) -> pd.DataFrame:
    """Per path, in first-run order: the mean delta and the highest peaks over its ranges."""
    start, end, peak = _range_samples(series, ranges)
    calls = pd.DataFrame(
        {"delta_bytes": end - start, "peak_bytes": peak, "peak_delta_bytes": peak - start},
        index=ranges.index,
    ).assign(path=ranges["path"])
    return calls.groupby("path", sort=False).agg(_PHASE_AGGREGATES)


def _range_samples(
    series: pd.DataFrame, ranges: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Allocated bytes at each range's start and end and its highest in between (NaN: none)."""
    ts = series["ts_us"].to_numpy(np.float64)
    values = series["allocated_bytes"].to_numpy(np.float64)
    first = np.searchsorted(ts, ranges["ts_us"].to_numpy(), side="right") - 1
    ends = ranges["end_us"].to_numpy()
    sampled_outside = series["source"].iloc[0] != SOURCE_KINETO
    last = np.searchsorted(ts, ends, side="left" if sampled_outside else "right")
    last = last if sampled_outside else last - 1
    valid = (first >= 0) & (last < len(ts)) & (last >= first)
    start, end, peak = (np.full(len(ranges), np.nan) for _ in range(3))
    start[valid], end[valid] = values[first[valid]], values[last[valid]]
    # reduceat over [first, last + 1) pairs; a sentinel keeps last + 1 a valid index.
    bounds = np.column_stack([first[valid], last[valid] + 1]).ravel()
    if bounds.size:
        peak[valid] = np.maximum.reduceat(np.append(values, -np.inf), bounds)[::2]
    return start, end, peak


def _kineto(trace: TraceTable) -> pd.DataFrame:
    memory = trace.memory
    if memory.empty:
        return memory
    group = memory.groupby(["device_type", "device_id"], sort=False).ngroup().to_numpy()
    firsts = memory.iloc[np.unique(group, return_index=True)[1]]
    labels = [
        _device_label(k, i) for k, i in zip(firsts["device_type"], firsts["device_id"], strict=True)
    ]
    device = np.asarray(labels, dtype=object)[group]
    allocated = memory["total_allocated"].where(
        memory["total_allocated"] != MISSING_INT, memory.groupby(device)["bytes"].cumsum()
    )
    reserved = memory["total_reserved"].where(
        (memory["total_reserved"] != MISSING_INT) & (device != CPU)
    )
    return pd.DataFrame(
        {
            "ts_us": memory["ts_us"],
            "device": device,
            "allocated_bytes": allocated.astype(np.int64),
            "reserved_bytes": reserved.astype(np.float64),
            "source": SOURCE_KINETO,
            "pid": memory["pid"],
            "tid": memory["tid"],
        }
    )


def _counters(trace: TraceTable) -> pd.DataFrame:
    counters = trace.counters
    counters = counters[counters["name"] == COUNTER_MEMORY]
    if counters.empty:
        return counters
    # One counter event gives one row per series; events sharing a timestamp stay apart.
    counters = counters.assign(sample=counters.groupby(["pid", "ts_us", "series"]).cumcount())
    wide = counters.pivot_table(
        index=["pid", "ts_us", "sample"], columns="series", values="value", aggfunc="first"
    ).reset_index()
    parts = []
    for column, reserved, device, source in (
        ("allocated_bytes", "reserved_bytes", _counter_device(trace), SOURCE_COUNTERS),
        ("rss_bytes", "", CPU, SOURCE_RSS),
    ):
        if column not in wide:
            continue
        rows = wide[wide[column].notna()]
        parts.append(
            pd.DataFrame(
                {
                    "ts_us": rows["ts_us"],
                    "device": device,
                    "allocated_bytes": rows[column].astype(np.int64),
                    "reserved_bytes": rows.get(reserved, np.nan),
                    "source": source,
                    "pid": rows["pid"],
                    "tid": MISSING_INT,
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else counters.iloc[0:0]


def _device_label(kind: int, index: int) -> str:
    name = DEVICE_TYPE_NAMES.get(kind, f"device{kind}")
    return name if name == CPU or index < 0 else f"{name}:{index}"


def _counter_device(trace: TraceTable) -> str:
    """trainprof's CUDA counters read the current device, which the file does not name: the one
    device the trace's GPU work and Kineto's GPU memory samples name, when there is exactly one."""
    events, memory = trace.events, trace.memory
    kernels = events.loc[events["kind"].isin(DEVICE_KINDS), "device"]
    allocations = memory.loc[memory["device_type"] == CUDA_DEVICE_TYPE, "device_id"]
    indices = {int(i) for i in pd.concat([kernels, allocations]).unique() if i >= 0}
    return f"cuda:{indices.pop()}" if len(indices) == 1 else "cuda"


def _default_device(timeline: pd.DataFrame) -> str | None:
    accelerators = timeline[timeline["device"] != CPU]
    if not accelerators.empty:
        return str(accelerators.groupby("device")["allocated_bytes"].max().idxmax())
    return CPU if not timeline.empty else None


def _innermost_module(
    trace: TraceTable, ts_us: float, pid: int
) -> tuple[str, str, Literal["forward", "backward"]] | None:
    ranges = module_ranges(trace)
    covering = ranges[
        (ranges["pid"] == pid) & (ranges["ts_us"] <= ts_us) & (ranges["end_us"] >= ts_us)
    ]
    if covering.empty:
        return None
    inner = covering.sort_values(["ts_us", "dur_us"], ascending=[False, True]).iloc[0]
    return (
        str(inner["path"]),
        str(inner["class_name"]),
        "backward" if inner["backward"] else "forward",
    )


def _innermost_op(trace: TraceTable, ts_us: float, pid: int, tid: int) -> str | None:
    events = trace.events
    mask = (
        (events["kind"] == "cpu_op")
        & (events["pid"] == pid)
        & (events["ts_us"] <= ts_us)
        & (events["end_us"] >= ts_us)
    )
    if tid != MISSING_INT:
        mask &= events["tid"] == tid
    covering = events[mask]
    covering = covering[~covering["name"].astype(str).str.startswith(PROFILER_STEP_PREFIX)]
    if covering.empty:
        return None
    return str(covering.sort_values(["ts_us", "dur_us"], ascending=[False, True])["name"].iloc[0])


def _capacity(trace: TraceTable, device: str) -> int | None:
    """``totalGlobalMem`` of the device's entry in ``deviceProperties``."""
    if device == CPU:
        return None
    props = trace.device_properties
    _, _, index = device.partition(":")
    for prop in props:
        matches = str(prop.get("id")) == index if index else len(props) == 1
        total = prop.get("totalGlobalMem")
        if matches and type(total) is int and 0 < total <= _MAX_BYTES:
            return total
    return None


def _dtype(column: str) -> type:
    if column in ("device", "source", "path", "class_name"):
        return str
    if column in ("pid", "tid", "calls", "allocated_bytes"):
        return np.int64
    return float
