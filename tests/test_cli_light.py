"""Runs recorded without deep capture (``schedule=None``, ``trainprof run --light-only``):
``trainprof summary`` reports them from their step logs, and gates on them; and
``summary --by-shape``.

Every expected figure is computed here from the step log itself (``statistics``), never taken
from the module under test; no assertion depends on how fast the machine runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import profiler
from profiler.analysis.rules import DATALOADER_PCT
from profiler.cli import EXIT_BAD_INPUT, EXIT_GATE_TRIPPED, app
from profiler.export.terminal import NO_SHAPES_NOTE
from tests.conftest import read_steps

#: Two decimals, as the summary rounds; and a hair for the float sums' last bits.
CLOSE = 0.006


def invoke(*args: object) -> Any:
    return CliRunner().invoke(app, [str(arg) for arg in args], env={"COLUMNS": "200"})


def logged(run_dir: Path) -> list[dict[str, Any]]:
    """The finished steps of rank 0's step log."""
    records = read_steps(run_dir / "meta" / "steps.0.jsonl")
    return [r for r in records if r.get("completed", True) and r.get("dur_us") is not None]


def expected_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The step-log figures, computed here with ``statistics`` from the records."""
    durs = [r["dur_us"] for r in records]
    waited = [r for r in records if r.get("data_wait_us") is not None]
    figures: dict[str, Any] = {
        "steps": len(durs),
        "mean_us": statistics.fmean(durs),
        "p50_us": statistics.median(durs),
        # numpy's linear interpolation is the "inclusive" method.
        "p90_us": statistics.quantiles(durs, n=10, method="inclusive")[8],
        "max_us": max(durs),
        "data_wait_us": statistics.fmean(r["data_wait_us"] for r in waited),
        "data_wait_pct": 100 * sum(r["data_wait_us"] for r in waited)
        / sum(r["dur_us"] for r in waited),
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in records),
    }  # fmt: skip
    for phase in ("forward", "backward", "optimizer"):
        timed = [r for r in records if r.get(f"{phase}_us") is not None]
        figures[f"{phase}_us"] = statistics.fmean(r[f"{phase}_us"] for r in timed)
        figures[f"{phase}_pct"] = (
            100 * sum(r[f"{phase}_us"] for r in timed) / sum(r["dur_us"] for r in timed)
        )
    return figures


def us(value: float) -> str:
    """A duration as the terminal report writes it."""
    return f"{value / 1000:,.2f} ms" if value >= 1000 else f"{value:,.1f} us"


@pytest.fixture
def light(train, every_step_timed) -> Path:
    """A real run of 8 steps recorded with step logs only."""
    return train(steps=8, schedule=None, run_name="light").run_dir


def test_a_light_only_run_is_summarised_from_its_step_logs(light: Path) -> None:
    assert not list(light.glob("*.json*")), "schedule=None writes no trace"
    records = logged(light)
    want = expected_figures(records)

    result = invoke("summary", light, "--json")

    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["schema"] == "trainprof.summary/1" and report["traces"] == []
    logs = report["step_logs"]
    assert logs["steps"] == 8 and logs["ranks"] == 1 and logs["timed_steps"] == 8
    for key in ("mean_us", "p50_us", "p90_us", "max_us", "data_wait_us", "data_wait_pct",
                "forward_us", "backward_us", "optimizer_us"):  # fmt: skip
        assert logs[key] == pytest.approx(want[key], abs=CLOSE), key
    for phase in ("forward", "backward", "optimizer"):
        assert logs["phase_pct"][phase] == pytest.approx(want[f"{phase}_pct"], abs=CLOSE)
    assert logs["peak_memory_bytes"] == want["peak_memory_bytes"]
    longest = sorted(records, key=lambda r: r["dur_us"], reverse=True)[:5]
    assert [(s["rank"], s["step"]) for s in logs["slowest_steps"]] == [
        (0, r["step"]) for r in longest
    ]
    assert logs["per_rank"] is None and logs["runs"] == [str(light)]
    # The API gives the same dict.
    assert profiler.summarize(light) == report

    text = invoke("summary", light)
    assert text.exit_code == 0, text.output
    assert f"Step logs (every step): {light}" in text.stdout.replace("\n", "")
    assert "8 steps" in text.stdout
    rows = (("mean step", "mean_us"), ("p90 step", "p90_us"), ("longest step", "max_us"),
            ("forward (timed steps)", "forward_us"))  # fmt: skip
    for label, key in rows:
        line = next(line for line in text.stdout.splitlines() if label in line)
        assert us(logs[key]) in line, line
    assert "Slowest steps" in text.stdout


def test_a_run_with_traces_gets_the_step_log_section_too(train) -> None:
    run_dir = train(steps=6, run_name="both").run_dir
    records = logged(run_dir)

    report = orjson.loads(invoke("summary", run_dir, "--json").stdout)

    assert len(report["traces"]) == 1  # one capture window
    assert report["step_logs"]["steps"] == len(records) == 6  # every step, not the window's 2
    assert report["step_logs"]["mean_us"] == pytest.approx(
        statistics.fmean(r["dur_us"] for r in records), abs=CLOSE
    )
    text = invoke("summary", run_dir).stdout
    assert "Top ops (self time)" in text and "Step logs (every step)" in text
    # A bare trace file has no step logs.
    (trace,) = run_dir.glob("*.pt.trace.json.gz")
    assert orjson.loads(invoke("summary", trace, "--json").stdout)["step_logs"] is None


def test_a_long_data_wait_gives_the_dataloader_advice_from_the_step_logs(train) -> None:
    import torch

    def slow() -> Iterator[tuple[Any, Any]]:
        for _ in range(4):
            time.sleep(0.1)  # a floor on the wait, whatever the model's speed
            yield torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))

    run_dir = train(steps=4, schedule=None, loader=slow(), run_name="slow").run_dir
    want = expected_figures(logged(run_dir))
    assert want["data_wait_pct"] > DATALOADER_PCT

    logs = profiler.summarize(run_dir)["step_logs"]

    (rec,) = logs["recommendations"]
    assert rec["id"] == "dataloader_bound"
    assert rec["evidence"] == {"data_wait_pct": round(want["data_wait_pct"], 2),
                               "source": "step_logs"}  # fmt: skip
    assert rec["saving_us_per_step"] == pytest.approx(want["data_wait_us"], abs=CLOSE)
    text = invoke("summary", run_dir).stdout
    assert "dataloader_bound" in text and "waits for the next batch" in text


def test_light_only_runs_are_gated_by_their_step_logs(train) -> None:
    first, second = (train(steps=5, schedule=None, run_name=n).run_dir for n in ("g1", "g2"))
    means = {run: statistics.fmean(r["dur_us"] for r in logged(run)) for run in (first, second)}
    # The new run is the slower one, so the gate can trip.
    base, new = sorted((first, second), key=means.__getitem__)
    change = 100 * (means[new] - means[base]) / means[base]

    tripped = invoke("summary", new, "--baseline", base, "--fail-above", f"{change / 2:g}",
                     "--json")  # fmt: skip
    assert tripped.exit_code == EXIT_GATE_TRIPPED, tripped.output
    gate = orjson.loads(tripped.stdout)["gate"]
    assert gate["source"] == "step_logs" and gate["tripped"] and gate["decided"]
    assert gate["base"] == pytest.approx(means[base], abs=CLOSE)
    assert gate["new"] == pytest.approx(means[new], abs=CLOSE)
    assert tripped.stderr.startswith("gate: mean step time (step logs) ")

    within = invoke("summary", new, "--baseline", base, "--fail-above", f"{change + 1:g}")
    assert within.exit_code == 0, within.output
    assert "within the" in within.stderr

    # A trace-only figure: the step logs cannot tell.
    kernel = invoke("summary", new, "--baseline", base, "--fail-above", "10", "--metric", "kernel")
    assert kernel.exit_code == EXIT_BAD_INPUT
    assert "cannot compare" in kernel.stderr


def test_a_run_with_neither_traces_nor_step_logs_exits_2(tmp_path: Path, light: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "meta").mkdir(parents=True)
    result = invoke("summary", empty)
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr.strip() == f"error: no readable trace under {empty}"
    against = invoke("summary", light, "--baseline", empty, "--fail-above", "10")
    assert against.exit_code == EXIT_BAD_INPUT
    assert f"error: {empty}: no readable trace (the baseline run)" in against.stderr


def two_linears() -> Any:
    """Two Linear layers of different sizes: one op name, two sets of input shapes."""
    from torch import nn

    return nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 64))


def two_linear_run(tmp_path: Path, *, record_shapes: bool) -> Path:
    import torch

    torch.manual_seed(0)
    model = two_linears()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = profiler.schedule(wait=0, warmup=1, active=2)
    options = {"schedule": schedule, "record_shapes": record_shapes, "system_metrics": False}
    with profiler.profile(model, out_dir=tmp_path, run_name="linears", **options) as prof:
        for _ in range(3):
            model(torch.randn(4, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    return prof.run_dir


def test_by_shape_lists_each_shape_of_an_op(tmp_path: Path) -> None:
    run_dir = two_linear_run(tmp_path, record_shapes=True)

    result = invoke("summary", run_dir, "--by-shape", "--json")

    assert result.exit_code == 0, result.output
    (trace,) = orjson.loads(result.stdout)["traces"]
    addmm = {
        str(row["input_dims"]): row for row in trace["top_ops"] if row["name"] == "aten::addmm"
    }
    # bias, input, weight.T: one row per layer, one call per active step each.
    assert set(addmm) == {
        str([[16], [4, 8], [8, 16], [], []]),
        str([[64], [4, 16], [16, 64], [], []]),
    }
    assert all(row["calls"] == 2 for row in addmm.values())
    assert all("input_dims" in row for row in trace["top_ops"])
    without = orjson.loads(invoke("summary", run_dir, "--json").stdout)["traces"][0]
    assert all("input_dims" not in row for row in without["top_ops"])

    text = invoke("summary", run_dir, "--by-shape").stdout
    assert "Top ops by input shapes" in text
    assert "[[16],[4,8],[8,16],[],[]]" in text and "[[64],[4,16],[16,64],[],[]]" in text
    assert NO_SHAPES_NOTE not in text


def test_by_shape_counts_match_torch_key_averages(tmp_path: Path) -> None:
    import torch

    model = two_linears()
    with torch.no_grad(), torch.profiler.profile(record_shapes=True) as prof:
        for _ in range(3):
            model(torch.randn(4, 8))
    path = tmp_path / "plain.pt.trace.json"
    prof.export_chrome_trace(str(path))

    (trace,) = profiler.summarize(path, by_shape=True)["traces"]

    theirs = {(e.key, str(e.input_shapes)): e.count
              for e in prof.key_averages(group_by_input_shape=True)}  # fmt: skip
    assert trace["top_ops"]
    for row in trace["top_ops"]:
        assert row["calls"] == theirs[(row["name"], str(row["input_dims"]))], row
    assert sum(row["name"] == "aten::addmm" for row in trace["top_ops"]) == 2


def test_by_shape_on_a_trace_without_shapes_says_so_in_one_line(tmp_path: Path) -> None:
    run_dir = two_linear_run(tmp_path, record_shapes=False)

    result = invoke("summary", run_dir, "--by-shape")

    assert result.exit_code == 0, result.output
    assert result.stdout.count(NO_SHAPES_NOTE) == 1
    (trace,) = orjson.loads(invoke("summary", run_dir, "--by-shape", "--json").stdout)["traces"]
    assert all(row["input_dims"] is None for row in trace["top_ops"])
