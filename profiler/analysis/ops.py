"""CPU operators: how host events nest on each thread, their self time, and the top-ops table.

The definitions are torch.profiler's own, so our numbers agree with ``prof.key_averages()`` on the
same events: an event's parent is the innermost event on its thread that encloses it
(``EventList._populate_cpu_children`` in torch/autograd/profiler_util.py), and an op's self time is
its duration minus its direct children's (``FunctionEvent.self_cpu_time_total``, same file).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import pandas as pd

from profiler.analysis.table import TraceTable
from profiler.events import PROFILER_STEP_PREFIX

# Host-side kinds (table.KIND_BY_CATEGORY's vocabulary) that sit on a thread's call stack: an op's
# children are any of these inside it on the same thread.
HOST_KINDS = ("cpu_op", "user_annotation", "python_function", "runtime", "driver")
OP_KIND = "cpu_op"

TopBy = Literal["self_us", "total_us", "calls", "mean_us"]
OP_COLUMNS = ["name", "input_dims", "pid", "tid", "ts_us", "dur_us", "end_us", "self_us", "parent"]
TOP_COLUMNS = ["name", "calls", "self_us", "total_us", "mean_us"]


def nest_parents(events: pd.DataFrame) -> np.ndarray:
    """The direct parent of each event among ``events`` on the same ``(pid, tid)``.

    In ``(start, -end)`` order per thread, an event's parent is the nearest earlier event that
    ends no sooner than it does: torch's stack rule (``_populate_cpu_children``), where an event
    that only partly overlaps another is not its child. Found by pointer jumping: a candidate that
    ends too early hands over its own candidate, since everything between them ended earlier
    still; each round resolves or halves the gap, so rounds grow with log(events per thread).

    Args:
        events: rows with ``pid``, ``tid``, ``ts_us``, ``end_us``.

    Returns:
        For each row, the position (0-based, in ``events``' order) of its parent, or -1.
    """
    if events.empty:
        return np.empty(0, dtype=np.int64)
    pid, tid = events["pid"].to_numpy(), events["tid"].to_numpy()
    start = events["ts_us"].to_numpy(np.float64)
    end = events["end_us"].to_numpy(np.float64)
    order = np.lexsort((-end, start, tid, pid))
    pid, tid = pid[order], tid[order]
    same_thread = np.r_[False, (pid[1:] == pid[:-1]) & (tid[1:] == tid[:-1])]
    parent_sorted = _enclosing(start[order], end[order], same_thread)
    parents = np.full(len(events), -1)
    has_parent = parent_sorted >= 0
    parents[order[has_parent]] = order[parent_sorted[has_parent]]
    return parents


def _enclosing(start: np.ndarray, end: np.ndarray, same_thread: np.ndarray) -> np.ndarray:
    """Pointer jumping over events sorted by (thread, start, -end); see :func:`nest_parents`."""
    candidate = np.where(same_thread, np.arange(len(start)) - 1, -1)
    parents = np.full(len(start), -1)
    active = np.flatnonzero(candidate >= 0)
    while active.size:
        held = candidate[active]
        # torch's rule: the parent ends no sooner, and after the child starts (so an instant at
        # a range's very end is not inside it).
        found = (end[held] > end[active]) | (
            (end[held] == end[active]) & (start[active] < end[active])
        )
        parents[active[found]] = held[found]
        active = active[~found]
        candidate[active] = candidate[held[~found]]
        active = active[candidate[active] >= 0]
    return parents


def self_time_us(events: pd.DataFrame, parents: np.ndarray) -> np.ndarray:
    """Each event's duration minus the union of its direct children's durations.

    The union, not the sum, so that two children overlapping by a rounding error (Kineto's
    timestamps are whole nanoseconds) are not counted twice; where children are disjoint, as on
    a well-formed thread, the two agree exactly.

    Args:
        events: rows with ``ts_us``, ``dur_us``, ``end_us``.
        parents: :func:`nest_parents` of ``events``.

    Returns:
        Self time per row, in microseconds, never negative.
    """
    dur = events["dur_us"].to_numpy(np.float64)
    start = events["ts_us"].to_numpy(np.float64)
    end = events["end_us"].to_numpy(np.float64)
    children = np.flatnonzero(parents >= 0)
    if children.size == 0:
        return dur.copy()
    children = children[np.lexsort((start[children], parents[children]))]
    parent = parents[children]
    reach = pd.Series(end[children]).groupby(parent).cummax().to_numpy()
    # How far earlier siblings already reach: the part of this child before that is covered.
    before = np.r_[-np.inf, reach[:-1]]
    before[np.r_[True, parent[1:] != parent[:-1]]] = -np.inf
    overlap = np.clip(before - start[children], 0.0, dur[children])
    covered = np.bincount(parent, weights=dur[children] - overlap, minlength=len(dur))
    return np.maximum(dur - covered, 0.0)


def fold_repeats(events: pd.DataFrame, parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold an event into its parent where the parent has the same name and no other child.

    torch's ``EventList._remove_dup_nodes`` (torch/autograd/profiler_util.py) and the TensorBoard
    plugin's ``remove_dup_nodes`` (torch_tb_profiler/profiler/op_tree.py) both do this: an
    overload calling another of the same name (``aten::div`` inside ``aten::div``) is one call,
    and the inner one's children become the outer one's.

    Args:
        events: rows with ``name``.
        parents: :func:`nest_parents` of ``events``.

    Returns:
        The parents with folded events removed (their children re-parented to the nearest kept
        ancestor; folded events themselves get -1), and a mask of the events kept.
    """
    codes = _codes(events["name"])
    nested = np.flatnonzero(parents >= 0)
    child_count = np.bincount(parents[nested], minlength=len(parents))
    up = parents[nested]
    folded = np.zeros(len(parents), dtype=bool)
    folded[nested] = (codes[nested] == codes[up]) & (child_count[up] == 1)
    result = parents.copy()
    # Chains of folds (a in a in a) climb by pointer doubling; folded events always have a parent.
    while (hop := np.flatnonzero((result >= 0) & folded[np.maximum(result, 0)])).size:
        result[hop] = result[result[hop]]
    result[folded] = -1
    return result, ~folded


def op_table(trace: TraceTable) -> pd.DataFrame:
    """One row per CPU op (kind ``cpu_op``), with its self time.

    Children are the host events (:data:`HOST_KINDS`: ops, user annotations, Python functions,
    CUDA runtime and driver calls) nested directly inside it on its thread (:func:`nest_parents`),
    after :func:`fold_repeats`. ``ProfilerStep#N`` is a step marker, not an op (2021 traces write
    it as ``Operator``): it is nested over but gets no row, as in the TensorBoard plugin's
    operator view (torch_tb_profiler/profiler/node.py, ``is_operator_node``).

    Args:
        trace: a loaded trace.

    Returns:
        Indexed like ``trace.events``: ``name``, ``input_dims``, ``pid``, ``tid``, ``ts_us``,
        ``dur_us``, ``end_us``, ``self_us``, ``parent`` (the ``trace.events`` index of the
        enclosing host event, -1 at top level).
    """
    events = trace.events
    host = events[events["kind"].isin(HOST_KINDS)]
    parents, kept = fold_repeats(host, nest_parents(host))
    labels = host.index.to_numpy()
    frame = host[OP_COLUMNS[:-2]].assign(
        self_us=self_time_us(host, parents),
        parent=np.where(parents >= 0, labels[np.maximum(parents, 0)], -1),
    )
    is_op = (host["kind"] == OP_KIND).to_numpy() & ~_starts_with(host["name"], PROFILER_STEP_PREFIX)
    return frame[is_op & kept]


def top_ops(
    trace: TraceTable,
    n: int | None = 20,
    by: TopBy = "self_us",
    group_by_shape: bool = False,
) -> pd.DataFrame:
    """CPU ops aggregated by name (and input shapes), as ``key_averages()`` aggregates them.

    ``calls`` counts events, ``self_us`` sums self time (:func:`op_table`), ``total_us`` sums
    durations (a lone same-named child is folded into its parent by :func:`fold_repeats`; any
    other op nested in one of its own name counts in both, as in torch), and ``mean_us`` is
    ``total_us / calls``.

    Args:
        trace: a loaded trace.
        n: how many rows to keep (None: all).
        by: the column to sort by, largest first (ties by name).
        group_by_shape: one row per ``(name, input_dims)`` rather than per name; ``input_dims``
            is Kineto's ``Input Dims`` as compact JSON ("" where shapes were not recorded).

    Returns:
        ``name``, [``input_dims``,] ``calls``, ``self_us``, ``total_us``, ``mean_us``.

    Raises:
        ValueError: ``by`` is not one of the columns above.
    """
    if by not in get_args(TopBy):
        raise ValueError(f"by must be one of {get_args(TopBy)}, not {by!r}")
    keys = ["name", "input_dims"] if group_by_shape else ["name"]
    table = op_table(trace)
    agg = (
        table.groupby(keys, observed=True, sort=False)
        .agg(calls=("dur_us", "size"), self_us=("self_us", "sum"), total_us=("dur_us", "sum"))
        .reset_index()
    )
    for key in keys:
        agg[key] = agg[key].astype(str)
    agg["calls"] = agg["calls"].astype(np.int64)
    agg["mean_us"] = agg["total_us"] / agg["calls"]
    agg = agg.sort_values([by, *keys], ascending=[False] + [True] * len(keys), ignore_index=True)
    columns = keys + TOP_COLUMNS[1:]
    return agg[columns] if n is None else agg[columns].head(n)


def _codes(names: pd.Series) -> np.ndarray:
    """Integer codes of a (categorical) name column: equal names, equal codes."""
    if isinstance(names.dtype, pd.CategoricalDtype):
        return names.cat.codes.to_numpy()
    return pd.factorize(names)[0]


def _starts_with(names: pd.Series, prefix: str) -> np.ndarray:
    """``str.startswith`` on a categorical column, computed once per category."""
    if not isinstance(names.dtype, pd.CategoricalDtype):
        return names.astype(str).str.startswith(prefix).to_numpy(bool)
    per_category = np.append(names.cat.categories.astype(str).str.startswith(prefix), False)
    return per_category[names.cat.codes.to_numpy()]
