"""Slow steps in the always-on step logs, by the rule ``profiler.on_anomaly`` opens windows on.

A step is slow when it takes more than ``factor`` times the running median of the recent step
times, and at least ``min_excess_us`` more than that median. As in the trigger
(``profiler/capture/anomaly.py``), the median is that of the last ``history`` steps outside
deep windows before the step (a profiled step is slower by the profiler's own cost), and no step
is judged before ``min_steps`` such steps have been seen (the first steps of a run are slow for
reasons of their own: compilation, allocator growth). The defaults are the trigger's, from
:mod:`profiler.events` (which both layers read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import numpy as np
import pandas as pd

from profiler.events import (
    SLOW_STEP_FACTOR,
    SLOW_STEP_HISTORY,
    SLOW_STEP_MIN_EXCESS_MS,
    SLOW_STEP_MIN_STEPS,
)

SLOW_STEP_COLUMNS: Final = ("rank", "step", "dur_us", "median_us", "ratio")


def slow_steps(
    records: Iterable[Mapping[str, Any]],
    *,
    factor: float = SLOW_STEP_FACTOR,
    history: int = SLOW_STEP_HISTORY,
    min_steps: int = SLOW_STEP_MIN_STEPS,
    min_excess_us: float = SLOW_STEP_MIN_EXCESS_MS * 1000,
) -> pd.DataFrame:
    """The steps slower than ``factor`` x the running median of the steps before them.

    Args:
        records: step-log records (``meta/steps.<rank>.jsonl`` lines), each with ``step``,
            ``dur_us``, optionally ``rank`` (0) and ``deep`` (False). Each rank is judged
            against its own steps.
        factor: how many times the median a slow step takes (> 1).
        history: how many earlier steps outside deep windows the median is taken over.
        min_steps: how many such steps must precede a step before it is judged.
        min_excess_us: how much longer than the median a slow step must also take.

    Returns:
        Columns :data:`SLOW_STEP_COLUMNS`, by rank then step: the slow step's time, the median
        it was compared with, and their ratio. Empty when no step is slow.
    """
    if factor <= 1 or history < 1 or min_steps < 1 or min_steps > history:
        raise ValueError(
            f"slow_steps needs factor > 1 and 1 <= min_steps <= history, got factor={factor}, "
            f"history={history}, min_steps={min_steps}"
        )
    frame = _step_frame(records)
    found = [
        _slow_of_rank(rows, factor, history, min_steps, min_excess_us)
        for _, rows in frame.groupby("rank", sort=True)
    ]
    found = [part for part in found if not part.empty]
    if not found:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in SLOW_STEP_COLUMNS})
    return pd.concat(found, ignore_index=True)


def _step_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [
        (int(r.get("rank", 0)), int(r["step"]), float(r["dur_us"]), bool(r.get("deep")))
        for r in records
        if r.get("dur_us") is not None
    ]
    frame = pd.DataFrame(rows, columns=["rank", "step", "dur_us", "deep"])
    return frame.sort_values(["rank", "step"], kind="stable", ignore_index=True)


def _slow_of_rank(
    rows: pd.DataFrame, factor: float, history: int, min_steps: int, min_excess_us: float
) -> pd.DataFrame:
    rows = rows.reset_index(drop=True)
    outside = rows["dur_us"][~rows["deep"]]
    # The median of the last `history` steps outside windows up to each such step, carried to
    # the steps after it: shifted by one row, each step sees the median of those before it.
    # The trigger's median: of an even count, the upper of the middle two (sorted[n // 2]).
    window = outside.rolling(history, min_periods=min_steps)
    through = window.quantile(0.5, interpolation="higher")
    median = through.reindex(rows.index).ffill().shift(1)
    limit = np.maximum(median * factor, median + min_excess_us)  # NaN before min_steps
    is_slow = (rows["dur_us"] > limit).to_numpy()
    # Plain arrays: a Series assigned to an empty frame would bring its whole index along.
    slow = rows[is_slow].assign(median_us=median.to_numpy()[is_slow])
    slow = slow.assign(ratio=(slow["dur_us"] / slow["median_us"]).to_numpy())
    return slow[list(SLOW_STEP_COLUMNS)]
