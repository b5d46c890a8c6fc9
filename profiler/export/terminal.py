"""The terminal report: ``render_summary(summary) -> rich renderables``, from the summary dict only.

Trace contents (op and kernel names) are printed as text: rich markup in them is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from profiler.analysis.devices import device_model
from profiler.analysis.guards import duration_text, size_text
from profiler.analysis.rules import SEVERITIES
from profiler.analysis.triggers import trigger_text

#: A style per severity, worst first as :data:`SEVERITIES` orders them.
SEVERITY_STYLE = dict(zip(SEVERITIES, ("bold red", "yellow", "cyan"), strict=True))
NAME_WIDTH = 70


def _short(name: str, width: int = NAME_WIDTH) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def pct(value: float | None, digits: int = 1) -> str:
    """A percentage as text; ``n/a`` for a figure the trace's device does not have (null in the
    summary), never "None%"."""
    return "n/a" if value is None else f"{value:.{digits}f}%"


def _us(value: float | None) -> str:
    return "-" if value is None else duration_text(value)


def render_summary(summary: dict[str, Any]) -> list[RenderableType]:
    """The verdict first (when the summary has one), then one panel per trace: steps,
    breakdown, GPU, top ops/kernels, recommendations; then one for the step logs (every step)
    when the runs have them."""
    verdict = summary.get("verdict")
    panels: list[RenderableType] = [_verdict_panel(verdict)] if verdict else []
    panels.extend(_trace_panel(trace) for trace in summary["traces"])
    if summary.get("step_logs"):
        panels.append(_step_log_panel(summary["step_logs"]))
    if summary.get("distributed"):
        panels.append(_distributed_panel(summary["distributed"]))
    return panels


def _verdict_panel(verdict: dict[str, Any]) -> Panel:
    """The one bottleneck to fix first, its saving and the action (or that none stands out)."""
    severity = verdict.get("severity")
    style = SEVERITY_STYLE[severity] if severity else "green"  # none: nothing stands out
    parts: list[RenderableType] = [Text(escape(verdict["text"]), style=style)]
    if verdict.get("method"):
        parts.append(Text(escape(f"Saving estimated as {verdict['method']}"), style="dim"))
    if verdict.get("page"):
        parts.append(Text(f"Evidence: the dashboard's {verdict['page']} page", style="dim"))
    return Panel(Group(*parts), title="Verdict", title_align="left")


def _distributed_panel(report: dict[str, Any]) -> Panel:
    """The cross-rank analysis in words: how the clocks were aligned, who the others wait for."""
    ranks = report["ranks"]
    offsets = ", ".join(
        f"rank {rank} {_signed_us(offset)}"
        for rank, offset in report["clock_offset_us"].items()
        if int(rank) != ranks[0]
    )
    if report["method"] == "collectives":
        clocks = f"clocks aligned on collective ends to rank {ranks[0]}'s: {offsets}"
    else:
        clocks = f"clocks not aligned on collectives (wall clock): {offsets}"
    parts: list[RenderableType] = [Text(f"{len(ranks)} ranks · {clocks}")]
    parts.extend(Text(escape(line), style="yellow") for line in report["warnings"])
    parts.extend(Text(_straggler_words(s), style="bold red") for s in report["stragglers"])
    if not report["stragglers"]:
        parts.append(Text("No straggler: no rank keeps the others waiting.", style="green"))
    return Panel(Group(*parts), title=escape(f"Ranks: {report['run']}"), title_align="left")


def _straggler_words(straggler: dict[str, Any]) -> str:
    steps = ", ".join(map(str, straggler["steps"]))
    category = straggler["category"]
    # "other" is step time no recorded operation covers (a sleep, Python between ops).
    label = "other (no recorded operation)" if category == "other" else category
    where = (
        f"; its extra time is in {label} "
        f"({_signed_us(straggler['category_us'])} per step over the others)"
        if category
        else ""
    )
    return (
        f"Rank {straggler['rank']} is a straggler: the other ranks wait "
        f"{_us(straggler['excess_us'])} for it in step(s) {steps}{_of(straggler)} "
        f"({pct(straggler['excess_pct'])} of its step){where}."
    )


def _of(straggler: dict[str, Any]) -> str:
    """ " (2 of 5 steps)": how many of the steps compared, where the summary says."""
    compared = straggler.get("steps_compared")
    return f" ({len(straggler['steps'])} of {compared} steps)" if compared else ""


def _signed_us(value: float) -> str:
    return ("+" if value >= 0 else "-") + _us(abs(value))


def _trace_panel(trace: dict[str, Any]) -> Panel:
    steps = trace["steps"]
    head = Text.assemble(
        (f"rank {trace['rank']}", "bold"),
        f" · {trace['device']} · {trace['events']:,} events · ",
        f"{steps['count']} steps, mean {_us(steps['mean_us'])}, max {_us(steps['max_us'])}",
    )
    parts: list[RenderableType] = [head, _breakdown(trace["step_breakdown_pct"])]
    if trace.get("trigger"):  # a window on_anomaly or a capture request opened
        parts.insert(1, Text(trigger_text(trace["trigger"]), style="cyan"))
    label = device_model(str(trace["device"])).label  # "GPU", "MTIA"...
    if trace["gpu"]:
        gpu = trace["gpu"]
        parts.append(
            Text(
                f"{label}: utilization {pct(gpu['utilization_pct'], 2)} · "
                f"SM efficiency {pct(gpu['sm_efficiency_pct'], 2)} · "
                f"occupancy {pct(gpu['achieved_occupancy_pct'], 2)} · "
                f"tensor cores {pct(gpu['tensor_core_pct'], 2)}"
            )
        )
    if trace["temporal_breakdown_pct"]:
        t = trace["temporal_breakdown_pct"]
        parts.append(
            Text(
                f"{label} time (HTA): idle {pct(t['idle'], 2)} · "
                f"compute {pct(t['compute'], 2)} · non-compute {pct(t['non_compute'], 2)}"
            )
        )
    parts.append(_recommendations(trace["recommendations"]))
    parts.extend(_top_ops(trace["top_ops"]))
    if trace["top_kernels"]:
        parts.append(_top("Top kernels", trace["top_kernels"], ("calls", "total_us", "mean_us")))
    return Panel(Group(*parts), title=escape(trace["path"]), title_align="left")


#: What ``summary --by-shape`` says of a trace recorded without shapes.
NO_SHAPES_NOTE = "shapes were not recorded: profile with record_shapes=True"


def _top_ops(rows: list[dict[str, Any]]) -> list[RenderableType]:
    """The top-ops table; grouped by shape (rows with ``input_dims``), a column of the shapes,
    or one line saying the trace has none."""
    columns = ("calls", "self_us", "total_us")
    if not any("input_dims" in row for row in rows):
        return [_top("Top ops (self time)", rows, columns)]
    if all(row["input_dims"] is None for row in rows):
        return [Text(NO_SHAPES_NOTE, style="yellow"), _top("Top ops (self time)", rows, columns)]
    return [_top("Top ops by input shapes (self time)", rows, ("input_dims", *columns))]


def _dims(input_dims: Any) -> str:
    if input_dims is None:
        return "-"
    return input_dims if isinstance(input_dims, str) else orjson.dumps(input_dims).decode()


def _step_log_panel(logs: dict[str, Any]) -> Panel:
    """The runs' step logs: every step's figures, the slowest steps, the advice they give."""
    head = Text.assemble(
        (f"{logs['steps']:,} steps", "bold"),
        f" · {logs['ranks']} rank(s) · {logs['timed_steps']:,} with the phases timed",
    )
    figures = Table(show_edge=False, show_header=False)
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    figures.add_column("share", justify="right")
    shares = {"data_wait_us": logs["data_wait_pct"]}
    shares |= {f"{phase}_us": value for phase, value in logs["phase_pct"].items()}
    for key, label, unit in _STEP_LOG_ROWS[1:]:  # the count is in the head line
        if key == "data_wait_pct":
            continue  # the data wait's share column says it
        share = f"{pct(shares[key])} of step" if key in shares else ""
        figures.add_row(label, _figure(logs.get(key), unit), share)
    parts: list[RenderableType] = [head, figures, _slowest(logs["slowest_steps"])]
    if logs.get("per_rank"):
        parts.append(_per_rank(logs["per_rank"]))
    if logs["recommendations"]:
        parts.append(_recommendations(logs["recommendations"]))
    title = "Step logs (every step): " + ", ".join(logs["runs"])
    return Panel(Group(*parts), title=escape(title), title_align="left")


def _slowest(steps: list[dict[str, Any]]) -> Table:
    table = Table(title="Slowest steps", title_justify="left", show_edge=False)
    for column in ("rank", "step", "time", "data wait"):
        table.add_column(column, justify="right")
    for step in steps:
        table.add_row(
            str(step["rank"]), str(step["step"]), _us(step["dur_us"]), _us(step["data_wait_us"])
        )
    return table


def _per_rank(ranks: list[dict[str, Any]]) -> Table:
    table = Table(title="Per rank", title_justify="left", show_edge=False)
    for column in ("rank", "steps", "mean", "p90", "max", "data wait"):
        table.add_column(column, justify="right")
    for rank in ranks:
        table.add_row(
            str(rank["rank"]), f"{rank['steps']:,}", _us(rank["mean_us"]), _us(rank["p90_us"]),
            _us(rank["max_us"]), pct(rank["data_wait_pct"]),
        )  # fmt: skip
    return table


def _breakdown(shares: dict[str, float | None]) -> Table:
    table = Table(title="Step time breakdown", title_justify="left", show_edge=False)
    shown = {key: value for key, value in shares.items() if value is not None and value > 0}
    for key in shown:
        table.add_column(key, justify="right")
    table.add_row(*(pct(value) for value in shown.values()))
    return table


def _recommendations(recs: Iterable[dict[str, Any]]) -> RenderableType:
    recs = list(recs)
    if not recs:
        return Text("No bottleneck found by the rules.", style="green")
    table = Table(title="Recommendations", title_justify="left", show_edge=False, show_header=False)
    table.add_column("severity")
    table.add_column("finding", overflow="fold")
    for rec in recs:
        saving = rec.get("saving_us_per_step")
        # The time per step the cause costs in the trace; None: no honest figure (rules.py).
        tail = f" (saves up to {_us(saving)} per step)" if saving is not None else ""
        table.add_row(
            Text(rec["severity"], style=SEVERITY_STYLE[rec["severity"]]),
            Text(f"{rec['id']}: {rec['message']}{tail}"),
        )
    return table


def _top(title: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("name", overflow="fold")
    for column in columns:
        table.add_column(column, justify="left" if column == "input_dims" else "right")
    for row in rows:
        table.add_row(Text(_short(row["name"])), *(_cell(row, column) for column in columns))
    return table


def _cell(row: dict[str, Any], column: str) -> str:
    if column == "input_dims":
        return _dims(row[column])
    return f"{row[column]:,}" if column == "calls" else _us(row[column])


def render_diff(diff: dict[str, Any]) -> list[RenderableType]:
    """The diff as tables: step time, categories, then the ops and kernels that moved most, and
    the step logs of every step when both runs have them.

    A run without trace steps (recorded with step logs only) leaves out the trace tables.
    """
    out: list[RenderableType] = []
    untraced = [side for side, count in diff.get("steps", {}).items() if not count]
    if untraced:
        out.append(Text(f"no trace steps in the {' and '.join(untraced)} run: step logs only"))
    else:
        step = diff["step_us"]
        out.append(
            Text(
                f"step time {_us(step['base'])} -> {_us(step['new'])} ({_signed_pct(step)})",
                style="bold",
            )
        )
        out.append(_changes("Per category (per step)", diff["categories"], "category"))
        out.append(_changes("Ops that changed most (self time per step)", diff["ops"], "name"))
        if diff["kernels"]:
            title = "Kernels that changed most (time per step)"
            out.append(_changes(title, diff["kernels"], "name"))
    if diff.get("step_logs"):
        out.append(_step_logs(diff["step_logs"]))
    return out


#: The step-log figures the diff shows, in words, and how each is written.
_STEP_LOG_ROWS = (
    ("steps", "steps", "count"),
    ("mean_us", "mean step", "us"),
    ("p50_us", "median step", "us"),
    ("p90_us", "p90 step", "us"),
    ("max_us", "longest step", "us"),
    ("data_wait_us", "data wait per step", "us"),
    ("data_wait_pct", "data wait share", "pct"),
    ("forward_us", "forward (timed steps)", "us"),
    ("backward_us", "backward (timed steps)", "us"),
    ("optimizer_us", "optimizer (timed steps)", "us"),
    ("peak_memory_bytes", "peak memory", "bytes"),
)


def _step_logs(logs: dict[str, Any]) -> Table:
    """The always-on step logs of both runs side by side: every step, not only deep windows."""
    table = Table(title="Step logs (every step)", title_justify="left", show_edge=False)
    table.add_column("figure")
    for column in ("base", "new", "%"):
        table.add_column(column, justify="right")
    base, new, change = logs["base"], logs["new"], logs["change_pct"]
    for key, label, unit in _STEP_LOG_ROWS:
        moved = change.get(key)
        style = "" if not moved else "red" if moved > 0 else "green"
        table.add_row(
            label,
            _figure(base.get(key), unit),
            _figure(new.get(key), unit),
            Text("-" if moved is None else f"{moved:+.1f}%", style=style),
        )
    return table


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return size_text(int(value))
    if unit == "pct":
        return f"{value:.1f}%"
    return f"{value:,}" if unit == "count" else _us(value)


def _signed_pct(row: dict[str, Any]) -> str:
    """The change in percent; with no base to divide by, ``new`` (0 -> some) or ``-`` (0 -> 0)."""
    if row["delta_pct"] is not None:
        return f"{row['delta_pct']:+.1f}%"
    return "new" if row["new"] else "-"


def _changes(title: str, rows: list[dict[str, Any]], key: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    for column, justify in (
        (key, "left"),
        ("base", "right"),
        ("new", "right"),
        ("delta", "right"),
        ("%", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        style = "red" if row["delta"] > 0 else "green" if row["delta"] < 0 else ""
        table.add_row(
            Text(_short(str(row[key]))),
            _us(row["base"]),
            _us(row["new"]),
            Text(f"{row['delta']:+,.1f} us", style=style),
            _signed_pct(row),
        )
    return table
