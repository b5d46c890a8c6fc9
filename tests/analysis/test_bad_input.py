"""No trace file makes the reader crash: each bad one is one TraceFormatError naming the file.

Wrong JSON types in an event or its args, numbers beyond 64 bits, deep nesting, a corrupt
cache, content the analyses cannot take: the file is named with what is wrong (or, for
numbers no field can mean, read as missing), and the run's other files still load.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from profiler.analysis import build, decode, summary
from profiler.analysis.cache import cache_files
from profiler.analysis.diff import diff_runs
from profiler.analysis.guards import TEXT_LIMIT_ENV, size_text, text_limit
from profiler.analysis.summary import summarize_traces, trace_summary
from profiler.analysis.table import TraceSet, load, load_trace
from profiler.store.chrome_trace import TraceFormatError
from tests.analysis.malformed import TEMPLATES

STEP = {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1,
        "ts": 0, "dur": 1000}  # fmt: skip
KERNEL = {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 10, "dur": 5,
          "args": {"correlation": 1, "stream": 7, "device": 0}}  # fmt: skip
MEMORY_ARGS = {"Bytes": 100, "Total Allocated": 100, "Device Type": 1, "Device Id": 0}
MEMORY = {"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": 1, "ts": 12,
          "args": MEMORY_ARGS}  # fmt: skip


def write(path: Path, document: object) -> Path:
    path.write_bytes(gzip.compress(json.dumps(document).encode()))
    return path


def with_args(event: dict[str, object], **args: object) -> dict[str, object]:
    return {**event, "args": {**event["args"], **args}}  # type: ignore[dict-item]


def problem_of(path: Path) -> str:
    with pytest.raises(TraceFormatError) as raised:
        load_trace(path, cache=False)
    assert str(raised.value) == f"{path}: {raised.value.problem}"
    return raised.value.problem


@pytest.mark.parametrize(
    ("events", "problem"),
    [
        ([STEP, with_args(KERNEL, device="0")],
         "traceEvents[1].args.device is a string, expected an integer"),
        ([STEP, STEP, with_args(MEMORY, Bytes="many")],
         "traceEvents[2].args.Bytes is a string, expected an integer"),
        ([STEP, {**KERNEL, "args": [1, 2]}], "traceEvents[1].args is an array, expected an object"),
        ([STEP, {**MEMORY, "args": "x"}], "traceEvents[1].args is a string, expected an object"),
        ([STEP, with_args(KERNEL, **{"External id": 1.5})],
         "traceEvents[1].args.External id is a number, expected an integer"),
        ([STEP, {**STEP, "ph": 88}], "traceEvents[1].ph is an integer, expected a string"),
        ([STEP, {**STEP, "pid": [1]}],
         "traceEvents[1].pid is an array, expected an integer or a string"),
        ([STEP, "an event?"], "traceEvents[1] is a string, expected an object"),
        ([STEP, None], "traceEvents[1] is null, expected an object"),
    ],
)  # fmt: skip
def test_a_field_of_the_wrong_type_is_named_with_its_event(
    tmp_path: Path, events: list[object], problem: str
) -> None:
    path = write(tmp_path / "t.json.gz", {"traceEvents": events})
    assert problem_of(path) == f"not a Kineto trace: {problem}"


def test_the_event_is_numbered_in_the_whole_file_across_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "CHUNK_BYTES", 300)
    monkeypatch.setattr(decode, "_READ_BYTES", 97)
    events = [{**STEP, "ts": i} for i in range(200)] + [with_args(MEMORY, Bytes="x")]
    events += [{**STEP, "ts": i, "ph": 0 if i == 250 else "X"} for i in range(200, 300)]
    assert problem_of(write(tmp_path / "a.json.gz", {"traceEvents": events})).endswith(
        "traceEvents[200].args.Bytes is a string, expected an integer"
    )
    del events[200]
    assert problem_of(write(tmp_path / "b.json.gz", {"traceEvents": events})).endswith(
        "traceEvents[250].ph is an integer, expected a string"
    )


def test_invalid_json_is_placed_in_the_file_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "CHUNK_BYTES", 300)
    monkeypatch.setattr(decode, "_READ_BYTES", 97)
    text = json.dumps({"traceEvents": [{**STEP, "ts": i} for i in range(100)]})
    at = text.index('"ts": 70') + len('"ts": ')
    text = text[:at] + "NaN" + text[at + 2 :]
    path = tmp_path / "nan.json"
    path.write_text(text)
    assert problem_of(path) == (
        f"invalid or truncated JSON: JSON is malformed: invalid character (byte {at} of the text)"
    )


def test_numbers_beyond_64_bits_are_read_as_missing(tmp_path: Path) -> None:
    huge = 10**30
    events = [
        {**STEP, "pid": huge, "tid": -huge},
        with_args(KERNEL, correlation=huge, stream=2**64, device=2**63),
        {**KERNEL, "tid": "stream 99999999999999999999999", "name": "k2"},
        with_args(MEMORY, Bytes=huge, **{"Total Allocated": 2**63}),
        {"ph": "s", "id": huge, "pid": 1, "tid": 1, "ts": 3, "cat": "ac2g"},
        {"ph": "C", "name": "c", "pid": 1, "ts": 4, "args": {"big": 10**400, "ok": 2}},
        {"ph": "M", "name": "thread_name", "pid": huge, "tid": 1, "args": {"name": huge}},
    ]
    meta = {"distributedInfo": {"rank": huge}, "deviceProperties": [{"id": 0,
            "totalGlobalMem": huge, "computeMajor": huge}, "not an object"]}  # fmt: skip
    trace = load_trace(write(tmp_path / "t.json.gz", {**meta, "traceEvents": events}), cache=False)
    step = trace.events[trace.events["name"] == "ProfilerStep#1"].iloc[0]
    assert (step["pid"], step["tid"]) == (-1, -1)
    kernel = trace.events[trace.events["name"] == "k"].iloc[0]
    assert (kernel["correlation"], kernel["stream"], kernel["device"]) == (-1, -1, -1)
    assert trace.events[trace.events["name"] == "k2"].iloc[0]["tid"] == -1
    assert trace.memory[["bytes", "total_allocated"]].iloc[0].tolist() == [-1, -1]
    assert trace.flows["id"].tolist() == [-1]
    assert trace.counters["series"].tolist() == ["ok"]
    assert trace.threads["thread_name"].tolist() == [""]
    assert trace.rank == 0 and trace.device_properties == [meta["deviceProperties"][0]]
    orjson.dumps(trace_summary(trace))  # every number in it fits JSON's 64 bits


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b'{"traceEvents": [{"ph": "X", "args": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}]}",
         "JSON nested 5004 levels deep in the text from byte 16: too deep to decode"),
        (b'{"deviceProperties": ' + b"[" * 100 + b"]" * 100 + b', "traceEvents": []}',
         "JSON nested 100 levels deep in the deviceProperties key; the limit is 64"),
        (b'{"traceEvents": [], "traceName": ' + b"[" * 70 + b"]" * 70 + b"}",
         "JSON nested 70 levels deep in the traceName key; the limit is 64"),
        (b'{"other": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b', "traceEvents": []}',
         "JSON nested 5001 levels deep in the text from byte 0: too deep to decode"),
        (b"[" * 100_000 + b"]" * 100_000, "traceEvents[0] is an array, expected an object"),
        (b"   \n\t  ", "no JSON: the text is only whitespace"),
        (b'"a string"', "not a Kineto trace: the document is a string, expected an object"),
        (b'{"traceEvents": null}', "no traceEvents array: not a Chrome/Kineto trace"),
    ],
)  # fmt: skip
def test_deep_nesting_and_odd_documents(tmp_path: Path, text: bytes, problem: str) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(text)
    assert problem_of(path).endswith(problem)


def test_deep_nesting_is_refused_before_decoding_where_the_recursion_limit_was_raised(
    tmp_path: Path,
) -> None:
    """msgspec recurses per level: past a raised recursion limit it would overflow the C stack
    (a crash, not an exception), so then every piece is scanned first. In a subprocess, so a
    regression crashes that, not the test run."""
    path = tmp_path / "deep.json"
    path.write_bytes(b'{"traceEvents": [{"args": ' + b"[" * 300_000 + b"]" * 300_000 + b"}]}")
    code = textwrap.dedent(f"""
        import sys
        sys.setrecursionlimit(10**7)
        from profiler.analysis.table import load_trace
        from profiler.store.chrome_trace import TraceFormatError
        try:
            load_trace({str(path)!r}, cache=False)
        except TraceFormatError as exc:
            print(exc.problem)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("levels deep in the text from byte 16; the limit is 512")


