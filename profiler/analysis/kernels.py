"""GPU kernels: the top kernels, HTA's kernel-type breakdown and kernel launch statistics.

Kernel types and launch statistics follow Holistic Trace Analysis (HTA) 0.5.0: kernel types from
``hta/utils/utils.py`` (``get_kernel_type``), the type breakdown from
``hta/analyzers/breakdown_analysis.py`` (``get_gpu_kernel_breakdown``), launch statistics from
``hta/analyzers/cuda_kernel_analysis.py`` (``cuda_kernel_launch_stats``). The window HTA analyses
(every step but the last, :func:`analysis_window`) is from ``hta/common/trace.py``
(``_filter_irrelevant_gpu_kernels``). The top-kernels table follows the TensorBoard profiler
plugin's Kernel view (torch_tb_profiler/profiler/kernel_parser.py). Where ours differs from a
peer, the docstring says how.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Final

import numpy as np
import pandas as pd

from profiler.analysis.devices import COMMUNICATION as COMMUNICATION_KIND
from profiler.analysis.devices import DEVICE_KINDS, LAUNCH_KINDS, MEMCPY, MEMSET
from profiler.analysis.devices import LAUNCH_CALLS as DEVICE_LAUNCH_CALLS
from profiler.analysis.memo import per_trace
from profiler.analysis.table import TraceTable
from profiler.events import PROFILER_STEP_PREFIX

# Kernel types, as HTA names them (hta/utils/utils.py, KernelType).
COMPUTATION: Final = "COMPUTATION"
COMMUNICATION: Final = "COMMUNICATION"
MEMORY: Final = "MEMORY"
OTHER: Final = "OTHER"
# HTA's name patterns (hta/utils/utils.py): NCCL_KERNEL_RE, MEMORY_KERNEL_RE and
# NCCL_COMPUTE_KERNEL_RE. A name none of the first two match is COMPUTATION unless the third
# matches it (it contains "Memcpy" or "Sync", or starts with "Memset"): then it is OTHER.
COMMUNICATION_KERNEL_RE: Final = re.compile(r"^nccl.*Kernel")
MEMORY_KERNEL_RE: Final = re.compile(r"(^Memcpy)|(^Memset)|(^dma)")
NOT_COMPUTE_KERNEL_RE: Final = re.compile(r"(^nccl.*Kernel)|(.*(Memcpy)|(Memset))|(.*Sync)")
# The order HTA gives the types in an overlap label ("COMPUTATION overlapping COMMUNICATION").
BREAKDOWN_TYPES: Final = (COMPUTATION, COMMUNICATION, MEMORY)

# Launch calls whose GPU work gets a launch delay: every device's (the device model's
# ``launch_calls``). HTA 0.5.0 (cuda_kernel_launch_stats) takes cudaLaunchKernel,
# cudaLaunchKernelExC, cudaMemcpyAsync and cudaMemsetAsync (and MTIA's runFunction); we add their
# driver-API, ROCm and XPU counterparts, which HTA does not know, so Triton's cuLaunchKernel and
# AMD traces get launch statistics too. Synchronous copies and graph launches (one call, many
# kernels) stay out, as in HTA.
LAUNCH_CALLS: Final = DEVICE_LAUNCH_CALLS
# HTA's defaults for get_cuda_kernel_launch_stats (hta/trace_analysis.py): a launch call longer
# than runtime_cutoff is an outlier; a kernel that runs for less than its launch call took (a
# call no longer than runtime_cutoff) is a "short GPU kernel"; launch_delay_cutoff marks long
# launch delays (visualize_cuda_launch_kernel_info).
SLOW_LAUNCH_CALL_US: Final = 50.0
LONG_LAUNCH_DELAY_US: Final = 100.0


def classify_kernels(names: pd.Series) -> pd.Series:
    """HTA's kernel type of each name: COMMUNICATION, MEMORY, COMPUTATION or OTHER.

    COMMUNICATION: ``^nccl.*Kernel``; MEMORY: starts with Memcpy, Memset or dma; OTHER: any other
    name containing Memcpy or Sync; COMPUTATION: the rest (hta/utils/utils.py, get_kernel_type).
    """
    codes, unique = pd.factorize(names)  # one regex test per distinct name, not per event
    types = np.array([_kernel_type(str(name)) for name in unique] + [OTHER], dtype=object)
    return pd.Series(types[codes], index=names.index, dtype=str)


def work_types(work: pd.DataFrame) -> np.ndarray:
    """HTA's kernel type of each piece of device work (``name`` and ``kind`` columns).

    By name (:func:`classify_kernels`), as HTA types every device event, except where the
    device model's kind says more: copies and sets are MEMORY and device-side collectives
    COMMUNICATION whatever their names (on CUDA, whose copies are all named "Memcpy ..." and
    "Memset ...", this is HTA's typing exactly).
    """
    types = classify_kernels(work["name"]).to_numpy(dtype=object, copy=True)
    kinds = work["kind"]
    types[kinds.isin((MEMCPY, MEMSET)).to_numpy()] = MEMORY
    types[(kinds == COMMUNICATION_KIND).to_numpy()] = COMMUNICATION
    return types


def _kernel_type(name: str) -> str:
    if COMMUNICATION_KERNEL_RE.match(name):
        return COMMUNICATION
    if MEMORY_KERNEL_RE.match(name):
        return MEMORY
    return OTHER if NOT_COMPUTE_KERNEL_RE.match(name) else COMPUTATION


def analysis_window(trace: TraceTable, *, include_last_step: bool = False) -> pd.DataFrame:
    """The events HTA analyses: all of them unless the trace has two or more profiler steps.

    With two or more ``ProfilerStep#N`` ranges, HTA keeps the host events that start before the
    last step starts (before the last step ends with ``include_last_step``) and the GPU work
    that those host events launched (matched by ``correlation``); GPU work with no launch in
    the trace goes too. HTA's reason: the last step is cut short when the profiler stops
    (hta/common/trace.py, ``_filter_irrelevant_gpu_kernels``; HTA's own switch is
    ``TraceAnalysis(include_last_profiler_step=...)``). HTA decides "two or more" over every
    rank of a directory; we decide per trace.
    """
    mask = analysis_window_mask(trace, include_last_step=include_last_step)
    return trace.events if mask is None else trace.events[mask]


@per_trace
def analysis_window_mask(
    trace: TraceTable, *, include_last_step: bool = False
) -> np.ndarray | None:
    """Which events :func:`analysis_window` keeps (None: all of them); computed once per trace.

    The mask is kept rather than the window itself: one byte per event, where a kept copy of
    the events would double a loaded trace's memory.
    """
    events = trace.events
    gpu = events["kind"].isin(DEVICE_KINDS).to_numpy()
    host = ~gpu & (events["kind"] != "gpu_user_annotation").to_numpy()
    steps = host & _names_where(events["name"], lambda name: name.startswith(PROFILER_STEP_PREFIX))
    if events["name"][steps].nunique() < 2:
        return None
    ts = events["ts_us"].to_numpy()
    if include_last_step:
        host = ~gpu & (ts <= events["end_us"].to_numpy()[steps].max())
    else:
        host = ~gpu & (ts < ts[steps].max())
    correlation = events["correlation"]
    launched = correlation.isin(correlation[host]).to_numpy() & (correlation >= 0).to_numpy()
    mask: np.ndarray = host | (gpu & launched)
    return mask


def _names_where(names: pd.Series, test: Callable[[str], bool]) -> np.ndarray:
    codes, unique = pd.factorize(names)  # one test per distinct name, not per event
    hits = np.array([test(str(name)) for name in unique] + [False])
    return hits[codes]


def merge_intervals(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of ``[start, end)`` intervals as disjoint intervals, sorted by start.

    Touching intervals merge, as in HTA's ``merge_kernel_intervals`` (hta/utils/utils.py).
    """
    if len(start) == 0:
        return np.empty(0), np.empty(0)
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)
    first = np.flatnonzero(np.r_[True, start[1:] > reach[:-1]])
    return start[first], np.maximum.reduceat(end, first)


