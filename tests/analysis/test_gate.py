"""The CI gate's verdict, on figures built by hand: thresholds, a zero base, missing figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pandas as pd
import pytest

from profiler.analysis.diff import RunFigures, RunTotals, duration_stats, step_log_stats
from profiler.analysis.gate import DEFAULT_METRIC, METRICS, check_gate
from profiler.analysis.memory import MemoryPeak
from profiler.analysis.steps import CATEGORIES

GATE_KEYS = {"metric", "unit", "base", "new", "change_pct", "threshold_pct", "tripped",
             "decided", "source", "reason"}  # fmt: skip


def figures(
    steps_us: Sequence[float] = (100.0,),
    *,
    categories: dict[str, float] | None = None,
    log: Sequence[dict[str, Any]] | None = None,
    device: str | None = None,
    peak: MemoryPeak | None = None,
) -> RunFigures:
    """A run of traces with steps of ``steps_us``, and step-log ``log`` records if given."""
    totals = RunTotals(
        steps=len(steps_us),
        step_us=sum(steps_us) / max(len(steps_us), 1),
        categories_us={key: (categories or {}).get(key, 0.0) for key in CATEGORIES},
        ops=pd.DataFrame(columns=["name", "calls", "self_us", "total_us"]),
        kernels=pd.DataFrame(columns=["name", "calls", "total_us"]),
        step_stats=duration_stats(steps_us),
        memory_peak=peak,
    )
    return RunFigures(totals, None if log is None else step_log_stats(log), device)


def peak(allocated: int, source: str = "kineto", device: str = "cuda:0") -> MemoryPeak:
    return MemoryPeak(device, 0.0, allocated, None, source, None, None, None, None, None)


def test_a_base_of_zero_trips_on_any_growth_and_passes_on_none() -> None:
    nothing, some = figures(categories={"memcpy": 0.0}), figures(categories={"memcpy": 5.0})

    same = check_gate(nothing, nothing, threshold_pct=10, metric="memcpy")
    assert (same.decided, same.tripped, same.change_pct) == (True, False, None)
    assert "0.0 us -> 0.0 us (no change), within the +10% allowed" in same.reason

    grew = check_gate(nothing, some, threshold_pct=1000, metric="memcpy")
    assert (grew.decided, grew.tripped, grew.change_pct) == (True, True, None)
    assert grew.reason == (
        "memcpy time per step (traces) 0.0 us -> 5.0 us (up from 0), above the +1000% allowed"
    )


def test_an_improvement_never_trips() -> None:
    gate = check_gate(figures([100.0, 300.0]), figures([150.0]), threshold_pct=0)
    assert gate.metric == DEFAULT_METRIC and gate.source == "traces"
    assert (gate.base, gate.new, gate.change_pct) == (200.0, 150.0, -25.0)
    assert not gate.tripped and gate.decided
    assert (
        gate.reason
        == "mean step time (traces) 200.0 us -> 150.0 us (-25.0%), within the +0% allowed"
    )


@pytest.mark.parametrize(
    ("base", "at", "threshold"),
    [(200.0, 250.0, 25.0), (1000.0, 1101.0, 10.1), (3000.0, 3000.0, 0.0)],
)
def test_a_change_exactly_at_the_threshold_passes(base: float, at: float, threshold: float) -> None:
    # 10.1 is no binary float: the gate takes it as written, so 1000 -> 1101 is exactly +10.1%.
    exactly = check_gate(figures([base]), figures([at]), threshold_pct=threshold)
    assert not exactly.tripped and "within" in exactly.reason
    past = check_gate(figures([base]), figures([at + 0.001]), threshold_pct=threshold)
    assert past.tripped and "above" in past.reason


def records(durations: Sequence[float], **fields: Any) -> list[dict[str, Any]]:
    return [{"step": i, "dur_us": d, **fields} for i, d in enumerate(durations)]


def test_step_time_comes_from_the_step_logs_when_both_runs_have_them() -> None:
    base = figures([100.0], log=records([40.0, 60.0]))
    new = figures([300.0], log=records([70.0, 80.0, 90.0]))
    logged = check_gate(base, new, threshold_pct=50)
    assert (logged.source, logged.base, logged.new) == ("step_logs", 50.0, 80.0)
    assert logged.tripped and logged.change_pct == pytest.approx(60.0)
    assert logged.reason.startswith("mean step time (step logs) 50.0 us -> 80.0 us (+60.0%)")

    # One run without step logs: both figures come from the traces, never one from each.
    traced = check_gate(base, figures([300.0]), threshold_pct=50)
    assert (traced.source, traced.base, traced.new) == ("traces", 100.0, 300.0)


def test_a_step_log_figure_a_run_lacks_leaves_the_gate_undecided() -> None:
    timed = records([10.0], forward_us=4.0, backward_us=5.0, optimizer_us=1.0)
    gate = check_gate(figures(log=timed), figures(), threshold_pct=10, metric="forward")
    assert (gate.decided, gate.tripped, gate.new, gate.change_pct) == (False, False, None, None)
    assert gate.reason == (
        "forward time per timed step (step logs): the new run has no step logs: cannot compare"
    )
    untimed = check_gate(figures(log=timed), figures(log=records([10.0])), threshold_pct=10,
                         metric="backward")  # fmt: skip
    assert not untimed.decided
    assert "the new run has no backward time per timed step in its step logs" in untimed.reason
    neither = check_gate(figures(), figures(), threshold_pct=10, metric="optimizer")
    assert "neither run has any step logs: cannot compare" in neither.reason


def test_peak_memory_of_different_kinds_is_not_compared() -> None:
    cpu = figures(log=records([1.0], peak_memory_bytes=2**30), device="cpu")
    cuda = figures(log=records([1.0], peak_memory_bytes=2**29), device="cuda")
    gate = check_gate(cpu, cuda, threshold_pct=10, metric="peak_memory")
    assert not gate.decided and gate.source == "step_logs"
    assert "process RSS and the new run's CUDA allocator bytes" in gate.reason

    grew = check_gate(cuda, cuda, threshold_pct=10, metric="peak_memory")
    assert grew.decided and grew.reason.startswith(
        "peak memory (CUDA allocator bytes, step logs) 512 MiB -> 512 MiB (+0.0%)"
    )


def test_peak_memory_falls_back_to_the_traces() -> None:
    base, new = figures(peak=peak(500)), figures(peak=peak(600))
    gate = check_gate(base, new, threshold_pct=10, metric="peak_memory")
    assert (gate.source, gate.base, gate.new, gate.unit) == ("traces", 500, 600, "bytes")
    assert gate.tripped
    assert gate.reason == (
        "peak memory (kineto samples on cuda, traces) 500 bytes -> 600 bytes (+20.0%), "
        "above the +10% allowed"
    )
    rss = figures(peak=peak(550, source="trainprof.rss", device="cpu"))
    assert not check_gate(base, rss, threshold_pct=10, metric="peak_memory").decided
    missing = check_gate(base, figures(), threshold_pct=10, metric="peak_memory")
    assert not missing.decided and "the new run has no memory figure" in missing.reason


def test_unknown_metrics_and_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric 'speed'; known: step_time, "):
        check_gate(figures(), figures(), threshold_pct=10, metric="speed")
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="percentage of 0 or more"):
            check_gate(figures(), figures(), threshold_pct=bad)


def test_every_step_category_is_a_metric_worse_when_larger() -> None:
    assert set(CATEGORIES) < set(METRICS)
    assert {"step_time", "data_wait", "peak_memory"} < set(METRICS)
    for name in CATEGORIES:
        grew = check_gate(figures(categories={name: 10.0}), figures(categories={name: 12.0}),
                          threshold_pct=10, metric=name)  # fmt: skip
        assert grew.tripped and grew.reason.startswith(f"{name} time per step (traces) ")


def test_the_json_form_is_plain_and_rounded() -> None:
    gate = check_gate(figures([1.0 / 3]), figures([2.0 / 3]), threshold_pct=10).to_dict()
    assert set(gate) == GATE_KEYS
    assert (gate["base"], gate["new"], gate["change_pct"]) == (0.33, 0.67, 100.0)
    assert orjson.loads(orjson.dumps(gate)) == gate


def test_durations_read_the_same_in_the_verdict_and_the_terminal() -> None:
    """One formatting of microseconds (``guards.duration_text``) for the gate and the report."""
    from profiler.analysis.guards import duration_text
    from profiler.export.terminal import _us

    assert [duration_text(us) for us in (0.04, 999.94, 1000.0, 1_234_567.0)] == [
        "0.0 us",
        "999.9 us",
        "1.00 ms",
        "1,234.57 ms",
    ]
    gate = check_gate(figures([2500.0]), figures([900.0]), threshold_pct=0)
    assert gate.reason.startswith(f"mean step time (traces) {_us(2500.0)} -> {_us(900.0)} (")
    assert _us(2500.0) == "2.50 ms" and _us(None) == "-"
