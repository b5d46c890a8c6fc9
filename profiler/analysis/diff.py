"""Run-to-run comparison: per-category, per-op and per-kernel time per step, base vs new.

Runs with several trace files (windows, ranks) are pooled: totals over every file divided by the
total number of steps, so a run captured with more windows does not look slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from profiler.analysis.guards import analysis_error
from profiler.analysis.kernels import top_kernels
from profiler.analysis.ops import top_ops
from profiler.analysis.steps import CATEGORIES, step_breakdown
from profiler.analysis.table import TraceSet

SCHEMA = "trainprof.diff/1"
TOP_N = 20


@dataclass(frozen=True)
class RunTotals:
    """One side of a diff: time per step by category, op and kernel."""

    steps: int
    step_us: float
    categories_us: dict[str, float]
    ops: pd.DataFrame  # name, calls, self_us, total_us: per step
    kernels: pd.DataFrame  # name, calls, total_us: per step


def run_totals(traces: TraceSet) -> RunTotals:
    """Pool every trace of a run into per-step figures.

    Raises:
        TraceFormatError: a trace's content is beyond what the analyses take; names the file.
    """
    steps, step_us = 0, 0.0
    categories = dict.fromkeys(CATEGORIES, 0.0)
    ops, kernels = [], []
    for trace in traces.traces:
        try:
            breakdown = step_breakdown(trace)
            ops.append(top_ops(trace, n=None)[["name", "calls", "self_us", "total_us"]])
            kernels.append(top_kernels(trace, n=1_000_000)[["name", "calls", "total_us"]])
        except Exception as exc:  # noqa: BLE001 - said as the file's error, never a crash
            raise analysis_error(trace.path, exc) from exc
        steps += len(breakdown)
        step_us += float(breakdown["dur_us"].sum())
        for category in CATEGORIES:
            categories[category] += float(breakdown[f"{category}_us"].sum())
    per = max(steps, 1)
    return RunTotals(
        steps=steps,
        step_us=step_us / per,
        categories_us={key: value / per for key, value in categories.items()},
        ops=_pooled(ops, ["calls", "self_us", "total_us"], per),
        kernels=_pooled(kernels, ["calls", "total_us"], per),
    )


def _pooled(frames: list[pd.DataFrame], columns: list[str], steps: int) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=["name", *columns])
    pooled = pd.concat(frames).astype({"name": str}).groupby("name", as_index=False)[columns].sum()
    pooled[columns] = pooled[columns] / steps
    return pooled


def diff_runs(base: TraceSet, new: TraceSet, *, top: int = TOP_N) -> dict[str, Any]:
    """The ``trainprof.diff/1`` dict: what changed per step from ``base`` to ``new``.

    Returns:
        ``step_us`` (base, new, delta, delta_pct), ``categories`` (one row per step-breakdown
        category), ``ops`` and ``kernels`` (the ``top`` names with the largest absolute change
        in self/total time per step; an op absent on one side counts 0 there).

    Raises:
        TraceFormatError: a trace's content is beyond what the analyses take; names the file.
    """
    a, b = run_totals(base), run_totals(new)
    return {
        "schema": SCHEMA,
        "steps": {"base": a.steps, "new": b.steps},
        "step_us": _change(a.step_us, b.step_us),
        "categories": [
            {"category": key, **_change(a.categories_us[key], b.categories_us[key])}
            for key in CATEGORIES
        ],
        "ops": _changes(a.ops, b.ops, "self_us", top),
        "kernels": _changes(a.kernels, b.kernels, "total_us", top),
    }


def _change(base: float, new: float) -> dict[str, float | None]:
    delta = new - base
    return {
        "base": round(base, 2),
        "new": round(new, 2),
        "delta": round(delta, 2),
        "delta_pct": round(100.0 * delta / base, 2) if base else None,
    }


def _changes(base: pd.DataFrame, new: pd.DataFrame, value: str, top: int) -> list[dict[str, Any]]:
    joined = base.merge(new, on="name", how="outer", suffixes=("_base", "_new")).fillna(0.0)
    joined["delta"] = joined[f"{value}_new"] - joined[f"{value}_base"]
    joined = joined.reindex(joined["delta"].abs().sort_values(ascending=False).index).head(top)
    return [
        {
            "name": row.name,
            "calls_base": round(float(row.calls_base), 2),
            "calls_new": round(float(row.calls_new), 2),
            **_change(float(getattr(row, f"{value}_base")), float(getattr(row, f"{value}_new"))),
        }
        for row in joined.itertuples(index=False)
    ]
