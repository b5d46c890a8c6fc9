"""Property: whatever a trace file or a run's side file holds, the readers and the analyses give
a result or the project's error (TraceFormatError, naming the file), never anything else.

Examples are derandomized (the same ones every run, so CI is stable) and few enough for the
module to take well under 30 s on a loaded two-core machine: loads cost milliseconds, a
summary and a diff a few hundred.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from profiler.analysis.diff import diff_runs
from profiler.analysis.summary import trace_summary
from profiler.analysis.table import TraceSet, TraceTable, load, load_trace
from profiler.export.terminal import render_diff, render_summary
from profiler.store.chrome_trace import TraceFormatError
from profiler.store.run_files import read_run_meta, read_steps
from tests.analysis.malformed import JSON_VALUES, broken_document, mangled_text, odd_document

QUICK = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ANALYSED = settings(QUICK, max_examples=12)


def loaded_or_refused(data: bytes, name: str = "t.pt.trace.json.gz") -> TraceTable | None:
    """load_trace of a file holding ``data``: the trace, or None after a TraceFormatError that
    names the file."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(data)
        try:
            return load_trace(path, cache=False)
        except TraceFormatError as exc:
            assert exc.path == str(path) and str(exc).startswith(f"{path}: ")
            assert exc.problem and "\n" not in exc.problem
            return None


@QUICK
@given(mangled_text())
def test_any_bytes_load_or_are_refused(data: bytes) -> None:
    trace = loaded_or_refused(data)
    if trace is not None:
        assert trace.events["ts_us"].is_monotonic_increasing


@QUICK
@given(broken_document())
def test_wrong_types_huge_numbers_and_deep_nesting_load_or_are_refused(data: bytes) -> None:
    loaded_or_refused(data)


@ANALYSED
@given(odd_document())
def test_summary_and_diff_take_whatever_loads(data: bytes) -> None:
    trace = loaded_or_refused(data)
    if trace is None:
        return
    console = Console(file=io.StringIO(), width=120)
    try:
        entry = trace_summary(trace)
    except TraceFormatError as exc:
        assert exc.path == str(trace.path)
    else:  # what `trainprof summary` prints, as JSON and as text
        orjson.dumps({"traces": [entry]})
        console.print(*render_summary({"traces": [entry]}))
    try:
        result = diff_runs(TraceSet(traces=(trace,)), TraceSet(traces=(trace,)))
    except TraceFormatError as exc:
        assert exc.path == str(trace.path)
    else:
        orjson.dumps(result)
        console.print(*render_diff(result))


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an int beyond 64 bits: written as JSON text all the same
        return repr(value).encode()


@QUICK
@given(
    run_json=st.one_of(st.none(), st.binary(max_size=60), JSON_VALUES.map(_dumps)),
    step_lines=st.lists(st.one_of(st.binary(max_size=40), JSON_VALUES.map(_dumps),
                                  st.just(b'{"step": 3, "dur_us": 1.5}')), max_size=6),
    cut=st.booleans(),
)  # fmt: skip
def test_run_side_files_never_fail_their_readers(
    run_json: bytes | None, step_lines: list[bytes], cut: bool
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        run = Path(directory)
        (run / "meta").mkdir()
        if run_json is not None:
            (run / "meta" / "run.json").write_bytes(run_json)
        text = b"\n".join(step_lines) + (b"" if cut else b"\n")
        (run / "meta" / "steps.0.jsonl").write_bytes(text)
        meta = read_run_meta(run)
        assert (meta.meta is None) == (meta.problem is not None or run_json is None)
        steps = read_steps(run)[0]
        assert all(type(r["step"]) is int for r in steps.records)
        assert len(steps.records) + steps.skipped <= len(step_lines) + 1
        assert load(run).traces == ()  # side files are no traces