def top_kernels(trace: TraceTable, n: int = 20) -> pd.DataFrame:
    """The ``n`` kernels with the most total GPU time, over the whole trace.

    Kernels are ``kernel`` events (memcpy/memset are not kernels), grouped by name.

    Returns:
        One row per kernel name, most total time first: ``name``, ``kernel_type`` (HTA's),
        ``calls``, ``total_us``, ``mean_us``, ``min_us``, ``max_us``, ``time_pct`` (share of
        all kernel time in the trace), ``grid`` and ``block`` (the most frequent launch
        configuration, "" where the trace has none) and ``occupancy_pct`` (estimated achieved
        occupancy averaged weighted by duration over the calls that report it, as the
        TensorBoard plugin's kernel view does, except that it counts a missing value as 0;
        NaN when no call reports it).
    """
    kernels = trace.events[trace.events["kind"] == "kernel"]
    kernels = kernels.assign(name=kernels["name"].astype(str))
    stats = kernels.groupby("name")["dur_us"].agg(["size", "sum", "mean", "min", "max"])
    stats.columns = ["calls", "total_us", "mean_us", "min_us", "max_us"]
    stats = stats.reset_index().sort_values(["total_us", "name"], ascending=[False, True])
    stats = stats.head(n).reset_index(drop=True)
    stats.insert(1, "kernel_type", classify_kernels(stats["name"]))
    total = kernels["dur_us"].sum()
    stats["time_pct"] = 100.0 * stats["total_us"] / total if total > 0 else 0.0
    for column in ("grid", "block"):
        frequent = _most_frequent(kernels, column)
        stats[column] = [frequent.get(name, "") for name in stats["name"]]
    stats["occupancy_pct"] = stats["name"].map(_weighted_occupancy(kernels))
    return stats