def test_bad_files_leave_the_rest_of_the_run_loading(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    good = write(run / "a.pt.trace.json.gz", {"traceEvents": [STEP, KERNEL, MEMORY]})
    bad = {
        "b.pt.trace.json.gz": {"traceEvents": [STEP, with_args(MEMORY, Bytes="x")]},
        "c.pt.trace.json.gz": {"traceEvents": [{**STEP, "pid": 10**30}, {**KERNEL, "ph": 1}]},
        "d.pt.trace.json.gz": {"traceEvents": [STEP], "traceName": [[[[[[[[[[]]]]]]]]]] * 1},
    }
    for name, document in bad.items():
        write(run / name, document)
    (run / "e.pt.trace.json.gz").write_bytes(b"[" * 10_000)
    loaded = load(run, cache=False)
    assert [t.path for t in loaded.traces] == [good, run / "d.pt.trace.json.gz"]
    assert sorted(Path(e.path).name for e in loaded.errors) == [
        "b.pt.trace.json.gz", "c.pt.trace.json.gz", "e.pt.trace.json.gz",
    ]  # fmt: skip


def test_a_cache_that_does_not_hold_the_tables_is_passed_over_and_replaced(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "t.pt.trace.json.gz", {"traceEvents": [STEP, KERNEL, MEMORY]})
    fresh = load_trace(path)  # writes the cache
    events_file = cache_files(path)["events"]
    written = pq.read_table(events_file)
    # The key still matches the trace, but a column is gone: not what this version builds.
    pq.write_table(written.drop(["kind"]), events_file)
    assert "kind" not in pq.read_table(events_file).column_names
    again = load_trace(path)
    assert again.events.equals(fresh.events) and again.device == "cuda"
    assert "kind" in pq.read_table(events_file).column_names  # rewritten from the JSON


def test_an_unexpected_error_while_building_is_said_as_the_file_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "t.json.gz", {"traceEvents": [STEP]})

    def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("a builder bug")

    monkeypatch.setattr(build.TableBuilder, "add", broken)
    assert problem_of(path) == "cannot be read (KeyError: 'a builder bug')"
    monkeypatch.setattr(build.TableBuilder, "add", lambda *_: (_ for _ in ()).throw(MemoryError()))
    assert problem_of(path) == "ran out of memory while loading it"


