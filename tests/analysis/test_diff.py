"""trainprof diff: per-step deltas between two traces or runs."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from profiler.analysis.diff import diff_runs
from profiler.analysis.steps import CATEGORIES
from profiler.analysis.table import load
from profiler.cli import app
from tests.conftest import REFERENCE_TRACES


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
