"""The figures recommendation rules read, derived from one trace's analyses."""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.analysis.devices import (
    COMMUNICATION,
    DEVICE_KINDS,
    KERNEL,
    LAUNCH_KINDS,
    Device,
    device_model,
)
from profiler.analysis.gpu import GpuMetrics
from profiler.analysis.kernels import analysis_window, classify_kernels, merge_intervals
from profiler.analysis.memory import MemoryPeak
from profiler.analysis.ops import HOST_KINDS, nest_parents, op_table
from profiler.analysis.rules import SHORT_KERNEL_US, TraceFacts
from profiler.analysis.table import TraceTable

# Ops that tensor cores can run, as TensorBoard's plugin lists them (torch_tb_profiler/profiler/
# tensor_core.py, TC_OP_Allowlist, itself taken from autocast's fp16 list in autocast_mode.cpp).
TC_ELIGIBLE_OPS = frozenset({
    "aten::_convolution", "aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::conv_tbc",
    "aten::conv_transpose1d", "aten::conv_transpose2d", "aten::conv_transpose3d",
    "aten::convolution", "aten::cudnn_convolution", "aten::cudnn_convolution_transpose",
    "aten::prelu", "aten::addmm", "aten::addmv", "aten::addr", "aten::matmul", "aten::mm",
    "aten::mv", "aten::linear", "aten::addbmm", "aten::baddbmm", "aten::bmm",
    "aten::chain_matmul", "aten::linalg_multi_dot", "aten::_thnn_fused_lstm_cell",
    "aten::_thnn_fused_gru_cell", "aten::lstm_cell", "aten::gru_cell", "aten::rnn_tanh_cell",
    "aten::rnn_relu_cell", "CudnnConvolutionBackward", "BmmBackward0",
    "aten::cudnn_convolution_transpose_backward", "CudnnConvolutionTransposeBackward",
    "MmBackward", "aten::cudnn_convolution_backward_weight", "aten::addmm_", "AddmvBackward",
    "MvBackward", "aten::cudnn_convolution_transpose_backward_weight",
    "aten::cudnn_convolution_transpose_backward_input", "AddmmBackward",
    "aten::cudnn_convolution_backward_input", "AddbmmBackward", "aten::cudnn_convolution_backward",
})  # fmt: skip
OPTIMIZER_STEP_PREFIX = "Optimizer.step#"
PAGEABLE_MARK = "Pageable"
# Kineto's records of the host blocking on the device (category ``cuda_sync``, named after
# CUPTI's CUpti_ActivitySynchronizationType); the fourth, "Stream Wait Event", is one stream
# waiting on another inside the device and blocks no host thread.
HOST_BLOCKING_SYNC_RECORDS = ("Context Sync", "Stream Sync", "Event Sync")
_MAX_COMPUTE_MAJOR = 1000  # NVIDIA's are single digits: anything past this is not one