def _most_frequent(kernels: pd.DataFrame, column: str) -> dict[str, str]:
    """Each name's most frequent non-empty value of ``column``; ties go to the smallest."""
    values = kernels[["name", column]].astype(str)
    counts = values[values[column] != ""].value_counts(sort=False).reset_index()
    counts = counts.sort_values(["count", column], ascending=[False, True], kind="stable")
    return dict(counts.drop_duplicates("name").set_index("name")[column])


def _weighted_occupancy(kernels: pd.DataFrame) -> pd.Series:
    known = kernels[kernels["occupancy_pct"].notna()]
    weighted = (known["occupancy_pct"] * known["dur_us"]).groupby(known["name"]).sum()
    weights = known.groupby("name")["dur_us"].sum()
    return (weighted / weights.where(weights > 0)).astype(float)


def kernel_type_breakdown(trace: TraceTable, *, include_last_step: bool = False) -> pd.DataFrame:
    """GPU time by kernel type and by overlap of types, HTA's kernel-type breakdown.

    Over the GPU work (kernels, memcpy, memset) in :func:`analysis_window`, the intervals of
    each type (COMPUTATION, COMMUNICATION, MEMORY; OTHER is left out) are merged, and the GPU
    time is split by which types run at each instant: "COMPUTATION" alone,
    "COMPUTATION overlapping COMMUNICATION", ... (hta/analyzers/breakdown_analysis.py,
    ``_get_gpu_kernel_type_time``, with HTA's default ``include_memory_kernels=True``).
    HTA sums its table over every rank; ours is one trace's, so a caller sums ``sum_us`` over
    ranks. HTA truncates each slice to whole microseconds and rounds ``percentage`` to one
    decimal; ours does neither.

    Returns:
        One row per type combination that has time, most first: ``kernel_type``, ``sum_us``,
        ``percentage`` (of the time any of the three types runs). Empty without GPU work.
    """
    gpu = _gpu_work(analysis_window(trace, include_last_step=include_last_step))
    edges = _type_edges(gpu).sort_values("t", kind="stable")
    # Between consecutive edges the running sum of the bits says which types are running.
    running = edges["step"].cumsum().to_numpy()
    length = np.diff(edges["t"].to_numpy(), append=edges["t"].max() if len(edges) else 0.0)
    sums = pd.Series(length).groupby(running).sum()
    sums = sums[(sums.index > 0) & (sums > 0)].sort_values(ascending=False, kind="stable")
    total = sums.sum()
    return pd.DataFrame(
        {
            "kernel_type": [_overlap_label(int(mask)) for mask in sums.index],
            "sum_us": sums.to_numpy(dtype=float),
            "percentage": (100.0 * sums / total).to_numpy(dtype=float) if total else [],
        }
    )


def _type_edges(gpu: pd.DataFrame) -> pd.DataFrame:
    """Starts (+bit) and ends (-bit) of each type's merged intervals, one bit per type."""
    types = work_types(gpu)
    times, steps = [], []
    for bit, kernel_type in enumerate(BREAKDOWN_TYPES):
        mask = types == kernel_type
        start, end = merge_intervals(gpu["ts_us"].to_numpy()[mask], gpu["end_us"].to_numpy()[mask])
        times += [start, end]
        steps += [np.full(len(start), 1 << bit), np.full(len(end), -(1 << bit))]
    return pd.DataFrame({"t": np.concatenate(times), "step": np.concatenate(steps)})


def _overlap_label(mask: int) -> str:
    names = [name for bit, name in enumerate(BREAKDOWN_TYPES) if mask & (1 << bit)]
    return " overlapping ".join(names)


def _gpu_work(events: pd.DataFrame) -> pd.DataFrame:
    return events[events["kind"].isin(DEVICE_KINDS)]


