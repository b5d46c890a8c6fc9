"""The CI gate: is a run's figure more than a given percent worse than a baseline run's?

``trainprof diff BASE NEW --fail-above PCT [--metric NAME]`` and ``trainprof summary RUN
--baseline BASE --fail-above PCT`` ask :func:`check_gate`; the CLI prints its one-line
:attr:`Gate.reason` and exits 1 when it :attr:`~Gate.tripped`.

Every metric is worse when larger. Where a figure comes from (``source``):

* step time (mean, p50, p90, max) and data wait: the always-on step logs when both runs have
  them (every step, so steadier than a few deep-window steps), else the traces' steps
  (``ProfilerStep`` ranges; data wait is then the breakdown's ``dataloader`` time per step);
* forward, backward, optimizer: the step logs only (their sampled split);
* a step-breakdown category (``profiler.analysis.steps.CATEGORIES``): the traces only;
* peak memory: the step logs' highest ``peak_memory_bytes`` (CUDA: the caching allocator's
  peak allocated bytes; CPU: the process's peak RSS) when both runs have it, else the traces'
  highest allocated bytes (``profiler.analysis.memory.memory_peak``).

A base of 0 (a category the base run never spent time in): the gate trips when the new figure
is above 0, since any growth from nothing is more than every percentage, and passes when it is
0 too; ``change_pct`` is None then. A figure that one run lacks (no step logs for a step-log
metric, no memory samples), or memory figures of different kinds (CPU RSS against CUDA
allocator bytes), leaves the gate undecided: not tripped, :attr:`Gate.decided` False, and the
CLI exits 2, "could not tell". A change exactly at the threshold passes: only "more than PCT
percent worse" trips, compared exactly (PCT as written in decimal, not its binary float).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from profiler.analysis.diff import RunFigures, RunTotals, change_pct
from profiler.analysis.guards import duration_text, size_text
from profiler.analysis.report import rounded
from profiler.analysis.steps import CATEGORIES

Source = Literal["step_logs", "traces"]
STEP_LOGS: Source = "step_logs"
TRACES: Source = "traces"
DEFAULT_METRIC = "step_time"


@dataclass(frozen=True)
class Metric:
    """A figure the gate can compare.

    Attributes:
        name: what ``--metric`` takes.
        label: the figure in words, as the verdict names it.
        unit: ``us`` or ``bytes``.
        step_log: its :class:`~profiler.analysis.diff.StepLogStats` field (None: traces only).
        trace: how to read it from the pooled traces (None: step logs only).
    """

    name: str
    label: str
    unit: Literal["us", "bytes"]
    step_log: str | None
    trace: Callable[[RunTotals], float | None] | None


def _step(field: str) -> Callable[[RunTotals], float | None]:
    return lambda totals: getattr(totals.step_stats, field) if totals.steps else None


def _category(name: str) -> Callable[[RunTotals], float | None]:
    return lambda totals: totals.categories_us[name] if totals.steps else None


def _peak(totals: RunTotals) -> float | None:
    return None if totals.memory_peak is None else totals.memory_peak.allocated_bytes


_LIST: tuple[Metric, ...] = (
    Metric(DEFAULT_METRIC, "mean step time", "us", "mean_us", _step("mean_us")),
    Metric("step_time_p50", "median step time", "us", "p50_us", _step("p50_us")),
    Metric("step_time_p90", "p90 step time", "us", "p90_us", _step("p90_us")),
    Metric("step_time_max", "longest step", "us", "max_us", _step("max_us")),
    Metric("data_wait", "data wait per step", "us", "data_wait_us", _category("dataloader")),
    *(Metric(p, f"{p} time per timed step", "us", f"{p}_us", None)
      for p in ("forward", "backward", "optimizer")),
    *(Metric(c, f"{c} time per step", "us", None, _category(c)) for c in CATEGORIES),
    Metric("peak_memory", "peak memory", "bytes", "peak_memory_bytes", _peak),
)  # fmt: skip
#: Every metric by name, in the order ``--metric`` lists them.
METRICS: dict[str, Metric] = {metric.name: metric for metric in _LIST}


@dataclass(frozen=True)
class Gate:
    """The gate's verdict.

    Attributes:
        metric: the metric's name.
        unit: ``us`` or ``bytes``.
        base: the baseline run's figure (None: it has none).
        new: the new run's figure (None: it has none).
        change_pct: new against base in percent (None: base is 0 or a figure is missing).
        threshold_pct: how many percent worse is allowed.
        tripped: new is more than ``threshold_pct`` percent worse than base.
        decided: both figures exist and can be compared; when False the gate says nothing
            about the change (``tripped`` is False) and ``reason`` says why.
        source: ``step_logs`` or ``traces``: where the figures come from.
        reason: the verdict in one line, naming the metric, both figures and the change.
    """

    metric: str
    unit: str
    base: float | None
    new: float | None
    change_pct: float | None
    threshold_pct: float
    tripped: bool
    decided: bool
    source: Source
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``"gate"`` in ``trainprof.diff/1`` and ``trainprof.summary/1``)."""
        fields = dataclasses.asdict(self)
        for key in ("base", "new", "change_pct"):
            if isinstance(fields[key], float):
                fields[key] = rounded(fields[key])
        return fields


