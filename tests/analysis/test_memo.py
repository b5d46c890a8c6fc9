"""Derived tables are computed once per loaded trace (profiler.analysis.memo.per_trace)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import profiler.analysis.steps as steps_module
from profiler.analysis.kernels import analysis_window_mask
from profiler.analysis.steps import step_table
from profiler.analysis.summary import trace_summary
from profiler.analysis.table import load_trace

SAMPLE = Path(__file__).parents[2] / "tests" / "data" / "hta" / "alexnet.json.gz"


def test_one_summary_computes_each_derived_table_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {}
    for name in ("_host_steps", "_step_costs"):
        inner = getattr(steps_module, name)

        def spy(*args: object, _inner: object = inner, _name: str = name) -> object:
            calls[_name] = calls.get(_name, 0) + 1
            return _inner(*args)  # type: ignore[operator]

        monkeypatch.setattr(steps_module, name, spy)
    trace = load_trace(SAMPLE, cache=False)
    trace_summary(trace)
    trace_summary(trace)
    # step_table (its host steps) and step_breakdown (its costs) once, for all their callers:
    # the breakdown, the GPU figures, the facts.
    assert calls == {"_host_steps": 1, "_step_costs": 1}


def test_results_are_shared_per_trace_and_keyed_by_arguments() -> None:
    trace = load_trace(SAMPLE, cache=False)
    assert step_table(trace) is step_table(trace)
    window = analysis_window_mask(trace)
    assert analysis_window_mask(trace) is window
    analysis_window_mask(trace, include_last_step=True)
    windows = [key for key in trace.derived if key[0].endswith(".analysis_window_mask")]
    assert len(windows) == 2  # one per include_last_step


def test_a_replaced_trace_starts_afresh() -> None:
    trace = load_trace(SAMPLE, cache=False)
    table = step_table(trace)
    other = dataclasses.replace(trace, events=trace.events.head(0))
    assert other.derived == {}
    assert step_table(other) is not table and step_table(other).empty


def test_spelling_an_argument_out_shares_the_result() -> None:
    trace = load_trace(SAMPLE, cache=False)
    analysis_window_mask(trace)
    analysis_window_mask(trace, include_last_step=False)
    assert len(trace.derived) == 1
