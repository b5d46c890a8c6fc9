"""Device time over a trace: HTA's temporal breakdown (idle, compute, non-compute) and idle time.

Definitions follow Holistic Trace Analysis (HTA) 0.5.0,
``hta/analyzers/breakdown_analysis.py``: ``get_temporal_breakdown`` and
``get_idle_time_breakdown``, over the same window of the trace HTA analyses (every profiler step
but the last: :func:`profiler.analysis.kernels.analysis_window`). One trace is one rank; a caller
iterates ranks. Every device with a timeline of its own gets them: its device activity is what
the device model says (:mod:`profiler.analysis.devices`: CUDA's and ROCm's kernels, copies and
sets, MTIA's ``mtia_ccp_events``, ...), as HTA takes MTIA's ``mtia_ccp_events`` for kernels.

Where ours differs from HTA, on purpose:

* GPU work is the device activity kinds (:data:`profiler.analysis.devices.DEVICE_KINDS`:
  kernels, memcpy, memset, device-side collectives). HTA's temporal breakdown takes every
  event that has a ``stream`` arg, so it also counts ``cuda_sync`` records ("Stream Sync",
  "Context Sync": host waits that Kineto draws on the GPU lanes) as non-compute GPU time, and
  Triton's launcher op (a CPU op with a ``stream`` arg) as compute; both stretch its span over
  time the GPU was idle. Copies and collectives never compute here whatever their names
  (:func:`profiler.analysis.kernels.work_types`); HTA types them by name, which comes to the
  same on CUDA.
  HTA's own idle-time breakdown already leaves ``cuda_sync`` out.
* Times keep the trace's precision. HTA rounds nanosecond-precision traces to whole
  microseconds, each event's start up and its end down (hta/common/trace_parser.py,
  ``round_down_time_stamps``), which shortens every event by up to 2 us.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from profiler.analysis.devices import DEVICE_KINDS, LAUNCH_KINDS
from profiler.analysis.kernels import COMPUTATION, analysis_window, merge_intervals, work_types
from profiler.analysis.memo import per_trace
from profiler.analysis.table import TraceTable

# HTA's default consecutive_kernel_delay (hta/trace_analysis.py, get_idle_time_breakdown): a gap
# shorter than this between two kernels on a stream is launch overhead ("kernel wait"). HTA's
# docstring says nanoseconds, but it compares the value with timestamps in microseconds.
KERNEL_WAIT_THRESHOLD_US: Final = 30.0
# HTA's idle categories (hta/utils/utils.py, IdleTimeType), in its order.
HOST_WAIT: Final = "host_wait"
KERNEL_WAIT: Final = "kernel_wait"
OTHER_WAIT: Final = "other"
IDLE_CATEGORIES: Final = (HOST_WAIT, KERNEL_WAIT, OTHER_WAIT)


@dataclass(frozen=True)
class TemporalBreakdown:
    """One rank's GPU time from its first GPU work's start to its last one's end.

    Attributes:
        idle_us: time in that span with no GPU work running on any stream.
        compute_us: time with at least one COMPUTATION kernel running (HTA's kernel types).
        non_compute_us: time with GPU work running but no COMPUTATION kernel (communication,
            memcpy, memset, OTHER).
        total_us: the span; the three above add up to it.
        idle_pct, compute_pct, non_compute_pct: the same as percentages of ``total_us``.
    """

    idle_us: float
    compute_us: float
    non_compute_us: float
    total_us: float
    idle_pct: float
    compute_pct: float
    non_compute_pct: float


@per_trace
def temporal_breakdown(
    trace: TraceTable, *, include_last_step: bool = False
) -> TemporalBreakdown | None:
    """HTA's temporal breakdown of one trace's GPU time into idle, compute and non-compute.

    The span runs from the first GPU work's start to the last one's end (HTA's "kernel time");
    idle is the span less the union of all GPU work over every stream; compute is the union of
    the COMPUTATION kernels; non-compute is the rest of the busy time
    (hta/analyzers/breakdown_analysis.py, ``get_temporal_breakdown`` and
    ``_get_idle_time_for_kernels``). See the module docstring for where ours differs.

    Args:
        trace: one rank's trace.
        include_last_step: analyse the last profiler step too (see
            :func:`profiler.analysis.kernels.analysis_window`).

    Returns:
        The breakdown, or None when there is no GPU work to measure: a CPU-only trace (HTA
        0.5.0 raises IndexError there), or GPU work that spans no time.
    """
    events = analysis_window(trace, include_last_step=include_last_step)
    gpu = events.loc[events["kind"].isin(DEVICE_KINDS), ["name", "kind", "ts_us", "end_us"]]
    start, end = gpu["ts_us"].to_numpy(), gpu["end_us"].to_numpy()
    busy_start, busy_end = merge_intervals(start, end)
    total = float(busy_end[-1] - busy_start[0]) if len(busy_start) else 0.0
    if total <= 0:
        return None
    busy = float((busy_end - busy_start).sum())
    compute = work_types(gpu) == COMPUTATION
    compute_start, compute_end = merge_intervals(start[compute], end[compute])
    compute_us = float((compute_end - compute_start).sum())
    idle_us, non_compute_us = total - busy, busy - compute_us
    return TemporalBreakdown(
        idle_us=idle_us,
        compute_us=compute_us,
        non_compute_us=non_compute_us,
        total_us=total,
        idle_pct=100.0 * idle_us / total,
        compute_pct=100.0 * compute_us / total,
        non_compute_pct=100.0 * non_compute_us / total,
    )


def idle_time_breakdown(
    trace: TraceTable,
    *,
    include_last_step: bool = False,
    kernel_wait_us: float = KERNEL_WAIT_THRESHOLD_US,
) -> pd.DataFrame:
    """Each stream's idle time split into host wait, kernel wait and other, as HTA splits it.

    On each stream, the gap before each GPU work item (kernel, memcpy, memset), from the end of
    the previous one, is idle time of one category (hta/analyzers/breakdown_analysis.py,
    ``_analyze_idle_time_for_stream``):

    * ``host_wait``: the item's launch call started after the previous item had ended: the
      host was not enqueuing work fast enough.
    * ``kernel_wait``: otherwise, a gap shorter than ``kernel_wait_us``: launch overhead
      between back-to-back kernels.
    * ``other``: the rest (for example a wait on an event from another stream).

    Time before a stream's first item and after its last is not counted. Work with no launch
    call in the trace cannot be host wait.

    Args:
        trace: one rank's trace.
        include_last_step: analyse the last profiler step too.
        kernel_wait_us: the kernel-wait threshold; HTA's default.

    Returns:
        Three rows per stream, streams ascending, categories in :data:`IDLE_CATEGORIES`
        order: ``stream``, ``idle_category``, ``idle_us``, ``idle_pct`` (share of that
        stream's idle time; 0 when the stream never idles). HTA lists only the categories
        that occur. Empty without GPU work.
    """
    events = analysis_window(trace, include_last_step=include_last_step)
    gpu = _with_launch_start(events).sort_values(["stream", "ts_us"], kind="stable")
    previous_end = gpu.groupby("stream")["end_us"].shift(1)
    gap = (gpu["ts_us"] - previous_end).to_numpy()
    host_wait = (gpu["launch_ts_us"] > previous_end).to_numpy()
    category = np.where(
        host_wait, HOST_WAIT, np.where(gap < kernel_wait_us, KERNEL_WAIT, OTHER_WAIT)
    )
    gaps = pd.DataFrame({"stream": gpu["stream"].to_numpy(), "idle_category": category})
    gaps["idle_us"] = np.nan_to_num(gap)  # a stream's first item has no gap before it
    full = pd.MultiIndex.from_product(
        [sorted(gpu["stream"].unique()), IDLE_CATEGORIES], names=["stream", "idle_category"]
    )
    table = gaps.groupby(["stream", "idle_category"])["idle_us"].sum().reindex(full)
    table = table.fillna(0.0).reset_index()
    stream_idle = table.groupby("stream")["idle_us"].transform("sum")
    table["idle_pct"] = (100.0 * table["idle_us"] / stream_idle.where(stream_idle > 0)).fillna(0.0)
    return table


def _with_launch_start(events: pd.DataFrame) -> pd.DataFrame:
    """GPU work with ``launch_ts_us``: when its launch call (runtime or driver) started."""
    columns = ["stream", "correlation", "ts_us", "end_us"]
    gpu = events.loc[events["kind"].isin(DEVICE_KINDS), columns]
    launches = events.loc[
        events["kind"].isin(LAUNCH_KINDS) & (events["correlation"] >= 0), ["correlation", "ts_us"]
    ]
    launch_ts = launches.drop_duplicates("correlation").set_index("correlation")["ts_us"]
    return gpu.assign(launch_ts_us=gpu["correlation"].map(launch_ts))