def check_gate(
    base: RunFigures, new: RunFigures, *, threshold_pct: float, metric: str = DEFAULT_METRIC
) -> Gate:
    """Whether ``new``'s ``metric`` is more than ``threshold_pct`` percent worse than ``base``'s.

    Args:
        base: the baseline run's figures (:func:`profiler.analysis.diff.run_figures`).
        new: the run to judge.
        threshold_pct: the most it may be worse, in percent (0 or more).
        metric: a name in :data:`METRICS`.

    Returns:
        The verdict; see the module docstring for a base of 0 and a missing figure.

    Raises:
        ValueError: an unknown metric (the message lists the known ones), or a threshold that
            is negative or not finite.
    """
    spec = METRICS.get(metric)
    if spec is None:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if not math.isfinite(threshold_pct) or threshold_pct < 0:
        raise ValueError(f"the threshold must be a percentage of 0 or more, not {threshold_pct}")
    source, (a, b) = _figures(spec, base, new)
    label = _label(spec, source, base)
    problem = _problem(spec, source, base, new, a, b)
    if problem is not None or a is None or b is None:
        reason = f"{label}: {problem}: cannot compare"
        return Gate(spec.name, spec.unit, a, b, None, threshold_pct, False, False, source, reason)
    tripped = _worse_than(a, b, threshold_pct)
    change = change_pct(a, b)
    moved = f"{change:+.1f}%" if change is not None else "up from 0" if b else "no change"
    reason = (
        f"{label} {_value(a, spec)} -> {_value(b, spec)} ({moved}), "
        f"{'above' if tripped else 'within'} the +{threshold_pct:g}% allowed"
    )
    return Gate(spec.name, spec.unit, a, b, change, threshold_pct, tripped, True, source, reason)


def _figures(
    spec: Metric, base: RunFigures, new: RunFigures
) -> tuple[Source, tuple[float | None, float | None]]:
    """Where the figures come from, and the two figures (None where a run lacks one): the step
    logs when the metric has a step-log field and both runs have it (or it has no other)."""
    if spec.step_log is not None:
        field = spec.step_log
        a, b = (None if s.step_log is None else getattr(s.step_log, field) for s in (base, new))
        if spec.trace is None or (a is not None and b is not None):
            return STEP_LOGS, (a, b)
    assert spec.trace is not None  # every metric has a step-log field, a trace reader or both
    return TRACES, (spec.trace(base.totals), spec.trace(new.totals))


def _problem(
    spec: Metric, source: Source, base: RunFigures, new: RunFigures, a: float | None,
    b: float | None,
) -> str | None:  # fmt: skip
    """Why the two figures cannot be compared; None when they can."""
    lacks = {name: _lacks(spec, source, side) for name, side, value in
             (("base", base, a), ("new", new, b)) if value is None}  # fmt: skip
    if len(set(lacks.values())) == 1 and len(lacks) == 2:
        return f"neither run has any {lacks['base']}"
    if lacks:
        return " and ".join(f"the {name} run has no {lack}" for name, lack in lacks.items())
    if spec.unit != "bytes":
        return None
    kinds = _memory_kinds(source, base), _memory_kinds(source, new)
    if None not in kinds and kinds[0] != kinds[1]:
        return f"the base run's is {kinds[0]} and the new run's {kinds[1]}, not the same figure"
    return None


def _lacks(spec: Metric, source: Source, side: RunFigures) -> str:
    """What a run lacks for the metric's figure, in words."""
    if spec.unit == "bytes":
        return "memory figure (step logs' peak_memory_bytes or trace memory samples)"
    if source == STEP_LOGS and side.step_log is None:
        return "step logs"
    return f"{spec.label} in its {'step logs' if source == STEP_LOGS else 'traces'}"


def _memory_kinds(source: Source, figures: RunFigures) -> str | None:
    """What a run's memory figure measures, where known (two of different kinds don't compare)."""
    if source == STEP_LOGS:
        return {"cuda": "CUDA allocator bytes", "cpu": "process RSS"}.get(figures.device or "")
    peak = figures.totals.memory_peak
    return None if peak is None else f"{peak.source} samples on {peak.device.split(':')[0]}"


def _label(spec: Metric, source: Source, base: RunFigures) -> str:
    """The metric as the verdict names it, with where its figures come from."""
    where = "step logs" if source == STEP_LOGS else "traces"
    if spec.unit == "bytes":
        kind = _memory_kinds(source, base)
        where = f"{kind}, {where}" if kind else where
    return f"{spec.label} ({where})"


def _worse_than(base: float, new: float, threshold_pct: float) -> bool:
    """``new`` is more than ``threshold_pct`` percent above ``base``, compared exactly.

    With a base of 0, any new figure above 0 is. The threshold is taken as written in decimal
    (``10.1`` is 101/10, not the float nearest it), so a change exactly at it never trips.
    """
    allowed = Fraction(base) * Fraction(repr(threshold_pct)) / 100
    return Fraction(new) - Fraction(base) > allowed


def _value(value: float, spec: Metric) -> str:
    if spec.unit == "bytes":
        return size_text(int(value))
    return duration_text(value)