def trace_facts(
    trace: TraceTable,
    *,
    steps: pd.DataFrame,
    breakdown_pct: dict[str, float],
    gpu: GpuMetrics | None,
    peak: MemoryPeak | None,
) -> TraceFacts:
    """Everything the rules need for one trace, from analyses the caller already ran."""
    events = trace.events
    total_us = float(steps["dur_us"].sum()) if len(steps) else 0.0
    count = max(len(steps), 1)
    kernels = events[events["kind"] == KERNEL]
    props = trace.device_properties
    model = device_model(trace.device)
    syncs = _sync_calls(events, model.sync_calls)
    window = _steps_span(steps)
    return TraceFacts(
        device=trace.device,
        step_us=total_us / count,
        breakdown_pct={
            **breakdown_pct,
            "communication": _communication_pct(trace, steps, total_us, breakdown_pct),
        },
        gpu_utilization_pct=gpu.utilization_pct if gpu else None,
        gpu_idle_us_per_step=_idle_per_step(gpu, window, count),
        tensor_core_pct=gpu.tensor_core_pct if gpu else None,
        # Tensor-core kernel names and compute capabilities are NVIDIA's; ROCm's differ.
        compute_major=_compute_major(props) if model.tensor_core_names else None,
        tc_eligible_kernel_pct=_tc_eligible_pct(trace) if gpu else None,
        short_kernel_share=float((kernels["dur_us"] < SHORT_KERNEL_US).mean()) if gpu else None,
        kernels_per_step=len(kernels) / count if gpu else None,
        host_wait_pct=_host_wait_pct(trace) if gpu else None,
        sync_pct=_share_pct(syncs, total_us) if gpu else None,
        sync_calls_per_step=len(syncs) / count if gpu else None,
        sync_idle_pct=_pct(_sync_idle_us(events, model, window), total_us) if gpu else None,
        exposed_comm_pct=max(
            breakdown_pct.get("communication", 0.0),
            _pct(_exposed_comm_kernel_us(trace, window), total_us),
        ),
        pageable_copy_share=_pageable_share(events) if gpu else None,
        peak_memory_bytes=peak.allocated_bytes if peak and peak.capacity_bytes else None,
        memory_capacity_bytes=peak.capacity_bytes if peak else None,
        optimizer_pct=_share_pct(_optimizer_steps(events), total_us, steps),
        mean_op_self_us=_mean_op_self_us(trace),
    )


def _compute_major(props: list[dict[str, object]]) -> int | None:
    """The first device's compute capability (major), when it is a plausible one."""
    major = props[0].get("computeMajor") if props else None
    return major if type(major) is int and 0 <= major < _MAX_COMPUTE_MAJOR else None


def _union_us(frame: pd.DataFrame) -> float:
    """Time covered by the union of the frame's ranges."""
    if frame.empty:
        return 0.0
    start, end = merge_intervals(frame["ts_us"].to_numpy(), frame["end_us"].to_numpy())
    return float((end - start).sum())


def _share_pct(frame: pd.DataFrame, total_us: float, steps: pd.DataFrame | None = None) -> float:
    if total_us <= 0:
        return 0.0
    if steps is not None and len(steps):
        frame = frame[
            (frame["ts_us"] >= steps["ts_us"].min()) & (frame["ts_us"] < steps["end_us"].max())
        ]
    return 100.0 * _union_us(frame) / total_us


def _idle_per_step(gpu: GpuMetrics | None, window: tuple[float, float], count: int) -> float | None:
    """Time with no kernel running over the steps' span (the utilization's), per step."""
    if gpu is None or not np.isfinite(window[1] - window[0]):
        return None
    return round((window[1] - window[0]) * (100.0 - gpu.utilization_pct) / 100.0 / count, 1)


def _pct(part_us: float, total_us: float) -> float:
    return 100.0 * part_us / total_us if total_us > 0 else 0.0


def _steps_span(steps: pd.DataFrame) -> tuple[float, float]:
    """From the first step's start to the last one's end (everything for a trace without)."""
    if not len(steps):
        return (-np.inf, np.inf)
    return float(steps["ts_us"].min()), float(steps["end_us"].max())


