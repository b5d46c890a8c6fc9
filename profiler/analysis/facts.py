"""The figures recommendation rules read, derived from one trace's analyses."""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.analysis.devices import DEVICE_KINDS, KERNEL, device_model
from profiler.analysis.gpu import GpuMetrics
from profiler.analysis.kernels import analysis_window, classify_kernels, merge_intervals
from profiler.analysis.memory import MemoryPeak
from profiler.analysis.ops import HOST_KINDS, nest_parents, op_table
from profiler.analysis.rules import SHORT_KERNEL_US, TraceFacts
from profiler.analysis.table import TraceTable
from profiler.analysis.temporal import HOST_WAIT, idle_time_breakdown

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
    return TraceFacts(
        device=trace.device,
        step_us=total_us / count,
        breakdown_pct={
            **breakdown_pct,
            "communication": _communication_pct(trace, steps, total_us, breakdown_pct),
        },
        gpu_utilization_pct=gpu.utilization_pct if gpu else None,
        tensor_core_pct=gpu.tensor_core_pct if gpu else None,
        # Tensor-core kernel names and compute capabilities are NVIDIA's; ROCm's differ.
        compute_major=_compute_major(props) if model.tensor_core_names else None,
        tc_eligible_kernel_pct=_tc_eligible_pct(trace) if gpu else None,
        short_kernel_share=float((kernels["dur_us"] < SHORT_KERNEL_US).mean()) if gpu else None,
        kernels_per_step=len(kernels) / count if gpu else None,
        host_wait_pct=_host_wait_pct(trace) if gpu else None,
        sync_pct=_share_pct(syncs, total_us) if gpu else None,
        sync_calls_per_step=len(syncs) / count if gpu else None,
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
    idle = idle_time_breakdown(trace)
    # The idle breakdown's own window: HTA's, all GPU work (kernels, copies, sets).
    work = analysis_window(trace)
    work = work[work["kind"].isin(DEVICE_KINDS)]
    if idle.empty or work.empty:
        return None
    span = float(work["end_us"].max() - work["ts_us"].min())
    # The stream that waited on the host longest (usually the one stream doing the compute).
    host_wait = float(idle.loc[idle["idle_category"] == HOST_WAIT, "idle_us"].max())
    return min(100.0, 100.0 * host_wait / span) if span > 0 else None


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
