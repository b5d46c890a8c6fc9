"""The CI gate on the command line (``diff --fail-above``, ``summary --baseline --fail-above``):
exit 0 within the threshold, 1 past it, 2 when it cannot tell; the verdict one line on stderr.

Thresholds are derived from the change measured on the real reference traces, never written in.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from profiler.analysis.diff import diff_runs
from profiler.analysis.gate import METRICS
from profiler.analysis.steps import CATEGORIES
from profiler.analysis.table import load
from profiler.cli import EXIT_BAD_INPUT, EXIT_GATE_TRIPPED, app
from tests.conftest import REFERENCE_TRACES

HTA = REFERENCE_TRACES / "hta"
CONTROL, TEST = HTA / "diff_control.json.gz", HTA / "diff_test.json.gz"
RANK0, RANK1 = HTA / "two_ranks_rank-0.json.gz", HTA / "two_ranks_rank-1.json.gz"
GATE_KEYS = {"metric", "unit", "base", "new", "change_pct", "threshold_pct", "tripped",
             "decided", "source", "reason"}  # fmt: skip


def invoke(*args: object) -> Any:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def gate_line(result: Any) -> str:
    """The one verdict line on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("gate: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def command(kind: str, base: Path, new: Path, *options: object) -> list[object]:
    if kind == "diff":
        return ["diff", base, new, *options]
    return ["summary", new, "--baseline", base, *options]


def measured(base: Path, new: Path, metric: str) -> tuple[float, float, float]:
    """``(base, new, change_pct)`` of a metric as the diff reports it."""
    result = diff_runs(load(base), load(new))
    rows = {row["category"]: row for row in result["categories"]}
    row = result["step_us"] if metric == "step_time" else rows[metric]
    return row["base"], row["new"], row["delta_pct"]


def ms(us: float) -> str:
    return f"{us / 1000:,.2f} ms"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["diff", "summary"])
@pytest.mark.parametrize(
    ("base", "new", "metric"),
    [(CONTROL, TEST, "step_time"), (CONTROL, TEST, "memcpy"), (RANK0, RANK1, "step_time")],
    ids=["reference-pair-step-time", "reference-pair-memcpy", "two-ranks-step-time"],
)
def test_the_gate_trips_below_the_measured_change_and_passes_above_it(
    kind: str, base: Path, new: Path, metric: str
) -> None:
    before, after, change = measured(base, new, metric)
    assert change > 0  # the new side is the slower one on each of these pairs
    label = METRICS[metric].label

    gated = ("--metric", metric, "--fail-above")
    above = invoke(*command(kind, base, new, *gated, f"{change / 2:g}"))
    assert above.exit_code == EXIT_GATE_TRIPPED, above.output
    line = gate_line(above)
    assert line.startswith(f"gate: {label} (traces) {ms(before)} -> {ms(after)} ({change:+.1f}%)")
    assert line.endswith(f"above the +{change / 2:g}% allowed")

    within = invoke(*command(kind, base, new, *gated, f"{change + 1:g}"))
    assert within.exit_code == 0, within.output
    assert gate_line(within).endswith(f"within the +{change + 1:g}% allowed")
    # The report is printed as without the gate, on stdout.
    assert ("Per category" if kind == "diff" else "Step time breakdown") in within.stdout


@pytest.mark.slow
def test_an_improvement_passes_even_a_zero_threshold() -> None:
    _, _, change = measured(CONTROL, TEST, "cpu_exec")
    assert change < 0  # the test run spends less host time per step
    result = invoke("diff", CONTROL, TEST, "--fail-above", "0", "--metric", "cpu_exec")
    assert result.exit_code == 0, result.output
    assert f"({change:+.1f}%), within the +0% allowed" in gate_line(result)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["diff", "summary"])
def test_json_carries_the_gate_and_stays_pure_json(kind: str) -> None:
    before, after, change = measured(CONTROL, TEST, "step_time")
    result = invoke(*command(kind, CONTROL, TEST, "--json", "--fail-above", f"{change - 1:g}"))
    assert result.exit_code == EXIT_GATE_TRIPPED, result.output
    report = orjson.loads(result.stdout)  # nothing else on stdout
    gate = report["gate"]
    assert set(gate) == GATE_KEYS
    assert gate["metric"] == "step_time" and gate["source"] == "traces"
    assert (gate["base"], gate["new"], gate["change_pct"]) == (before, after, change)
    assert gate["threshold_pct"] == float(f"{change - 1:g}")
    assert gate["tripped"] and gate["decided"]
    assert result.stderr.splitlines() == [f"gate: {gate['reason']}"]
    no_gate = invoke(*(["diff", CONTROL, TEST] if kind == "diff" else ["summary", TEST]), "--json")
    assert no_gate.exit_code == 0 and "gate" not in orjson.loads(no_gate.stdout)


@pytest.fixture
def corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.pt.trace.json.gz"
    path.write_bytes(gzip.compress(b'{"traceEvents": [{"ph": "X", "name": ')[:-9])
    return path


@pytest.mark.parametrize("kind", ["diff", "summary"])
def test_unreadable_input_exits_2_whatever_the_threshold(
    kind: str, corrupt: Path, tmp_path: Path
) -> None:
    for base, new in ((RANK0, corrupt), (corrupt, RANK0), (RANK0, tmp_path / "missing")):
        result = invoke(*command(kind, base, new, "--fail-above", "1000"))
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert "error: " in result.stderr and "Traceback" not in result.output
        assert "gate: " not in result.stderr


