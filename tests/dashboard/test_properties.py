"""Property tests: whatever a run's files hold, every page's layout and its data callbacks
return something Dash can send (possibly the banner) and never raise.

Hypothesis writes malformed trace files (bad gzip, truncated or wrong-shaped JSON, events with
wrong-typed fields and args, huge numbers), ``meta/run.json`` and ``meta/steps.0.jsonl`` into a
temporary root; each example gets a run of its own, so no cache sees an earlier example's file.
"""

from __future__ import annotations

import gzip
import itertools
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from contextvars import copy_context
from pathlib import Path
from typing import Any

import dash
import pytest
from dash._callback_context import context_value
from dash._utils import AttributeDict, to_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.app import create_app
from dashboard.data.runs import read_run_meta, read_steps, run_status, run_version
from tests.dashboard.malformed import PAGES, RUN_JSON, STEPS, TRACE
from tests.dashboard.runs import plain_trace

# Derandomized and small: the same examples every run, well inside 30 s on a loaded machine.
SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` three times in four, else any JSON value: a field of the wrong type."""
    return st.one_of(good, good, good, json_values)


PHASES = ["X", "i", "I", "C", "B", "E", "M", "f", "s", "b", "e"]
CATEGORIES = ["cpu_op", "kernel", "user_annotation", "gpu_memcpy", "gpu_memset",
              "cuda_runtime", "python_function", "cpu_instant_event", "gpu_user_annotation",
              "ac2g", "Trace"]  # fmt: skip
NAMES = ["ProfilerStep#1", "ProfilerStep#2", "aten::mm", "[memory]", "cudaLaunchKernel",
         "nn.Module: model.fc (Linear)", "ncclKernel_AllReduce_RING",
         "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__",
         "Memcpy HtoD (Pageable -> Device)"]  # fmt: skip
ARG_KEYS = ["Input Dims", "External id", "Bytes", "Total Allocated", "Total Reserved",
            "Device Type", "Device Id", "device", "stream", "grid", "block", "correlation",
            "est. achieved occupancy %", "Python id", "Python parent id", "Sequence number",
            "Fwd thread id", "Addr", "name", "labels"]  # fmt: skip
times = st.one_of(
    st.integers(0, 10_000),
    st.floats(0, 10_000),
    st.integers(-(2**66), 2**66),
    st.floats(allow_nan=False, allow_infinity=False),
)
ids = st.integers(0, 3) | st.integers(-(2**64), 2**64)
# What Kineto puts in args: numbers, names, shapes (lists of lists of ints).
arg_values = st.one_of(
    st.integers(-(2**40), 2**40), st.floats(0, 1e12), st.text(max_size=8),
    st.lists(st.lists(st.integers(0, 2**31), max_size=3), max_size=3),
)  # fmt: skip


def _events(wrong: Callable[[st.SearchStrategy[Any]], st.SearchStrategy[Any]]) -> Any:
    """Events whose fields are drawn through ``wrong`` (which may swap in wrong types)."""
    return st.fixed_dictionaries(
        {
            "ph": wrong(st.sampled_from(PHASES)),
            "cat": wrong(st.sampled_from(CATEGORIES)),
            "name": wrong(st.sampled_from(NAMES)),
            "pid": wrong(ids),
            "tid": wrong(ids),
            "ts": wrong(times),
            "dur": wrong(times),
        },
        optional={
            # Args keep their keys' usual spellings; their values may be of any type.
            "args": wrong(
                st.dictionaries(st.sampled_from(ARG_KEYS), wrong(arg_values), max_size=4)
            ),
            "id": wrong(ids),
            "bp": wrong(st.just("e")),
            "s": wrong(st.sampled_from(["t", "p", "g"])),
        },
    )


def _document(wrong: Callable[[st.SearchStrategy[Any]], st.SearchStrategy[Any]]) -> Any:
    return st.fixed_dictionaries(
        {"traceEvents": wrong(st.lists(_events(wrong), min_size=1, max_size=12))},
        optional={
            "schemaVersion": json_values,
            "deviceProperties": wrong(st.lists(st.dictionaries(st.text(max_size=8), json_values))),
            "distributedInfo": wrong(st.fixed_dictionaries({"rank": wrong(ids)})),
            "baseTimeNanoseconds": wrong(st.integers(0, 2**62)),
            "displayTimeUnit": json_values,
            "trainprof": json_values,
        },
    )


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as JavaScript spells them


# Well-typed events with odd values (the analysis reads them: the pages draw odd tables and
# figures), events with fields of the wrong type, JSON of another shape, and plain bytes.
_well_typed = _document(lambda good: good).map(_dumps)
_texts = st.one_of(
    _well_typed,
    _well_typed,
    _well_typed,
    _document(mostly).map(_dumps),
    json_values.map(_dumps),
    st.binary(max_size=64),
)


@st.composite
def trace_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A trace file's name and bytes (see ``_texts``), sometimes cut short; gzip-compressed or
    not, or bad gzip."""
    text = draw(_texts)
    if draw(st.integers(0, 7)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    if draw(st.booleans()):
        return TRACE, text
    packed = gzip.compress(text)
    return TRACE + ".gz", draw(st.sampled_from([packed, packed, packed[: len(packed) // 2], text]))


run_jsons = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "status": mostly(st.sampled_from(["running", "complete", "failed", "degraded"])),
            "heartbeat_unix_s": mostly(st.floats(allow_nan=True, allow_infinity=True)),
            "started_unix_s": mostly(st.floats(allow_nan=True, allow_infinity=True)),
            "host": json_values,
            "pid": mostly(st.integers(-(2**70), 2**70)),
            "environment": mostly(
                st.dictionaries(st.sampled_from(["torch", "device"]), json_values)
            ),
            "degraded": json_values,
            "error": json_values,
            "run_name": json_values,
        },
    ).map(_dumps),
    json_values.map(_dumps),
    st.binary(max_size=32),
)
step_rows = st.fixed_dictionaries(
    {},
    optional={
        "step": mostly(st.integers(-(2**70), 2**70)),
        "dur_us": json_values,
        "data_wait_us": json_values,
        "memory_bytes": json_values,
        "rank": json_values,
    },
)
steps_lines = st.lists(
    st.one_of(step_rows.map(json.dumps), json_values.map(json.dumps), st.text(max_size=16)),
    max_size=6,
)

_run_names = (f"run{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def app_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dash.Dash, Path]]:
    """One app over one root for all examples (an app is slow to build), and its root."""
    root = tmp_path_factory.mktemp("properties") / "traces"
    (root / "plain").mkdir(parents=True)
    (root / "plain" / "plain.pt.trace.json").write_bytes(_dumps(plain_trace()))
    yield create_app(root), root


@pytest.fixture(scope="module", autouse=True)
def no_columnar_cache() -> Iterator[None]:
    """Writing the analysis cache beside every generated file would only slow examples down."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINPROF_CACHE", "0")
        yield


def _page(path: str) -> Any:
    return sys.modules[next(p for p in dash.page_registry.values() if p["path"] == path)["module"]]


def _as_callback(triggered: str, callback: Callable[..., Any], *args: Any) -> Any:
    """``callback(*args)`` as Dash runs it: with ``triggered`` in its context."""

    def run() -> Any:
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": triggered}]))
        return callback(*args)

    return copy_context().run(run)


def every_view(run: str) -> list[Any]:
    """Every page's layout of ``run`` and its data callbacks' answers; each must serialise."""
    views = [_page(path).content(run=run) for path in PAGES if path != "/diff"]
    diff = _page("/diff")
    views += [diff.content(run=run, base="plain"), diff.content(run="plain", base=run)]
    search = f"?run={run}"
    views.append(_page("/operators").regroup(["shape"], search))
    timeline = _page("/timeline")
    zoom = {"xaxis.range": [0.0, 0.5]}
    for file in (TRACE, TRACE + ".gz"):
        for text in (None, "aten"):  # the search box: empty, and a name to highlight
            views.append(
                _as_callback("timeline-file.value", timeline.rezoom, None, file, text, search)
            )
            views.append(
                _as_callback("timeline-zoom.data", timeline.rezoom, zoom, file, text, search)
            )
        for row in (0, 1, 7):
            click = {"points": [{"customdata": row}]}
            views.append(timeline.show_event(click, file, search))
    for view in views:
        to_json(view)  # what Dash sends: a value it cannot encode would be a 500
    return views


def _fresh_run(root: Path) -> Path:
    run = root / next(_run_names)
    run.mkdir()
    return run


@SETTINGS
@given(file=trace_files())
def test_every_page_draws_any_trace_file(app_root: tuple[dash.Dash, Path], file: Any) -> None:
    app, root = app_root
    run = _fresh_run(root)
    name, data = file
    (run / name).write_bytes(data)
    try:
        with app.server.app_context():
            assert every_view(run.name)
    finally:
        shutil.rmtree(run)


@SETTINGS
@given(run_json=run_jsons, steps=steps_lines, half_line=st.booleans())
def test_the_overview_draws_any_run_metadata(
    app_root: tuple[dash.Dash, Path], run_json: bytes, steps: list[str], half_line: bool
) -> None:
    app, root = app_root
    run = _fresh_run(root)
    (run / "meta").mkdir()
    (run / RUN_JSON).write_bytes(run_json)
    text = "\n".join(steps) + ("" if half_line else "\n")
    (run / STEPS).write_text(text, encoding="utf-8", errors="surrogateescape")
    shutil.copy(root / "plain" / "plain.pt.trace.json", run / TRACE)
    try:
        meta, _ = read_run_meta(run)
        rows, _ = read_steps(run)
        assert isinstance(run_status(meta), str | None)
        assert run_version(root, run.name, with_meta=True)
        assert all(type(row["step"]) is int for row in rows)
        with app.server.app_context():
            to_json(_page("/").content(run=run.name))
    finally:
        shutil.rmtree(run)