def _clip(
    start: np.ndarray, end: np.ndarray, window: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    start, end = np.maximum(start, window[0]), np.minimum(end, window[1])
    keep = end > start
    return start[keep], end[keep]


def _overlap_us(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Time covered by both unions of disjoint sorted intervals ``a`` and ``b``."""
    if not len(a[0]) or not len(b[0]):
        return 0.0
    bounds = np.unique(np.concatenate([*a, *b]))
    mid = (bounds[:-1] + bounds[1:]) / 2
    inside = _inside(mid, a) & _inside(mid, b)
    return float(np.diff(bounds)[inside].sum())


def _inside(points: np.ndarray, merged: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    index = np.searchsorted(merged[0], points, side="right") - 1
    return (index >= 0) & (points < merged[1][np.maximum(index, 0)])


def _sync_idle_us(events: pd.DataFrame, model: Device, window: tuple[float, float]) -> float:
    """Device idle time following host syncs, inside ``window``.

    A sync returns once the device has drained, and nothing runs on the device until the host
    enqueues the next work: for each sync, the time from its start to the start of the next
    device work (on any stream) after it returns, less the time the device was busy then (its
    draining). Overlapping syncs (MTIA's ``synchronize`` inside ``synchronizeStream``) count
    once; a sync after the last device work counts nothing (no next work to wait for).
    """
    busy = merge_intervals(*_clip(*_device_work(events), window))
    syncs = pd.concat([_sync_calls(events, model.sync_calls), _sync_records(events)])
    start, end = _clip(syncs["ts_us"].to_numpy(), syncs["end_us"].to_numpy(), window)
    if not len(busy[0]) or not len(start):
        return 0.0
    following = np.searchsorted(busy[0], end, side="left")
    waited = following < len(busy[0])
    start = start[waited]
    next_work = busy[0][following[waited]]
    waits = merge_intervals(start, next_work)
    return float((waits[1] - waits[0]).sum()) - _overlap_us(waits, busy)


def _device_work(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    work = events[events["kind"].isin(DEVICE_KINDS)]
    return work["ts_us"].to_numpy(dtype=np.float64), work["end_us"].to_numpy(dtype=np.float64)


def _sync_records(events: pd.DataFrame) -> pd.DataFrame:
    """Kineto's ``cuda_sync`` records of the host blocking (:data:`HOST_BLOCKING_SYNC_RECORDS`)."""
    records = events[events["kind"] == "sync"]
    return records[records["name"].astype(str).isin(HOST_BLOCKING_SYNC_RECORDS)]


def _exposed_comm_kernel_us(trace: TraceTable, window: tuple[float, float]) -> float:
    """Time inside ``window`` with communication running on the device (HTA's communication
    kernels, device-side collectives) and no other kernel: what overlapping it would save."""
    events = trace.events
    kernels = events[events["kind"].isin((KERNEL, COMMUNICATION))]
    is_comm = (kernels["kind"] == COMMUNICATION).to_numpy() | (
        classify_kernels(kernels["name"]) == "COMMUNICATION"
    ).to_numpy()
    start = kernels["ts_us"].to_numpy(dtype=np.float64)
    end = kernels["end_us"].to_numpy(dtype=np.float64)
    comm = merge_intervals(*_clip(start[is_comm], end[is_comm], window))
    compute = merge_intervals(*_clip(start[~is_comm], end[~is_comm], window))
    return float((comm[1] - comm[0]).sum()) - _overlap_us(comm, compute)


def _communication_pct(
    trace: TraceTable, steps: pd.DataFrame, total_us: float, breakdown_pct: dict[str, float]
) -> float:
    """The larger of the plugin's communication share and that of HTA's communication kernels.

    The plugin ties a kernel to a collective through its External id, which on current traces
    never matches, so its figure is near 0 on NCCL jobs that HTA finds 55% communication
    (two_ranks). For advice, a communication kernel's time counts whatever launched it.
    """
    kernels = trace.events[trace.events["kind"] == "kernel"]
    comm = kernels[classify_kernels(kernels["name"]) == "COMMUNICATION"]
    return max(breakdown_pct.get("communication", 0.0), _share_pct(comm, total_us, steps))


def _sync_calls(events: pd.DataFrame, calls: tuple[str, ...]) -> pd.DataFrame:
    """Runtime calls that block the host (the device model's ``sync_calls``)."""
    runtime = events[events["kind"] == "runtime"]
    names = runtime["name"].astype(str)
    return runtime[names.str.endswith(calls)] if calls else runtime.iloc[0:0]


def _optimizer_steps(events: pd.DataFrame) -> pd.DataFrame:
    names = events["name"].astype(str)
    return events[
        (events["kind"] == "user_annotation") & names.str.startswith(OPTIMIZER_STEP_PREFIX)
    ]


def _pageable_share(events: pd.DataFrame) -> float | None:
    copies = events[(events["kind"] == "memcpy") & (events["bytes"] > 0)]
    if copies.empty:
        return None
    pageable = copies["name"].astype(str).str.contains(PAGEABLE_MARK)
    return float(copies.loc[pageable, "bytes"].sum() / copies["bytes"].sum())


def _host_wait_pct(trace: TraceTable) -> float | None:
    """The device's host-wait idle time as a share of its work's span, in HTA's window.

    HTA's host-wait test (``_analyze_idle_time_for_stream``: the next work's launch call began
    after the previous work ended) applied to the device as a whole rather than per stream: a
    gap with no work on any stream is host wait when the work that ends it was launched only
    after the gap began. Per stream, a side stream (NCCL's, a copy stream) launched once a step
    "waits for the host" nearly all the time while the compute stream is busy: diff_control's
    busiest such stream waits 90% of the span where the device idles 16%, MTIA's 51% where it
    idles 4%.
    """
    work = _launch_starts(analysis_window(trace))
    if work.empty:
        return None
    busy_start, busy_end = merge_intervals(work["ts_us"].to_numpy(), work["end_us"].to_numpy())
    span = float(busy_end[-1] - busy_start[0])
    if span <= 0:
        return None
    gap_start, gap_end = busy_end[:-1], busy_start[1:]
    # The work that ends each gap starts exactly at the next busy interval's start.
    launched = work.groupby("ts_us")["launch_ts_us"].min().reindex(gap_end).to_numpy()
    host_wait = float(np.where(launched > gap_start, gap_end - gap_start, 0.0).sum())
    return min(100.0, 100.0 * host_wait / span)


def _launch_starts(events: pd.DataFrame) -> pd.DataFrame:
    """Device work (``ts_us``, ``end_us``) with ``launch_ts_us``, its launch call's start (NaN
    where no launch call is in the trace: such work never counts as host wait)."""
    work = events.loc[events["kind"].isin(DEVICE_KINDS), ["correlation", "ts_us", "end_us"]]
    launches = events.loc[
        events["kind"].isin(LAUNCH_KINDS) & (events["correlation"] >= 0), ["correlation", "ts_us"]
    ]
    launch_ts = launches.drop_duplicates("correlation").set_index("correlation")["ts_us"]
    return work.assign(launch_ts_us=work["correlation"].map(launch_ts))


def _tc_eligible_pct(trace: TraceTable) -> float | None:
    """Share of kernel time launched from inside a tensor-core-eligible op (the plugin's
    ``tc_eligible_ops_kernel_ratio``): kernel -> its launch call (by correlation) -> the host
    events enclosing that call on its thread."""
    events = trace.events
    kernels = events[(events["kind"] == "kernel") & (events["correlation"] >= 0)]
    total = float(kernels["dur_us"].sum())
    if total <= 0:
        return None
    host = events[events["kind"].isin(HOST_KINDS)]
    inside = _inside_eligible(
        host["name"].astype(str).isin(TC_ELIGIBLE_OPS).to_numpy(), nest_parents(host)
    )
    launches = host[(host["kind"] == "runtime") & inside & (host["correlation"] >= 0)]
    eligible = kernels["correlation"].isin(set(launches["correlation"]))
    return 100.0 * float(kernels.loc[eligible, "dur_us"].sum()) / total


def _inside_eligible(eligible: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Events that are eligible or nested, at any depth, inside one that is."""
    marked = eligible.copy()
    ancestor = parents.copy()
    while (live := ancestor >= 0).any():  # pointer doubling: log(depth) rounds
        marked[live] |= marked[ancestor[live]]
        ancestor[live] = parents[ancestor[live]]
    return marked


def _mean_op_self_us(trace: TraceTable) -> float | None:
    ops = op_table(trace)
    return float(ops["self_us"].mean()) if len(ops) else None