def test_a_bad_file_beside_good_ones_exits_2_even_past_the_threshold(
    corrupt: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(RANK1, run / "good.pt.trace.json.gz")
    shutil.copy(corrupt, run / "bad.pt.trace.json.gz")
    result = invoke("diff", RANK0, run, "--fail-above", "0")
    assert result.exit_code == EXIT_BAD_INPUT, result.output  # "could not tell" wins over 1
    assert "above the +0% allowed" in gate_line(result)
    assert f"error: {run / 'bad.pt.trace.json.gz'}" in result.stderr


@pytest.mark.parametrize("kind", ["diff", "summary"])
def test_an_unknown_metric_exits_2_listing_the_known_ones(kind: str) -> None:
    result = invoke(*command(kind, RANK0, RANK1, "--fail-above", "10", "--metric", "speed"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "unknown metric 'speed'" in result.stderr and "Traceback" not in result.output
    assert all(name in result.stderr for name in METRICS)


@pytest.mark.parametrize("kind", ["diff", "summary"])
def test_a_figure_neither_run_has_exits_2(kind: str) -> None:
    # The reference traces hold no memory samples.
    gated = ("--json", "--metric", "peak_memory", "--fail-above", "10")
    result = invoke(*command(kind, RANK0, RANK1, *gated))
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    gate = orjson.loads(result.stdout)["gate"]
    assert not gate["decided"] and not gate["tripped"]
    assert gate["base"] is None and gate["new"] is None and gate["change_pct"] is None
    assert gate_line(result).endswith(
        "neither run has any memory figure (step logs' peak_memory_bytes or trace memory "
        "samples): cannot compare"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["summary", RANK1, "--baseline", RANK0],
        ["summary", RANK1, "--fail-above", "10"],
        ["summary", RANK1, "--baseline", RANK0, "--fail-above", "-1"],
        ["diff", RANK0, RANK1, "--metric", "kernel"],
        ["diff", RANK0, RANK1, "--fail-above", "inf"],
    ],
    ids=["baseline-alone", "fail-above-alone", "negative", "metric-alone", "infinite"],
)
def test_gate_options_that_do_not_go_together_are_usage_errors(args: list[object]) -> None:
    result = invoke(*args)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "Invalid value for" in result.stderr and "Traceback" not in result.output


def test_the_step_time_gate_reads_the_step_logs_when_both_runs_have_them(train) -> None:
    first, second = (train(steps=5, run_name=name).run_dir for name in ("one", "two"))
    probe = orjson.loads(invoke("diff", first, second, "--json").stdout)["step_logs"]
    # Order the runs so that the new one is the slower: the gate can then trip.
    base, new = (first, second) if probe["change_pct"]["mean_us"] > 0 else (second, first)
    logs = orjson.loads(invoke("diff", base, new, "--json").stdout)["step_logs"]
    change = logs["change_pct"]["mean_us"]

    for kind in ("diff", "summary"):
        tripped = invoke(*command(kind, base, new, "--json", "--fail-above", f"{change / 2:g}"))
        assert tripped.exit_code == EXIT_GATE_TRIPPED, tripped.output
        gate = orjson.loads(tripped.stdout)["gate"]
        assert gate["source"] == "step_logs"
        assert (gate["base"], gate["new"]) == (logs["base"]["mean_us"], logs["new"]["mean_us"])
        assert gate_line(tripped).startswith("gate: mean step time (step logs) ")
        within = invoke(*command(kind, base, new, "--fail-above", f"{change + 1:g}"))
        assert within.exit_code == 0, within.output


def test_runs_with_step_logs_only_are_diffed_and_gated_by_them(train, tmp_path: Path) -> None:
    """Runs recorded without deep capture (schedule=None, `trainprof run --light-only`)."""
    first, second = (train(steps=4, schedule=None, run_name=n).run_dir for n in ("l1", "l2"))
    assert not list(first.glob("*.json.gz"))

    # Two real 4-step runs on a shared machine differ by whatever the scheduler did (one 112 ms
    # step once made +1061%): the gate is checked against its own figure, not a guessed margin.
    result = invoke("diff", first, second, "--json", "--fail-above", "1000")
    report = orjson.loads(result.stdout)
    assert report["steps"] == {"base": 0, "new": 0}
    assert report["step_logs"]["base"]["steps"] == report["step_logs"]["new"]["steps"] == 4
    gate = report["gate"]
    assert gate["source"] == "step_logs" and gate["decided"]
    assert gate["tripped"] == (gate["change_pct"] > 1000)
    assert result.exit_code == (EXIT_GATE_TRIPPED if gate["tripped"] else 0), result.output
    change = gate["change_pct"]
    within = invoke("diff", first, second, "--fail-above", f"{max(change, 0) + 1:.3f}")
    assert within.exit_code == 0, within.output
    text = invoke("diff", first, second)
    assert text.exit_code == 0 and "no trace steps in the base and new run" in text.stdout
    assert "Step logs (every step)" in text.stdout and "Per category" not in text.stdout

    # A trace-only figure cannot be had; nor can anything against a run with neither.
    kernel = invoke("diff", first, second, "--fail-above", "10", "--metric", "kernel")
    assert kernel.exit_code == EXIT_BAD_INPUT
    assert gate_line(kernel).endswith("neither run has any kernel time per step in its traces: "
                                      "cannot compare")  # fmt: skip
    against_trace = invoke("diff", RANK0, first)
    assert against_trace.exit_code == EXIT_BAD_INPUT
    assert "error: nothing to compare" in against_trace.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke("diff", empty, first).exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize("kind", ["diff", "summary"])
def test_help_names_every_metric_but_the_categories(kind: str) -> None:
    # The categories are named by example ("a step category (kernel, ...)"); the rest one by one.
    text = " ".join(
        CliRunner().invoke(app, [kind, "--help"], env={"COLUMNS": "200"}).stdout.split()
    )
    for name in set(METRICS) - set(CATEGORIES):
        assert name in text, name