def test_a_trace_the_analyses_cannot_take_is_one_error_and_the_others_are_summarised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = load_trace(write(tmp_path / "good.json.gz", {"traceEvents": [STEP, KERNEL]}))
    odd = load_trace(write(tmp_path / "odd.json.gz", {"traceEvents": [{**STEP, "name": "odd"}]}))
    real = summary.top_ops

    def top_ops(trace: object, **options: object) -> object:
        if trace is odd:
            raise OverflowError("cannot convert float infinity to integer")
        return real(trace, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(summary, "top_ops", top_ops)
    report, errors = summarize_traces(TraceSet(traces=(good, odd)))
    assert [t["path"] for t in report["traces"]] == [str(good.path)]
    assert [str(e) for e in errors] == [
        f"{odd.path}: cannot be analysed (OverflowError: cannot convert float infinity to integer)"
    ]


def test_diff_names_the_trace_it_cannot_analyse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from profiler.analysis import diff

    good = load_trace(write(tmp_path / "good.json.gz", {"traceEvents": [STEP, KERNEL]}))
    odd = load_trace(write(tmp_path / "odd.json.gz", {"traceEvents": [STEP]}))
    real = diff.step_breakdown
    monkeypatch.setattr(
        diff,
        "step_breakdown",
        lambda t: real(t) if t is good else [][0],  # IndexError
    )
    with pytest.raises(TraceFormatError, match=r"odd\.json\.gz: cannot be analysed \(IndexError"):
        diff_runs(TraceSet(traces=(good,)), TraceSet(traces=(odd,)))


def test_the_text_limit_is_a_keyword_an_environment_variable_or_16_gib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TEXT_LIMIT_ENV, raising=False)
    assert text_limit() == 16 * 1024**3
    monkeypatch.setenv(TEXT_LIMIT_ENV, "512M")
    assert text_limit() == 512 * 1024**2 and text_limit(1000) == 1000
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": TEMPLATES}))
    size = path.stat().st_size
    assert len(load_trace(path, cache=False, max_text_bytes=size).events) > 0
    problem = problem_of_load(path, max_text_bytes=size - 1)
    assert problem == (
        f"more than {size_text(size - 1)} of JSON text: refused "
        f"(set {TEXT_LIMIT_ENV} or load(..., max_text_bytes=) to allow more)"
    )
    monkeypatch.setenv(TEXT_LIMIT_ENV, str(size - 1))
    assert problem_of_load(path) == problem
    monkeypatch.setenv(TEXT_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match="TRAINPROF_MAX_TRACE_BYTES='lots' is not a size"):
        load(path)
    with pytest.raises(ValueError, match="max_text_bytes must be a positive int"):
        load(path, max_text_bytes=0)


def problem_of_load(path: Path, **options: object) -> str:
    with pytest.raises(TraceFormatError) as raised:
        load(path, cache=False, **options)  # type: ignore[arg-type]
    return raised.value.problem


def test_a_document_after_megabytes_of_whitespace_loads_in_a_block_s_memory(
    tmp_path: Path,
) -> None:
    """Whitespace before the document is dropped as it comes, not gathered into the head."""
    import tracemalloc

    path = tmp_path / "t.json.gz"
    document = json.dumps({"schemaVersion": 1, "traceEvents": [STEP, KERNEL]}).encode()
    path.write_bytes(gzip.compress(b" \n" * (16 * 1024**2) + document))
    tracemalloc.start()
    try:
        trace = load_trace(path, cache=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(trace.events) == 2 and trace.meta == {"schemaVersion": 1}
    assert peak < 8 * 1024**2  # of 32 MiB of text
