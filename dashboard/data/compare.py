"""Several runs side by side, for the Runs page: each run's step times and its step breakdown.

A run with trace files is compared on what they captured: the steps of its deep windows and
their time per breakdown category (the Overview's, :func:`dashboard.data.overview.run_summary`,
cached per file). A run without traces (``schedule=None``, light metrics only) is compared on
its step logs: every finished step, and a breakdown of two parts, the wait for data
(``dataloader``) and the rest of the step (``other``), since a step log cannot tell kernels
from CPU time. Step times come from the step logs whenever the run has them (every step, not a
sample); a run whose traces have no step logs beside them (torch.profiler's own) uses its traces'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dashboard.data.overview import run_summary
from dashboard.data.run_table import step_durations
from dashboard.data.runs import RunNotFound, RunRefused
from profiler.analysis.diff import finished_steps, has_figure
from profiler.analysis.steps import CATEGORIES

__all__ = ["RunComparison", "compare_runs"]

Source = Literal["trace", "step log", "none"]


@dataclass(frozen=True)
class RunComparison:
    """One run as the comparison figures draw it.

    Attributes:
        name: the run's name.
        step_us: its step durations (µs): every logged step, else its traces' steps.
        step_source: where ``step_us`` came from (``none``: no steps anywhere).
        breakdown_us: the mean time per step of each breakdown category (every category of
            :data:`profiler.analysis.steps.CATEGORIES`, 0 where none); empty without steps.
        breakdown_source: ``trace`` (the categories measured in its deep windows), ``step
            log`` (data wait and the rest only; also a run none of whose traces could be read)
            or ``none``.
    """

    name: str
    step_us: tuple[float, ...]
    step_source: Source
    breakdown_us: dict[str, float]
    breakdown_source: Source


def compare_runs(root: str | Path, names: Iterable[str]) -> list[RunComparison]:
    """Each named run under ``root``, in the order given; names that are no run there (or lead
    outside the root) are left out."""
    names = list(names)
    logged = step_durations(root, names)
    compared = []
    for name in names:
        if name not in logged:
            continue
        try:
            data = run_summary(root, name)
        except (RunNotFound, RunRefused):  # gone since it was listed
            continue
        compared.append(_comparison(name, logged[name], data.breakdown, data.steps))
    return compared


def _comparison(
    name: str,
    logged_us: Sequence[float],
    trace_rows: Sequence[Mapping[str, Any]],
    step_records: Sequence[Mapping[str, Any]],
) -> RunComparison:
    traced_us = tuple(float(row["dur_us"]) for row in trace_rows)
    step_source: Source = "step log" if logged_us else "trace" if traced_us else "none"
    steps = tuple(logged_us) if logged_us else traced_us
    source: Source = "trace"
    if trace_rows:
        breakdown = _mean_per_step(trace_rows)
    else:
        breakdown, source = _step_log_breakdown(finished_steps(step_records))
    return RunComparison(
        name=name,
        step_us=steps,
        step_source=step_source,
        breakdown_us=breakdown,
        breakdown_source=source,
    )


def _mean_per_step(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each category's mean per step over the breakdown rows (every trace's steps pooled)."""
    return {c: sum(float(r.get(f"{c}_us", 0.0)) for r in rows) / len(rows) for c in CATEGORIES}


def _step_log_breakdown(
    records: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, float], Source]:
    """The data wait and the rest of the step, each a mean per logged step."""
    if not records:
        return {}, "none"
    step_us = sum(float(r["dur_us"]) for r in records) / len(records)
    waits = [float(r["data_wait_us"]) if has_figure(r, "data_wait_us") else 0.0 for r in records]
    wait_us = min(sum(waits) / len(records), step_us)
    breakdown = dict.fromkeys(CATEGORIES, 0.0)
    breakdown.update(dataloader=wait_us, other=step_us - wait_us)
    return breakdown, "step log"
