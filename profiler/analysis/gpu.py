"""GPU utilization, estimated SM efficiency, achieved occupancy and tensor-core share.

Definitions follow PyTorch's TensorBoard profiler plugin 0.4.3 (its Overview's "GPU Summary":
``torch_tb_profiler/profiler/gpu_metrics_parser.py``, ``tensor_cores_parser.py`` and
``tensor_core.py``), measured over the steps' span: from the first step's start to the last
step's end, steps as :func:`profiler.analysis.steps.step_table` gives them (so on current
traces, whose runtime calls the plugin cannot read, the span includes the GPU work each step
launched; the plugin's does not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from profiler.analysis.devices import Device, device_model
from profiler.analysis.memo import per_trace
from profiler.analysis.steps import step_table
from profiler.analysis.table import MISSING_INT, TraceTable

#: Kernel-name fragments that mark a kernel as running on Tensor Cores: a kernel uses them when
#: its name contains any of these. Copied from torch-tb-profiler 0.4.3,
#: torch_tb_profiler/profiler/tensor_core.py (``TC_Allowlist``), which took them from NVIDIA
#: PyProf (pyprof/prof/tc.py). Kept here so the plugin stays a test-only dependency.
TENSOR_CORE_KERNEL_PATTERNS: tuple[str, ...] = (
    "h884",
    "s884",
    "h1688",
    "s1688",
    "hmma",
    "i8816",
    "16816",
    "dgrad_1x1_stride_2x2",
    "first_layer_wgrad_kernel",
    "conv1x1",
    "conv2d_c1_k1",
    "direct_group",
    "xmma_implicit_gemm",
    "xmma_sparse_conv",
    "xmma_warp_specialized_implicit_gemm",
    "xmma_gemm",
    "xmma_sparse_gemm",
    "c1688",
)


@dataclass(frozen=True)
class DeviceGpuMetrics:
    """The plugin's GPU Summary for one device (percentages, 0-100).

    Attributes:
        device: the GPU id (the kernels' ``device`` arg; their pid where that is missing).
        utilization_pct: time with at least one kernel running, over the steps' span.
        sm_efficiency_pct: estimated SM efficiency: at each instant, the running kernels'
            blocks per SM summed and capped at 1, averaged over the steps' span. None when no
            kernel in the span reports blocks per SM, or the device has no such figure
            (:attr:`profiler.analysis.devices.Device.kernel_metrics`: ROCm, MTIA, XPU).
        achieved_occupancy_pct: the kernels' estimated achieved occupancy, averaged weighted
            by each kernel's time inside the span. None when no kernel there reports it, or
            the device has no such figure.
        tensor_core_pct: share of kernel time spent in kernels whose names mark them as
            Tensor Core kernels (``TENSOR_CORE_KERNEL_PATTERNS``). None on devices whose
            kernel names do not tell (:attr:`~profiler.analysis.devices.Device.tensor_core_names`).
    """

    device: int
    utilization_pct: float
    sm_efficiency_pct: float | None
    achieved_occupancy_pct: float | None
    tensor_core_pct: float | None


@dataclass(frozen=True)
class GpuMetrics:
    """The GPU Summary over all of a trace's devices, and per device.

    With one device the top-level values are that device's. With several, utilization and SM
    efficiency are the devices' mean (each is a share of the same span), and occupancy and the
    tensor-core share pool every device's kernel time.

    Attributes:
        utilization_pct: see :class:`DeviceGpuMetrics`.
        sm_efficiency_pct: see :class:`DeviceGpuMetrics`.
        achieved_occupancy_pct: see :class:`DeviceGpuMetrics`.
        tensor_core_pct: see :class:`DeviceGpuMetrics`.
        per_device: device id to that device's metrics.
    """

    utilization_pct: float
    sm_efficiency_pct: float | None
    achieved_occupancy_pct: float | None
    tensor_core_pct: float | None
    per_device: Mapping[int, DeviceGpuMetrics] = field(default_factory=dict)


@per_trace
def gpu_metrics(trace: TraceTable) -> GpuMetrics | None:
    """The plugin's GPU Summary metrics, for the whole trace and per device.

    Differences from the plugin 0.4.3, on purpose: the span is our step span (see module doc);
    the tensor-core share counts every kernel, where the plugin counts only kernels it can tie
    to a runtime call (so it shows none at all on traces with ``cuda_runtime`` events).

    Args:
        trace: a loaded trace.

    Figures a device does not have (:class:`profiler.analysis.devices.Device`) are None.

    Returns:
        The metrics, or None when the trace ran no kernels (CPU-only, or memcpy only).
    """
    kernels = _kernels(trace.events)
    steps = step_table(trace)
    if kernels.empty or steps.empty:
        return None
    span = (float(steps["ts_us"].iloc[0]), float(steps["end_us"].iloc[-1]))
    model = device_model(trace.device)
    per_device = {
        int(device): _device_metrics(int(device), group, span, model)
        for device, group in kernels.groupby("gpu", sort=True)
    }
    return _combine(per_device, kernels, span, model)


def _kernels(events: pd.DataFrame) -> pd.DataFrame:
    """Kernels with their GPU id and whether they use Tensor Cores."""
    kernels = events[(events["kind"] == "kernel").to_numpy()]
    gpu = np.where(kernels["device"] != MISSING_INT, kernels["device"], kernels["pid"])
    names = kernels["name"].astype("category")
    distinct = names.cat.categories.astype(str)
    uses_tc = np.zeros(len(distinct), dtype=bool)
    for pattern in TENSOR_CORE_KERNEL_PATTERNS:
        uses_tc |= np.asarray(distinct.str.contains(pattern, regex=False), dtype=bool)
    return pd.DataFrame(
        {
            "gpu": gpu,
            "ts_us": kernels["ts_us"].to_numpy(),
            "end_us": kernels["end_us"].to_numpy(),
            "dur_us": kernels["dur_us"].to_numpy(),
            "blocks_per_sm": kernels["blocks_per_sm"].to_numpy(),
            "occupancy_pct": kernels["occupancy_pct"].to_numpy(),
            "tensor_core": np.append(uses_tc, False)[names.cat.codes.to_numpy()],
        }
    )


def _device_metrics(
    device: int, kernels: pd.DataFrame, span: tuple[float, float], model: Device
) -> DeviceGpuMetrics:
    return DeviceGpuMetrics(
        device=device,
        utilization_pct=100.0 * _busy_us(kernels, span) / _length(span),
        sm_efficiency_pct=_sm_efficiency_pct(kernels, span) if model.kernel_metrics else None,
        achieved_occupancy_pct=_occupancy_pct(kernels, span) if model.kernel_metrics else None,
        tensor_core_pct=_tensor_core_pct(kernels) if model.tensor_core_names else None,
    )


def _combine(
    per_device: dict[int, DeviceGpuMetrics],
    kernels: pd.DataFrame,
    span: tuple[float, float],
    model: Device,
) -> GpuMetrics:
    devices = list(per_device.values())
    efficiencies = [d.sm_efficiency_pct for d in devices if d.sm_efficiency_pct is not None]
    return GpuMetrics(
        utilization_pct=float(np.mean([d.utilization_pct for d in devices])),
        sm_efficiency_pct=float(np.mean(efficiencies)) if efficiencies else None,
        achieved_occupancy_pct=_occupancy_pct(kernels, span) if model.kernel_metrics else None,
        tensor_core_pct=_tensor_core_pct(kernels) if model.tensor_core_names else None,
        per_device=per_device,
    )


def _busy_us(kernels: pd.DataFrame, span: tuple[float, float]) -> float:
    """Length of the union of the kernels' intervals inside the span
    (``calculate_gpu_utilization``). Sorted by start, each interval adds what reaches past
    the furthest end before it."""
    starts, ends = _clipped(kernels, span)
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.concatenate(([-np.inf], np.maximum.accumulate(ends)[:-1]))
    return float(np.clip(ends - np.maximum(starts, reach), 0.0, None).sum())


def _sm_efficiency_pct(kernels: pd.DataFrame, span: tuple[float, float]) -> float | None:
    """Blocks per SM of the running kernels, summed, capped at 1 and integrated over the span,
    over the span (``calculate_approximated_sm_efficiency``: it divides by the span, not by
    kernel time, so idle time counts as 0)."""
    rated = kernels[kernels["blocks_per_sm"] > 0]  # the plugin skips missing and non-positive
    starts, ends = _clipped(rated, span)
    values = rated["blocks_per_sm"].to_numpy()[ends > starts]
    starts, ends = starts[ends > starts], ends[ends > starts]
    if starts.size == 0:
        return None
    times = np.concatenate([starts, ends])
    order = np.argsort(times, kind="stable")
    level = np.cumsum(np.concatenate([values, -values])[order])[:-1]
    weighted = np.clip(level, 0.0, 1.0) * np.diff(times[order])
    return 100.0 * float(weighted.sum()) / _length(span)


def _occupancy_pct(kernels: pd.DataFrame, span: tuple[float, float]) -> float | None:
    """Achieved occupancy weighted by each kernel's time inside the span
    (``calculate_occupancy``)."""
    rated = kernels[kernels["occupancy_pct"] >= 0]
    starts, ends = _clipped(rated, span)
    weights = np.clip(ends - starts, 0.0, None)
    if weights.sum() <= 0:
        return None
    return float(np.average(rated["occupancy_pct"].to_numpy(), weights=weights))


def _tensor_core_pct(kernels: pd.DataFrame) -> float:
    """Share of all kernel time in Tensor Core kernels (``_calculate_tc_ratio``)."""
    dur = kernels["dur_us"].to_numpy()
    total = float(dur.sum())
    return 100.0 * float(dur[kernels["tensor_core"].to_numpy()].sum()) / total if total else 0.0


def _clipped(kernels: pd.DataFrame, span: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    starts = np.maximum(kernels["ts_us"].to_numpy(dtype=np.float64), span[0])
    ends = np.minimum(kernels["end_us"].to_numpy(dtype=np.float64), span[1])
    return starts, np.maximum(ends, starts)


def _length(span: tuple[float, float]) -> float:
    # A zero-length span (one instant) would divide by zero; it has no busy time anyway.
    return max(span[1] - span[0], np.finfo(np.float64).tiny)
