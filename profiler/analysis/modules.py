"""Module tree: forward and backward time per ``nn.Module``, from trainprof's module ranges.

trainprof writes one ``nn.Module: <qualified name> (<ClassName>)`` range around every submodule's
forward on the calling thread, and a ``... (<ClassName>).backward`` range for its backward on a
lane of its own (README, "Module backward ranges"). Traces without them (plain torch.profiler's)
give empty tables.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from profiler.analysis.ops import nest_parents, self_time_us
from profiler.analysis.table import TraceTable
from profiler.events import PROFILER_STEP_PREFIX, parse_module_range_name

# The root names trainprof gives (capture/module_hooks.py, root_names): "model" for one root,
# whose children are then named plainly ("features.0"); "model0", "model1"... for a list of roots,
# whose children carry the root's name as prefix ("model0.features").
ROOT_NAME = "model"
_NUMBERED_ROOT = re.compile(rf"^{ROOT_NAME}\d+$")
# Forward ranges are also projected onto GPU streams (gpu_user_annotation): only the host copy
# counts, or GPU traces would count every forward twice.
RANGE_KIND = "user_annotation"
STEP_KINDS = ("user_annotation", "cpu_op")

RANGE_COLUMNS = ["path", "class_name", "backward", "pid", "tid", "ts_us", "dur_us", "end_us"]
MODULE_COLUMNS = [
    "path",
    "class_name",
    "parent",
    "depth",
    "calls",
    "forward_us",
    "forward_self_us",
    "backward_us",
    "backward_self_us",
    "forward_us_per_step",
    "backward_us_per_step",
]


def module_ranges(trace: TraceTable) -> pd.DataFrame:
    """Every module range in the trace, forward and backward, with its self time.

    Self time is the range's duration minus its direct child module ranges on the same lane
    (:func:`profiler.analysis.ops.self_time_us`): a parent's own code and the functional ops it
    calls between its children.

    Args:
        trace: a loaded trace.

    Returns:
        Indexed like ``trace.events``: ``path``, ``class_name``, ``backward`` (bool), ``pid``,
        ``tid``, ``ts_us``, ``dur_us``, ``end_us``, ``self_us``.
    """
    events = trace.events
    ranges = events[events["kind"] == RANGE_KIND]
    parsed = _parse_names(ranges["name"])
    found = parsed["path"].notna().to_numpy()
    ranges = ranges[found]
    frame = parsed[found].set_axis(ranges.index)
    for column in RANGE_COLUMNS[3:]:
        frame[column] = ranges[column]
    frame["backward"] = frame["backward"].astype(bool)
    frame["self_us"] = self_time_us(ranges, nest_parents(ranges))
    return frame


def module_table(trace: TraceTable) -> pd.DataFrame:
    """Forward and backward time per module path, in the order the forward first ran them.

    ``calls`` counts forward ranges; ``forward_us``/``backward_us`` sum the ranges' durations and
    ``*_self_us`` their self time (:func:`module_ranges`). ``parent`` and ``depth`` come from the
    qualified name as trainprof writes it (:data:`ROOT_NAME`). ``*_per_step`` divide the totals by
    the number of ``ProfilerStep#N`` ranges in the trace (NaN when it has none).

    Args:
        trace: a loaded trace.

    Returns:
        One row per module path, columns :data:`MODULE_COLUMNS`; empty (same columns) when the
        trace has no module ranges.
    """
    ranges = module_ranges(trace)
    if ranges.empty:
        return _empty_table()
    table = _sums(ranges)
    roots, single_root = _roots(trace, set(table.index))
    lineage = [_lineage(path, roots, single_root) for path in table.index]
    table["parent"] = [parent for parent, _ in lineage]
    table["depth"] = np.array([depth for _, depth in lineage], dtype=np.int64)
    steps = _step_count(trace)
    for phase in ("forward", "backward"):
        table[f"{phase}_us_per_step"] = table[f"{phase}_us"] / steps if steps else np.nan
    return table.reset_index()[MODULE_COLUMNS]


def _empty_table() -> pd.DataFrame:
    text, counts = ("path", "class_name", "parent"), ("depth", "calls")
    return pd.DataFrame(
        {
            column: pd.Series(
                dtype=str if column in text else np.int64 if column in counts else float
            )
            for column in MODULE_COLUMNS
        }
    )


def _sums(ranges: pd.DataFrame) -> pd.DataFrame:
    """Per path: class, forward calls, and the summed times of both phases, in first-run order."""
    phases = []
    for phase, rows in (
        ("forward", ranges[~ranges["backward"]]),
        ("backward", ranges[ranges["backward"]]),
    ):
        named = {
            f"{phase}_class": ("class_name", "first"),
            f"{phase}_calls": ("dur_us", "size"),
            f"{phase}_us": ("dur_us", "sum"),
            f"{phase}_self_us": ("self_us", "sum"),
            f"{phase}_first_us": ("ts_us", "min"),
        }
        phases.append(rows.groupby("path", sort=False).agg(**named))
    table = phases[0].join(phases[1], how="outer")
    table["class_name"] = table["forward_class"].fillna(table["backward_class"])
    table["calls"] = table["forward_calls"].fillna(0).astype(np.int64)
    for column in ("forward_us", "forward_self_us", "backward_us", "backward_self_us"):
        table[column] = table[column].fillna(0.0)
    table = table.sort_values(["forward_first_us", "backward_first_us"], na_position="last")
    return table.rename_axis("path")


def _parse_names(names: pd.Series) -> pd.DataFrame:
    """``path``, ``class_name``, ``backward`` per row (None where not a module range), parsed
    once per distinct name."""
    names = names.astype("category").cat.remove_unused_categories()
    parsed = [parse_module_range_name(str(name)) for name in names.cat.categories]
    table = pd.DataFrame(
        [p if p is not None else (None, None, None) for p in parsed],
        columns=["path", "class_name", "backward"],
    )
    return table.iloc[names.cat.codes.to_numpy()].reset_index(drop=True)


def _roots(trace: TraceTable, paths: set[str]) -> tuple[frozenset[str], str | None]:
    """The root paths, and the single root's name when children are named without it."""
    meta = trace.trainprof or {}
    config = meta.get("config")
    models = config.get("models") if isinstance(config, dict) else None
    single = len(models) == 1 if isinstance(models, list) else ROOT_NAME in paths
    if single:
        return frozenset({ROOT_NAME}), ROOT_NAME
    return frozenset(p for p in paths if _NUMBERED_ROOT.match(p)), None


def _lineage(path: str, roots: frozenset[str], single_root: str | None) -> tuple[str, int]:
    """``(parent path, depth)``: roots have parent "" and depth 0."""
    if path in roots:
        return "", 0
    parent = path.rsplit(".", 1)[0] if "." in path else single_root or ""
    return parent, path.count(".") + (1 if single_root else 0)


def _step_count(trace: TraceTable) -> int:
    """How many distinct ``ProfilerStep#N`` ranges the trace's threads hold."""
    events = trace.events
    steps = events.loc[events["kind"].isin(STEP_KINDS), "name"].astype(str)
    return int(steps[steps.str.startswith(PROFILER_STEP_PREFIX)].nunique())
