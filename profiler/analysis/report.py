"""The typed per-trace summary: what ``trainprof summary`` reports of one trace.

:class:`TraceSummary` is the analysis-to-view hand-off; :meth:`TraceSummary.to_dict` is its
``trainprof.summary/1`` JSON form, field for field (the field order is the JSON's key order).
Figures are rounded here, once, to two decimals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from profiler.analysis.rules import Recommendation
from profiler.analysis.triggers import WindowTrigger

if TYPE_CHECKING:  # diff.py imports this module: the step-log figures are only named here
    from profiler.analysis.diff import StepLogStats

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
class TopOpByShape(TopOp):
    """A CPU op at one set of input shapes (``summary --by-shape``).

    Attributes:
        input_dims: Kineto's ``Input Dims`` of the op, decoded (one list of sizes per input);
            None where the trace recorded no shapes (profiled without ``record_shapes=True``).
    """

    input_dims: Any


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
        top_ops: CPU ops with the most self time (:class:`TopOpByShape` rows, one per name and
            input shapes, when the summary groups by shape).
        top_kernels: kernels with the most GPU time.
        memory: the memory peak; None without memory events.
        recommendations: findings, most severe first.
        trigger: what opened the trace's window outside the schedule (``on_anomaly``, a
            capture request); None for a scheduled window or a file that does not say.
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
    trigger: WindowTrigger | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``trainprof.summary/1`` form: plain dicts and lists, keys in field order."""
        result: dict[str, Any] = _builtins(self)
        return result


@dataclass(frozen=True)
class SlowStep:
    """One of the slowest steps in the step logs."""

    rank: int
    step: int
    dur_us: float | None
    data_wait_us: float | None


@dataclass(frozen=True)
class StepLogReport:
    """The always-on step logs of the runs summarised: every step, not only deep windows.

    Attributes:
        stats: the figures ``trainprof diff`` compares (every rank and run pooled).
        phase_pct: forward, backward and optimizer time as a percent of the step time of the
            steps where that phase was timed (a sample of the steps); None where none was.
        slowest_steps: the longest steps, longest first.
        per_rank: each rank's figures; None when the logs are of one rank.
        recommendations: findings from the step logs alone (a long wait for data).
        runs: the run directories whose step logs were read.
    """

    stats: StepLogStats
    phase_pct: dict[str, float | None]
    slowest_steps: tuple[SlowStep, ...]
    per_rank: tuple[tuple[int, StepLogStats], ...] | None
    recommendations: tuple[Recommendation, ...]
    runs: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The ``step_logs`` object of ``trainprof.summary/1``: the :class:`StepLogStats`
        figures at its top level, as ``trainprof diff`` writes each side, then the rest."""
        per_rank = self.per_rank
        return {
            **self.stats.to_dict(),
            "phase_pct": {key: rounded(value) for key, value in self.phase_pct.items()},
            "slowest_steps": _builtins(self.slowest_steps),
            "per_rank": None
            if per_rank is None
            else [{"rank": rank, **stats.to_dict()} for rank, stats in per_rank],
            "recommendations": _builtins(self.recommendations),
            "runs": list(self.runs),
        }


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
