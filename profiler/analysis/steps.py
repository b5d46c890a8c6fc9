"""Step spans and the step-time breakdown, as PyTorch's TensorBoard profiler plugin defines them.

Definitions follow torch-tb-profiler 0.4.3 (``torch_tb_profiler/profiler/event_parser.py``,
``StepParser``, and ``overall_parser.py``, ``OverallParser``), with two deliberate differences
where the plugin misreads current traces (docs/architecture.md, "Peers"; ours is right):

* Runtime: the plugin knows only the 2021 category ``Runtime``. Current Kineto writes
  ``cuda_runtime`` and ``cuda_driver`` (ROCm: ``hip*`` names under ``cuda_runtime``), so the
  plugin's Runtime is 0 on them and it cannot tie GPU work to the step that launched it. We read
  every runtime/driver call (the table's ``runtime`` and ``driver`` kinds) both for the Runtime
  share and for stretching steps over their GPU work.
* DataLoader: torch 2.x records ``enumerate(DataLoader)#...__next__`` as ``user_annotation``,
  which the plugin drops; we count it as DataLoader, as the plugin does for ``cpu_op``.

A third difference, in the step list only: a ``ProfilerStep#N`` copied onto the GPU timeline
(``gpu_user_annotation``, as ROCm traces have) is not a step here; the plugin counts it as one
more step and averages over it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from profiler.analysis.devices import COMMUNICATION, DEVICE_KINDS, KERNEL, LAUNCH_KINDS
from profiler.analysis.memo import per_trace
from profiler.analysis.table import MISSING_INT, TraceTable
from profiler.events import DATALOADER_PREFIX, DATALOADER_SUFFIX, PROFILER_STEP_PREFIX

#: The breakdown's categories, in the plugin's priority order (``ProfileRole``): where two
#: overlap, the earlier one takes the time; "other" is whatever no category claims.
CATEGORIES: tuple[str, ...] = (
    "kernel",
    "memcpy",
    "memset",
    "communication",
    "runtime",
    "dataloader",
    "cpu_exec",
    "other",
)
_CODE = {name: code for code, name in enumerate(CATEGORIES)}
_NO_ROLE = -1

#: Collective ranges the plugin counts as communication (``NcclOpNameSet``/``GlooOpNameSet`` in
#: torch_tb_profiler/profiler/trace.py; exact names, so ``nccl:all_to_all`` is not one).
COLLECTIVE_NAMES: frozenset[str] = frozenset(
    f"{lib}:{op}"
    for lib in ("nccl", "gloo")
    for op in ("broadcast", "reduce", "all_reduce", "all_gather", "reduce_scatter")
)
#: DataPipe iteration ranges, DataLoader time too (event_parser.py, ``_parse_step``).
DATAPIPE_PREFIX = "enumerate(DataPipe)#"
#: Host calls that launch GPU work: ours counts driver calls too (Triton launches with cuLaunch*),
#: and every device's runtime (the device model's: ``mtia_runtime``, ``xpu_runtime``...).
RUNTIME_KINDS: tuple[str, ...] = LAUNCH_KINDS
#: Host-side ranges that can be steps, DataLoader waits or collectives.
HOST_RANGE_KINDS: tuple[str, ...] = ("cpu_op", "user_annotation")
#: The plugin reads a 2021 ``Python`` category as CPU work; the table folds it into
#: ``python_function`` (which the plugin ignores), so this one is told apart by category.
LEGACY_PYTHON_CATEGORY = "python"
#: The plugin drops the last step when it launched fewer than this share of the GPU events its
#: predecessor did: the profiler likely stopped before its kernels were recorded
#: (event_parser.py, ``_update_steps_duration``).
TAIL_STEP_MIN_SHARE = 0.8
#: A trace without ProfilerStep ranges is one step, numbered 0 as the plugin numbers it.
WHOLE_TRACE_STEP = 0
WHOLE_TRACE_NAME = "(whole trace)"

_STEP_PATTERN = r"^" + PROFILER_STEP_PREFIX.replace("#", r"\#") + r"(\d+)$"
_STEP_COLUMNS = ["step", "name", "ts_us", "end_us", "dur_us", "host_ts_us", "host_end_us"]
_MAX_STEP_NUMBER = 2**53  # step numbers are exact in the float64 they are parsed into


@per_trace
def step_table(trace: TraceTable) -> pd.DataFrame:
    """One row per step, spanning the step's host range stretched over the GPU work it launched.

    Follows the plugin's ``StepParser`` (event_parser.py): steps are the host-side
    ``ProfilerStep#N`` ranges in time order (a trace with none is one step over all host
    operators). Each step then starts where the previous one ended, if that is later, and ends
    at the last GPU event (kernel, memcpy, memset) launched by a runtime call lying wholly
    inside its host range, if that is later; the first step starts no earlier than the end of
    the last GPU event launched outside every step that ends before the step's own first GPU
    event. When any step launched GPU work, trailing steps that launched none are dropped, and so
    is the last one when it launched fewer than ``TAIL_STEP_MIN_SHARE`` of its predecessor's
    GPU events (a capture cut off before its kernels). Steps with the same number (a restarted
    loop) stay separate rows.

    Args:
        trace: a loaded trace.

    Returns:
        Columns ``step`` (N of ``ProfilerStep#N``), ``name``, ``ts_us``, ``end_us``,
        ``dur_us`` (the stretched span) and ``host_ts_us``, ``host_end_us`` (the host range).
        Empty when the trace has no events.
    """
    events = trace.events
    host = _host_steps(events)
    if host.empty:
        host = _whole_trace(events)
    if host.empty:
        return pd.DataFrame({c: pd.Series(dtype=_column_dtype(c)) for c in _STEP_COLUMNS})
    launched = _launched_work(events, host)
    ts, end = _stretch(host, launched, _first_step_floor(host, launched))
    steps = host.assign(ts_us=ts, end_us=end, dur_us=end - ts)
    return steps[_STEP_COLUMNS].head(_kept_steps(launched, len(steps))).reset_index(drop=True)


@per_trace
def step_breakdown(trace: TraceTable) -> pd.DataFrame:
    """Where each step's time goes, in the plugin's categories (``OverallParser``).

    Every event with a role marks its time span: kernels (communication when launched by a
    collective op), memcpy, memset, runtime calls, DataLoader waits, collective ranges and
    device-side collectives, and host operators (cpu_exec). Kernels, copies and runtime calls
    are every device's, as the device model kinds them (:mod:`profiler.analysis.devices`).
    Each instant of a step goes to the first category in ``CATEGORIES`` order active then;
    "other" is the rest of the step. So per step the categories add up to its duration.

    Args:
        trace: a loaded trace.

    Returns:
        One row per :func:`step_table` step: ``step``, ``name``, ``dur_us``, then
        ``<category>_us`` and ``<category>_pct`` (percent of the step) for each category.
    """
    steps = step_table(trace)
    costs = _step_costs(trace.events, steps)
    frame = steps[["step", "name", "dur_us"]].copy()
    dur = steps["dur_us"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(dur[:, None] > 0, 100.0 * costs / dur[:, None], 0.0)
    for code, category in enumerate(CATEGORIES):
        frame[f"{category}_us"] = costs[:, code]
    for code, category in enumerate(CATEGORIES):
        frame[f"{category}_pct"] = pct[:, code]
    return frame


@per_trace
def average_breakdown_pct(trace: TraceTable) -> dict[str, float]:
    """The breakdown the plugin's Overview shows: each category's share of all steps' time.

    The plugin averages each category's time and the step time over steps and divides one by
    the other (run_generator.py, ``_generate_overview``), so longer steps weigh more.

    Args:
        trace: a loaded trace.

    Returns:
        Category to percent (all 0.0 when the trace has no step time).
    """
    breakdown = step_breakdown(trace)
    total = float(breakdown["dur_us"].sum())
    if total <= 0:
        return dict.fromkeys(CATEGORIES, 0.0)
    return {c: 100.0 * float(breakdown[f"{c}_us"].sum()) / total for c in CATEGORIES}


def event_categories(trace: TraceTable) -> pd.Series:
    """The breakdown category each event claims time for, before priorities settle overlaps.

    The plugin's ``_parse_step`` rules, in its order, with our two differences (module doc).
    User annotations other than DataLoader waits and collectives (module ranges, custom
    ``record_function`` ranges), steps, Python functions and GPU annotations other than
    collectives claim nothing: their time goes to what runs inside them.

    Args:
        trace: a loaded trace.

    Returns:
        A categorical Series aligned with ``trace.events``: one of ``CATEGORIES`` other than
        "other", or NaN for events that claim no time.
    """
    codes = _event_roles(trace.events)
    return pd.Series(
        pd.Categorical.from_codes(codes, categories=list(CATEGORIES)), index=trace.events.index
    )


def _event_roles(events: pd.DataFrame) -> np.ndarray:
    """:func:`event_categories` as indices into ``CATEGORIES``, -1 for none."""
    kind = events["kind"]
    names = events["name"]
    host = kind.isin(HOST_RANGE_KINDS).to_numpy()
    cpu = (kind == "cpu_op").to_numpy() | _legacy_python(events)
    collective = _names_where(names, lambda n: n.isin(COLLECTIVE_NAMES))
    is_kernel = (kind == KERNEL).to_numpy()
    conditions = [
        (kind == COMMUNICATION).to_numpy()
        | is_kernel & _launched_by_collective(events, collective),
        is_kernel,
        (kind == "memcpy").to_numpy(),
        (kind == "memset").to_numpy(),
        kind.isin(RUNTIME_KINDS).to_numpy(),
        host & _names_where(names, _is_dataloader),
        host & _names_where(names, lambda n: n.str.startswith(PROFILER_STEP_PREFIX)),
        (host | cpu | (kind == "gpu_user_annotation").to_numpy()) & collective,
        cpu,
    ]
    choices = [_CODE[c] for c in ("communication", "kernel", "memcpy", "memset", "runtime")]
    choices += [_CODE["dataloader"], _NO_ROLE, _CODE["communication"], _CODE["cpu_exec"]]
    return np.select(conditions, choices, default=_NO_ROLE).astype(np.int8)


def _host_steps(events: pd.DataFrame) -> pd.DataFrame:
    """Host-side ``ProfilerStep#N`` ranges in time order (not their GPU-timeline copies)."""
    names = events["name"].astype("category")
    number = names.cat.categories.astype(str).str.extract(_STEP_PATTERN, expand=False)
    step_of_name = np.append(pd.to_numeric(number).to_numpy(dtype=np.float64), np.nan)
    step = step_of_name[names.cat.codes.to_numpy()]
    # A step number that is no int64 (ProfilerStep#99999999999999999999) names no step.
    is_step = (np.abs(step) < _MAX_STEP_NUMBER) & events["kind"].isin(HOST_RANGE_KINDS).to_numpy()
    rows = events[is_step]
    return pd.DataFrame(
        {
            "step": step[is_step].astype(np.int64),
            "name": rows["name"].astype(str).to_numpy(),
            "host_ts_us": rows["ts_us"].to_numpy(),
            "host_end_us": rows["end_us"].to_numpy(),
        }
    )


def _whole_trace(events: pd.DataFrame) -> pd.DataFrame:
    """The plugin's one step for a trace without steps: the span of its host operators."""
    cpu = events[(events["kind"] == "cpu_op").to_numpy() | _legacy_python(events)]
    span = cpu if not cpu.empty else events  # no host operators: the whole trace
    if span.empty:
        return pd.DataFrame(columns=["step", "name", "host_ts_us", "host_end_us"])
    return pd.DataFrame(
        {
            "step": [WHOLE_TRACE_STEP],
            "name": [WHOLE_TRACE_NAME],
            "host_ts_us": [float(span["ts_us"].min())],
            "host_end_us": [float(span["end_us"].max())],
        }
    )


def _launched_work(events: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """GPU events with the step whose host range wholly holds the runtime call that launched
    them (``step`` -1: launched outside every step, or by no runtime call we can see)."""
    runtime = events[events["kind"].isin(RUNTIME_KINDS) & (events["correlation"] != MISSING_INT)]
    # Host steps come from one training loop, so they do not overlap: a call lies in the last
    # step starting before it, if in any (the plugin's merge walk over both lists, in effect).
    starts = steps["host_ts_us"].to_numpy()
    index = np.searchsorted(starts, runtime["ts_us"].to_numpy(), side="right") - 1
    ends = steps["host_end_us"].to_numpy()[np.maximum(index, 0)]
    inside = (index >= 0) & (runtime["end_us"].to_numpy() <= ends)
    # The plugin keeps the last runtime call seen per correlation id.
    step_of = pd.Series(np.where(inside, index, -1), index=runtime["correlation"].to_numpy())
    step_of = step_of[~step_of.index.duplicated(keep="last")]
    device = events[events["kind"].isin(DEVICE_KINDS)]
    step = device["correlation"].map(step_of).fillna(-1).astype(np.int64)
    columns = {"ts_us": device["ts_us"].to_numpy(), "end_us": device["end_us"].to_numpy()}
    return pd.DataFrame({"step": step.to_numpy(), **columns})


def _first_step_floor(steps: pd.DataFrame, launched: pd.DataFrame) -> float:
    """Where the first step may start: after GPU work launched before it that ends before the
    first step's own GPU work (``_find_device_steps``'s ``prev_step_end_time``)."""
    floor = float(steps["host_ts_us"].iloc[0])
    first = launched.loc[launched["step"] == 0, "ts_us"]
    if first.empty:
        return floor
    stray = launched.loc[(launched["step"] < 0) & (launched["end_us"] < first.min()), "end_us"]
    return max(floor, float(stray.max())) if not stray.empty else floor


def _stretch(
    steps: pd.DataFrame, launched: pd.DataFrame, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Stretched step spans (``_update_steps_duration``); unchanged when no step launched GPU
    work. Each step ends at the latest of its host end, its GPU work's end and the previous
    step's end, so the ends are a running maximum; each starts at the previous end if later."""
    host_ts = steps["host_ts_us"].to_numpy(dtype=np.float64)
    host_end = steps["host_end_us"].to_numpy(dtype=np.float64)
    matched = launched[launched["step"] >= 0]
    if matched.empty:
        return host_ts, host_end
    device_end = matched.groupby("step")["end_us"].max().reindex(range(len(steps)))
    latest = np.fmax(host_end, device_end.to_numpy())
    end = np.maximum.accumulate(np.maximum(latest, floor))
    ts = np.maximum(host_ts, np.concatenate(([floor], end[:-1])))
    return ts, end


def _kept_steps(launched: pd.DataFrame, count: int) -> int:
    """How many leading steps the plugin keeps (its tail-step rule, see :func:`step_table`)."""
    per_step = np.bincount(launched.loc[launched["step"] >= 0, "step"], minlength=count)
    busy = np.flatnonzero(per_step)
    if count < 2 or busy.size == 0:
        return count
    last = int(busy[-1])
    if last > 0 and per_step[last - 1] * TAIL_STEP_MIN_SHARE > per_step[last]:
        return last
    return last + 1


def _step_costs(events: pd.DataFrame, steps: pd.DataFrame) -> np.ndarray:
    """Microseconds of each category in each step: shape (steps, categories).

    The timeline is cut at every event and step boundary; each piece goes to the
    highest-priority category active over it, and per-category running sums of the pieces give
    any step's share by two lookups (steps may overlap; none of this loops over events).
    """
    roles = _event_roles(events)
    has_role = roles != _NO_ROLE
    starts = events["ts_us"].to_numpy()[has_role]
    ends = events["end_us"].to_numpy()[has_role]
    roles = roles[has_role]
    step_ts = steps["ts_us"].to_numpy(dtype=np.float64)
    step_end = steps["end_us"].to_numpy(dtype=np.float64)
    bounds = np.unique(np.concatenate([starts, ends, step_ts, step_end]))
    piece_role = np.full(max(len(bounds) - 1, 0), _CODE["other"], dtype=np.int8)
    for code in range(_CODE["other"] - 1, -1, -1):  # lowest priority first; higher overwrite
        mine = roles == code
        piece_role[_covered(bounds, starts[mine], ends[mine])] = code
    lengths = np.diff(bounds)
    first = np.searchsorted(bounds, step_ts)
    last = np.searchsorted(bounds, step_end)
    costs = np.zeros((len(steps), len(CATEGORIES)))
    for code in range(len(CATEGORIES)):
        running = np.concatenate(([0.0], np.cumsum(np.where(piece_role == code, lengths, 0.0))))
        costs[:, code] = running[last] - running[first]
    return costs


def _covered(bounds: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which pieces between consecutive ``bounds`` lie inside any of the intervals."""
    size = len(bounds)
    opened = np.bincount(np.searchsorted(bounds, starts), minlength=size)
    closed = np.bincount(np.searchsorted(bounds, ends), minlength=size)
    return np.cumsum(opened - closed)[:-1] > 0


def _launched_by_collective(events: pd.DataFrame, collective: np.ndarray) -> np.ndarray:
    """Events whose external id is a collective range's: the plugin's test for communication
    kernels (``_update_communication_node``). Current traces give kernels their launch's
    correlation id instead, so there their collective kernels count as kernels, in both."""
    ids = events.loc[collective, "external_id"]
    ids = ids[ids != MISSING_INT]
    return events["external_id"].isin(ids).to_numpy()


def _is_dataloader(names: pd.Index) -> np.ndarray:
    loader = names.str.startswith(DATALOADER_PREFIX) & names.str.endswith(DATALOADER_SUFFIX)
    return np.asarray(loader | names.str.startswith(DATAPIPE_PREFIX), dtype=bool)


def _names_where(names: pd.Series, test: Callable[[pd.Index], np.ndarray]) -> np.ndarray:
    """``test`` run once per distinct name, spread back over the events."""
    categorical = names.astype("category")  # a no-op on the loader's categorical columns
    hits = np.append(np.asarray(test(categorical.cat.categories.astype(str)), dtype=bool), False)
    return hits[categorical.cat.codes.to_numpy()]  # code -1 (missing) picks the False at the end


def _legacy_python(events: pd.DataFrame) -> np.ndarray:
    return _names_where(events["cat"], lambda cats: cats.str.lower() == LEGACY_PYTHON_CATEGORY)


def _column_dtype(column: str) -> str:
    return {"step": "int64", "name": "object"}.get(column, "float64")
