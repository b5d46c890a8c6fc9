"""trainprof diff: per-step deltas between two traces or runs."""

from __future__ import annotations

import statistics
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from profiler.analysis.diff import diff_runs
from profiler.analysis.run import Run
from profiler.analysis.steps import CATEGORIES
from profiler.analysis.table import load
from profiler.cli import app
from tests.conftest import REFERENCE_TRACES, read_steps, read_trace


@pytest.fixture(scope="module")
def reference_diff() -> dict:
    hta = REFERENCE_TRACES / "hta"
    return diff_runs(load(hta / "diff_control.json.gz"), load(hta / "diff_test.json.gz"))


@pytest.mark.slow
def test_deltas_add_up(reference_diff: dict) -> None:
    step = reference_diff["step_us"]
    assert step["delta"] == pytest.approx(step["new"] - step["base"], abs=0.02)
    categories = {row["category"]: row for row in reference_diff["categories"]}
    assert set(categories) == set(CATEGORIES)
    # The categories partition each step, so they add up to the step time on both sides.
    assert sum(r["base"] for r in categories.values()) == pytest.approx(step["base"], rel=1e-3)
    assert sum(r["new"] for r in categories.values()) == pytest.approx(step["new"], rel=1e-3)
    for row in reference_diff["ops"] + reference_diff["kernels"]:
        assert row["delta"] == pytest.approx(row["new"] - row["base"], abs=0.02)
    deltas = [abs(r["delta"]) for r in reference_diff["ops"]]
    assert deltas == sorted(deltas, reverse=True)


@pytest.mark.slow
def test_the_test_run_is_slower_and_copies_more(reference_diff: dict) -> None:
    # diff_test is the same job after a change that added host-device copies (its memcpy
    # events are 21x as many as diff_control's: 4856 against 228).
    categories = {row["category"]: row for row in reference_diff["categories"]}
    assert categories["memcpy"]["delta"] > 0
    assert reference_diff["step_us"]["delta"] > 0
    copy = next(r for r in reference_diff["ops"] if r["name"] == "aten::copy_")
    assert copy["calls_new"] > copy["calls_base"]


def test_a_run_against_itself_changes_nothing(reference_traces: Path) -> None:
    run = load(reference_traces / "hta" / "two_ranks_rank-0.json.gz")
    same = diff_runs(run, run)
    assert same["step_us"]["delta"] == 0
    assert all(row["delta"] == 0 for row in same["categories"] + same["ops"] + same["kernels"])


def test_cli_diff_json(reference_traces: Path) -> None:
    a = reference_traces / "hta" / "two_ranks_rank-0.json.gz"
    b = reference_traces / "hta" / "two_ranks_rank-1.json.gz"
    result = CliRunner().invoke(app, ["diff", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == diff_runs(load(a), load(b))
    text = CliRunner().invoke(app, ["diff", str(a), str(b)])
    assert text.exit_code == 0 and "Per category" in text.stdout


def host_step_mean_us(path: Path) -> float:
    """The mean ``dur`` of the host-side ProfilerStep ranges, read straight from the gzip JSON."""
    events = read_trace(path)["traceEvents"]
    durations = [
        e["dur"]
        for e in events
        if e.get("ph") == "X"
        and str(e.get("name", "")).startswith("ProfilerStep#")
        and e.get("cat") != "gpu_user_annotation"  # a copy on the GPU timeline is no step
    ]
    return statistics.fmean(durations)


@pytest.mark.slow
def test_the_mean_step_time_agrees_with_the_profiler_steps_read_directly(
    reference_diff: dict,
) -> None:
    hta = REFERENCE_TRACES / "hta"
    base, new = (
        host_step_mean_us(hta / f"{name}.json.gz") for name in ("diff_control", "diff_test")
    )
    step = reference_diff["step_us"]
    # The diff's steps are the host ranges stretched over the GPU work each launched (the
    # TensorBoard plugin's definition), so never shorter, and here longer by under 0.1%.
    assert base <= step["base"] <= base * 1.001
    assert new <= step["new"] <= new * 1.001
    assert step["delta_pct"] == pytest.approx(100 * (new - base) / base, abs=0.1)


def expected_step_log(run_dir: Path) -> dict:
    """The step_logs figures of a one-rank run, computed from its jsonl here, not by trainprof."""
    steps = read_steps(run_dir / "meta" / "steps.0.jsonl")
    durations = [s["dur_us"] for s in steps]
    waits = [s["data_wait_us"] for s in steps]
    return {
        "steps": len(steps),
        "ranks": 1,
        "mean_us": statistics.fmean(durations),
        "p50_us": statistics.median(durations),
        "p90_us": statistics.quantiles(durations, n=10, method="inclusive")[8],
        "max_us": max(durations),
        "data_wait_us": statistics.fmean(waits),
        "data_wait_pct": 100 * sum(waits) / sum(durations),
        "peak_memory_bytes": max(s["peak_memory_bytes"] for s in steps),
    }


def test_diff_compares_the_step_logs_of_every_step(train, every_step_timed: None) -> None:
    base_dir = train(steps=5, run_name="base").run_dir
    new_dir = train(steps=9, run_name="new").run_dir

    result = CliRunner().invoke(app, ["diff", str(base_dir), str(new_dir), "--json"])

    assert result.exit_code == 0, result.output
    logs = orjson.loads(result.stdout)["step_logs"]
    for side, run_dir in (("base", base_dir), ("new", new_dir)):
        want = expected_step_log(run_dir)
        got = logs[side]
        assert got["steps"] == want["steps"] and got["ranks"] == 1
        assert got["peak_memory_bytes"] == want["peak_memory_bytes"]
        for key in ("mean_us", "p50_us", "p90_us", "max_us", "data_wait_us", "data_wait_pct"):
            assert got[key] == pytest.approx(want[key], abs=0.006), key
        assert got["timed_steps"] == want["steps"]  # every step timed (the fixture)
    traced = orjson.loads(result.stdout)["steps"]  # the deep windows' steps only
    assert (logs["base"]["steps"], logs["new"]["steps"]) == (5, 9)
    assert traced["base"] < 5 and traced["new"] < 9
    a, b = expected_step_log(base_dir)["mean_us"], expected_step_log(new_dir)["mean_us"]
    assert logs["change_pct"]["mean_us"] == pytest.approx(100 * (b - a) / a, abs=0.006)

    text = CliRunner().invoke(app, ["diff", str(base_dir), str(new_dir)])
    assert text.exit_code == 0 and "Step logs (every step)" in text.stdout


def test_step_logs_are_compared_only_when_both_runs_have_them(
    train, reference_traces: Path
) -> None:
    run = train(steps=4, run_name="with-logs")
    trace = reference_traces / "hta" / "two_ranks_rank-0.json.gz"
    one_sided = diff_runs(load(trace), load(run.run_dir), new_runs=[Run(run.run_dir)])
    assert one_sided["step_logs"] is None
    both = diff_runs(load(run.run_dir), load(run.run_dir), base_runs=[Run(run.run_dir)],
                     new_runs=[Run(run.run_dir)])  # fmt: skip
    assert both["step_logs"]["base"] == both["step_logs"]["new"]
    assert set(both["step_logs"]["change_pct"].values()) <= {0.0, None}
