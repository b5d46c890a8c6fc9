"""The typed per-trace summary: what ``trainprof summary`` reports of one trace.

:class:`TraceSummary` is the analysis-to-view hand-off; :meth:`TraceSummary.to_dict` is its
``trainprof.summary/1`` JSON form, field for field (the field order is the JSON's key order).
Figures are rounded here, once, to two decimals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from profiler.analysis.rules import Recommendation

ROUND_DIGITS = 2


@dataclass(frozen=True)
class StepStats:
    """Step time over the trace's steps (0.0 when it has none)."""

    count: int
    mean_us: float
    p50_us: float
    max_us: float


@dataclass(frozen=True)
class GpuSummary:
    """The plugin's GPU Summary figures (see :class:`profiler.analysis.gpu.GpuMetrics`)."""

    utilization_pct: float | None
    sm_efficiency_pct: float | None
    achieved_occupancy_pct: float | None
    tensor_core_pct: float | None


@dataclass(frozen=True)
class TemporalSummary:
    """HTA's temporal breakdown, percent of the span (see ``profiler.analysis.temporal``)."""

    idle: float | None
    compute: float | None
    non_compute: float | None


@dataclass(frozen=True)
class TopOp:
    """A CPU op among those with the most self time."""

    name: str
    calls: int
    self_us: float | None
    total_us: float | None


@dataclass(frozen=True)
class TopKernel:
    """A kernel among those with the most GPU time."""

    name: str
    calls: int
    total_us: float | None
    mean_us: float | None


@dataclass(frozen=True)
class MemorySummary:
    """The peak of allocated memory and what was running then."""

    peak_allocated_bytes: int
    peak_reserved_bytes: int | None
    device: str
    capacity_bytes: int | None
    capacity_pct: float | None
    at_module: str | None
    at_op: str | None


@dataclass(frozen=True)
class TraceSummary:
    """One trace's entry in ``trainprof.summary/1``.

    Attributes:
        path: the trace file.
        rank: its rank.
        device: ``cuda``, ``rocm``, ``mtia``, ``xpu`` or ``cpu`` (:mod:`profiler.analysis.devices`).
        events: how many events the file holds.
        steps: step time figures.
        step_breakdown_pct: category (``profiler.analysis.steps.CATEGORIES``, in order) to
            its share of step time.
        gpu: the accelerator's figures; None on a trace without kernels, and each figure
            the device does not have (SM efficiency, occupancy, tensor cores off CUDA) None.
        temporal_breakdown_pct: idle/compute/non-compute; None without GPU work.
        top_ops: CPU ops with the most self time.
        top_kernels: kernels with the most GPU time.
        memory: the memory peak; None without memory events.
        recommendations: findings, most severe first.
    """

    path: str
    rank: int
    device: str
    events: int
    steps: StepStats
    step_breakdown_pct: dict[str, float | None]
    gpu: GpuSummary | None
    temporal_breakdown_pct: TemporalSummary | None
    top_ops: tuple[TopOp, ...]
    top_kernels: tuple[TopKernel, ...]
    memory: MemorySummary | None
    recommendations: tuple[Recommendation, ...]

    def to_dict(self) -> dict[str, Any]:
        """The ``trainprof.summary/1`` form: plain dicts and lists, keys in field order."""
        result: dict[str, Any] = _builtins(self)
        return result


def rounded(value: float | None, digits: int = ROUND_DIGITS) -> float | None:
    """``value`` as a Python float rounded to ``digits`` (None stays None)."""
    return None if value is None else round(float(value), digits)


def _builtins(value: Any) -> Any:
    # dataclasses.asdict keeps tuples as tuples; the JSON form (and its readers) want lists.
    if isinstance(value, Recommendation):
        return value.as_dict()  # the one spelling of a finding
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _builtins(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_builtins(item) for item in value]
    if isinstance(value, dict):
        return {key: _builtins(item) for key, item in value.items()}
    return value