def launch_stats(trace: TraceTable) -> pd.DataFrame:
    """One row per GPU launch: the host's launch call joined to its GPU work by ``correlation``.

    Definitions from HTA's ``cuda_kernel_launch_stats`` (hta/analyzers/cuda_kernel_analysis.py):
    ``cpu_duration_us`` is the launch call's duration, ``gpu_duration_us`` the kernel's (or
    memcpy's/memset's), and ``launch_delay_us`` the time from the end of the launch call to the
    start of the GPU work, clipped at 0 (work that starts before the call returns has none).
    Launch calls are :data:`LAUNCH_CALLS`. Unlike HTA this covers the whole trace, the last
    step included, and driver-API and ROCm launches too.

    Returns:
        Sorted by launch time: ``correlation``, ``launch_name``, ``name`` (the GPU work),
        ``stream``, ``launch_ts_us``, ``ts_us`` (GPU start), ``cpu_duration_us``,
        ``gpu_duration_us``, ``launch_delay_us``, and HTA's flags ``short_kernel`` (the work ran
        for less than its launch call took, and the call took at most
        :data:`SLOW_LAUNCH_CALL_US`), ``slow_launch_call`` (the call took more than
        :data:`SLOW_LAUNCH_CALL_US`), ``long_launch_delay`` (more than
        :data:`LONG_LAUNCH_DELAY_US`).
    """
    stats = _launch_pairs(trace.events)
    cpu, gpu = stats["cpu_duration_us"], stats["gpu_duration_us"]
    stats["short_kernel"] = (cpu <= SLOW_LAUNCH_CALL_US) & (gpu < cpu)
    stats["slow_launch_call"] = cpu > SLOW_LAUNCH_CALL_US
    stats["long_launch_delay"] = stats["launch_delay_us"] > LONG_LAUNCH_DELAY_US
    return stats


def launch_links(
    events: pd.DataFrame, *, calls: Collection[str] | None = LAUNCH_CALLS
) -> pd.DataFrame:
    """Host launch calls paired with the GPU work they launched, by ``correlation``.

    A launch call is a runtime or driver event (any device's) with a correlation id, named in
    ``calls`` (any name when None: synchronous copies and graph launches too); its GPU work is
    the kernels, memcpy and memset with the same id.

    Args:
        events: rows of ``trace.events`` (any subset, e.g. those of one correlation id).
        calls: the launch call names, :data:`LAUNCH_CALLS` by default.

    Returns:
        One row per pair, in the calls' order: ``call`` and ``work`` (index labels in
        ``events``) and ``correlation``.
    """
    correlation = events["correlation"].to_numpy()
    is_call = events["kind"].isin(LAUNCH_KINDS).to_numpy() & (correlation >= 0)
    if calls is not None:
        is_call &= _names_where(events["name"], frozenset(calls).__contains__)
    is_work = events["kind"].isin(DEVICE_KINDS).to_numpy()
    host = pd.DataFrame({"call": events.index[is_call], "correlation": correlation[is_call]})
    work = pd.DataFrame({"work": events.index[is_work], "correlation": correlation[is_work]})
    return host.merge(work, on="correlation")[["call", "work", "correlation"]]


def _launch_pairs(events: pd.DataFrame) -> pd.DataFrame:
    """Launch calls joined to their GPU work, with durations and launch delay."""
    links = launch_links(events)
    call, work = events.loc[links["call"]], events.loc[links["work"]]
    launch_end = call["end_us"].to_numpy()
    pairs = pd.DataFrame(
        {
            "correlation": links["correlation"].to_numpy(),
            "launch_name": call["name"].astype(str).to_numpy(),
            "name": work["name"].astype(str).to_numpy(),
            "stream": work["stream"].to_numpy(),
            "launch_ts_us": call["ts_us"].to_numpy(),
            "ts_us": work["ts_us"].to_numpy(),
            "cpu_duration_us": call["dur_us"].to_numpy(),
            "gpu_duration_us": work["dur_us"].to_numpy(),
            "launch_delay_us": np.clip(work["ts_us"].to_numpy() - launch_end, 0.0, None),
        }
    )
    return pairs.sort_values(["launch_ts_us", "correlation"], ignore_index=True)


def launch_summary(trace: TraceTable) -> dict[str, int | float | None]:
    """Counts and percentiles over :func:`launch_stats`.

    Returns:
        ``launches``, ``short_kernels``, ``slow_launch_calls``, ``long_launch_delays`` (counts
        of HTA's flags), ``launch_delay_p50_us`` and ``launch_delay_p95_us`` (linear-interpolated
        percentiles; None without launches).
    """
    stats = launch_stats(trace)
    delays = stats["launch_delay_us"].to_numpy()
    p50, p95 = np.percentile(delays, [50, 95]) if len(delays) else (None, None)
    return {
        "launches": len(stats),
        "short_kernels": int(stats["short_kernel"].sum()),
        "slow_launch_calls": int(stats["slow_launch_call"].sum()),
        "long_launch_delays": int(stats["long_launch_delay"].sum()),
        "launch_delay_p50_us": None if p50 is None else float(p50),
        "launch_delay_p95_us": None if p95 is None else float(p95),
    }
