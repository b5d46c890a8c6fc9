"""Splicing our events into Kineto's output without re-parsing it."""

from __future__ import annotations

import gzip
import json
import math
import random
import re
import zlib
from pathlib import Path

import orjson
import pytest

from profiler.store import chrome_trace, trace_store
from profiler.store.chrome_trace import (
    TraceFormatError,
    backward_starts,
    base_time_ns,
    clock_sync_ts_us,
    find_all,
    splice_kineto_trace,
    splice_parts,
)
from tests.extensions import require_built

# The shape Kineto 2.x writes: pretty-printed, metadata first, trailing keys after the array.
KINETO = b"""{
  "schemaVersion": 1,
  "deviceProperties": [],
  "displayTimeUnit": "ms",
  "baseTimeNanoseconds": 1790857026000000000,
  "traceEvents": [
  {
    "ph": "X", "cat": "user_annotation", "name": "trainprof::clock_sync#2", "pid": 7, "tid": 7,
    "ts": 1000.5, "dur": 2
  },
  {
    "ph": "X", "cat": "user_annotation",
    "name": "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__", "pid": 7, "tid": 7,
    "ts": 1010, "dur": 5
  },
  {
    "ph": "X", "cat": "user_annotation", "name": "ProfilerStep#3", "pid": 7, "tid": 7,
    "ts": 1000, "dur": 50
  }
  ],"traceName": "x.json" }"""


def test_adds_keys_and_events_and_stays_valid_json() -> None:
    event = {
        "ph": "C",
        "name": "trainprof.memory",
        "pid": 7,
        "ts": 1001.0,
        "args": {"rss_bytes": 5},
    }
    out = splice_kineto_trace(
        KINETO,
        top_level={"trainprof": {"run_name": "r"}},
        events=[event],
        distributed_info={"rank": 3, "world_size": 4},
    )
    doc = orjson.loads(out)
    assert doc["trainprof"] == {"run_name": "r"}
    assert doc["distributedInfo"] == {"rank": 3, "world_size": 4}
    assert re.search(rb'"rank":\s+3', out), "HTA's rank pattern needs a space after the colon"
    assert doc["traceEvents"][0] == event
    assert len(doc["traceEvents"]) == 4
    assert doc["schemaVersion"] == 1 and doc["traceName"] == "x.json"


def test_dataloader_annotation_becomes_cpu_op_and_nothing_else_changes() -> None:
    doc = orjson.loads(splice_kineto_trace(KINETO, top_level={}, events=[]))
    cats = {e["name"]: e["cat"] for e in doc["traceEvents"]}
    assert cats == {
        "trainprof::clock_sync#2": "user_annotation",
        "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__": "cpu_op",
        "ProfilerStep#3": "user_annotation",
    }


def test_keeps_existing_distributed_info_and_keys() -> None:
    raw = KINETO.replace(
        b'"schemaVersion": 1,',
        b'"schemaVersion": 1,\n  "distributedInfo": {"backend": "nccl", "rank": 1},',
    )
    out = splice_kineto_trace(
        raw, top_level={"schemaVersion": 99}, events=[], distributed_info={"rank": 0}
    )
    doc = orjson.loads(out)
    assert doc["distributedInfo"] == {"backend": "nccl", "rank": 1}
    assert doc["schemaVersion"] == 1
    assert out.count(b'"distributedInfo"') == 1


def test_trace_name_is_replaced() -> None:
    doc = orjson.loads(
        splice_kineto_trace(KINETO, top_level={}, events=[], trace_name="w.1.pt.trace.json.gz")
    )
    assert doc["traceName"] == "w.1.pt.trace.json.gz"


def test_empty_event_array() -> None:
    raw = b'{"schemaVersion": 1, "traceEvents": [\n  ], "traceName": "t"}'
    events = [
        {"ph": "i", "name": "a", "pid": 1, "ts": 1.0},
        {"ph": "i", "name": "b", "pid": 1, "ts": 2.0},
    ]
    doc = json.loads(splice_kineto_trace(raw, top_level={"k": 1}, events=events))
    assert [e["name"] for e in doc["traceEvents"]] == ["a", "b"]
    assert doc["k"] == 1


def test_not_a_trace_names_the_file() -> None:
    with pytest.raises(TraceFormatError, match=r"^/some/file\.json: no traceEvents array"):
        splice_kineto_trace(b'{"foo": 1}', top_level={}, events=[], source="/some/file.json")


def test_base_time_and_clock_marker() -> None:
    assert base_time_ns(KINETO) == 1790857026000000000
    assert clock_sync_ts_us(KINETO, "trainprof::clock_sync#2") == 1000.5
    assert clock_sync_ts_us(KINETO, "trainprof::clock_sync#1") is None
    raw = b'{"traceEvents": []}'
    assert base_time_ns(raw) == 0
    assert clock_sync_ts_us(raw) is None


def test_ranges_recorded_as_ops_become_annotations() -> None:
    """Module ranges recorded the cheap way (cpu_op) are written as user_annotation."""
    op = b"""  {
    "ph": "X",
    "cat": "cpu_op",
    "name": "nn.Module: %s (Linear)", "pid": 7, "tid": 7,
    "ts": 1001, "dur": 1
  },
"""
    raw = KINETO.replace(b'"traceEvents": [\n', b'"traceEvents": [\n' + op % b"0" + op % b"fc")
    parts = splice_parts(
        raw, top_level={}, events=[], trace_name="t.gz", annotations=("nn.Module: ",)
    )
    out = b"".join(parts)
    assert out == splice_kineto_trace(
        raw, top_level={}, events=[], trace_name="t.gz", annotations=("nn.Module: ",)
    )
    cats = {e["name"]: e["cat"] for e in orjson.loads(out)["traceEvents"]}
    assert cats["nn.Module: 0 (Linear)"] == cats["nn.Module: fc (Linear)"] == "user_annotation"
    assert cats["enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__"] == "cpu_op"
    assert cats["ProfilerStep#3"] == "user_annotation"
    # Without the option nothing is relabelled; other cpu_op events never are.
    plain = orjson.loads(splice_kineto_trace(raw, top_level={}, events=[]))
    assert {e["cat"] for e in plain["traceEvents"] if e["name"].startswith("nn.")} == {"cpu_op"}


@pytest.mark.parametrize(
    "needle",
    [b"nn.Module: ", b"enumerate(DataLoader)#", b"#", b"MM", b"plain needle", b"aMa"],
)
def test_find_all_finds_what_a_literal_regex_finds(needle: bytes) -> None:
    rng = random.Random(needle)
    # Text made of the needle's own pieces, so copies, near misses, overlaps and runs of its
    # anchor byte ("#", "M") all occur, past the point where the anchor gives way to plain finds.
    pieces = [needle, needle[:-1], needle[1:], b"#", b"M", b"MMM", b'", "', b" ", b"x" * 7]
    text = b"".join(rng.choice(pieces) for _ in range(4000))
    expected = [m.start() for m in re.finditer(re.escape(needle), text)]
    assert expected, "the text holds copies of the needle"
    assert list(find_all(text, needle)) == expected
    start, end = len(text) // 3, 2 * len(text) // 3
    window = [start + m.start() for m in re.finditer(re.escape(needle), text[start:end])]
    assert list(find_all(text, needle, start, end)) == window


def test_find_all_goes_on_with_plain_finds_where_its_anchor_is_common() -> None:
    # The false hits on "#" it allows, then one more just before a copy: the plain finds start
    # right after that one.
    text = b"#y" * chrome_trace._ANCHOR_MISSES + b"##x#" + b"#y" * 10 + b"#x#"
    assert list(find_all(text, b"#x#")) == [m.start() for m in re.finditer(b"#x#", text)]
    assert len(list(find_all(text, b"#x#"))) == 2


# Kineto's layouts of the engine's per-node events: torch 2.13's, one field a line, and 2022's.
EVALUATE = b"""{"traceEvents": [
  {
    "ph": "X",
    "cat": "cpu_op",
    "name": "autograd::engine::evaluate_function: AddmmBackward0",
    "pid": 7,
    "tid": 7,
    "ts": 5734808575226.523,
    "dur": 18.418
    ,
    "args": {
      "External id": 127,"Record function id": 0, "Sequence number": 77, "Fwd thread id": 1
    }
  },
  {
    "ph": "X", "cat": "cpu_op", "name": "AddmmBackward0", "pid": 7, "tid": 7,
    "ts": 5734808575227.0, "dur": 3, "args": {"Sequence number": 76}
  },
  {
    "ph": "X", "cat": "cpu_op",
    "name": "autograd::engine::evaluate_function: torch::autograd::AccumulateGrad", "pid": 7,
    "tid": 7, "ts": 5734808575245, "dur": 2, "args": {"External id": 128}
  },
  {
    "ph": "X", "cat": "cpu_op", "name": "autograd::engine::evaluate_function: ReluBackward0",
    "pid": 7, "tid": 7, "ts": 5734808575250, "dur": 4,
    "args": {"Sequence number": 76, "Fwd thread id": 1}
  },
  {
    "ph": "X", "cat": "cpu_op", "name": "autograd::engine::evaluate_function: MulBackward0",
    "pid": 7, "tid": 7, "ts": 5734808575260, "dur": 4, "args": {"Sequence number": 75}
  },
  {
    "ph": "X", "cat": "cpu_op", "name": "autograd::engine::evaluate_function: ReluBackward0",
    "pid": 7, "tid": 7, "ts": 5734808575290, "dur": 4, "args": {"Sequence number": 76}
  }
]}"""


@pytest.fixture(params=["c", "python"])
def scan_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """backward_starts by the C scan (which CI must have built) and by the Python way."""
    if request.param == "python":
        monkeypatch.setattr(chrome_trace, "scan_c", None)
    else:
        require_built(chrome_trace.scan_c, "profiler.store._scan")
    return str(request.param)


@pytest.mark.usefixtures("scan_way")
def test_backward_starts_reads_the_engines_events_in_place() -> None:
    starts = backward_starts(EVALUATE, {77, 76, 12})
    # The op itself (76 too) is not the engine's event; 75 is not wanted; 76's first start counts.
    assert starts == {77: 5734808575226.523, 76: 5734808575250.0}
    assert backward_starts(EVALUATE, set()) == {}


@pytest.mark.usefixtures("scan_way")
def test_backward_starts_reads_the_fields_as_its_patterns_do() -> None:
    def engine(args: bytes, ts: bytes = b"12.5") -> bytes:
        head = b'{"name": "autograd::engine::evaluate_function: XBackward0", "ts": '
        return head + ts + b', "args": {' + args + b"}}"

    # whitespace of every sort around the colon; a key whose colon is missing, then a good one
    assert backward_starts(engine(b'"Sequence number" \t\n: \r\x0b\x0c 7'), [7]) == {7: 12.5}
    assert backward_starts(engine(b'"Sequence number" 5, "Sequence number": 8'), [5, 8]) == {
        8: 12.5
    }
    # leading zeros, and a number only partly digits; no "ts", or one with two dots
    assert backward_starts(engine(b'"Sequence number": 0009x'), (9,)) == {9: 12.5}
    assert backward_starts(engine(b'"Sequence number": 3', ts=b'"x"'), {3}) == {}
    with pytest.raises(ValueError):
        backward_starts(engine(b'"Sequence number": 3', ts=b"1.2.3"), {3})
    # an event cut before its closing brace ends the scan; the number is read before the brace
    assert backward_starts(engine(b'"Sequence number": 4')[:-2], {4}) == {}
    assert backward_starts(engine(b'"x": {}, "Sequence number": 4'), {4}) == {}
    assert backward_starts(bytearray(engine(b'"Sequence number": 4')), frozenset({4})) == {4: 12.5}
    big = 2**70
    assert backward_starts(engine(b'"Sequence number": %d' % big), {big}) == {big: 12.5}


@pytest.mark.usefixtures("scan_way")
@pytest.mark.parametrize("name", ["nccl.json.gz", "two_ranks_rank-1.json.gz", "amd_mi250.json.gz"])
def test_backward_starts_agrees_with_parsing_real_traces(reference_traces: Path, name: str) -> None:
    raw = gzip.decompress((reference_traces / "hta" / name).read_bytes())
    expected: dict[int, float] = {}
    for event in orjson.loads(raw)["traceEvents"]:
        number = event.get("args", {}).get("Sequence number")
        if number is not None and event.get("name", "").startswith(
            "autograd::engine::evaluate_function: "
        ):
            expected.setdefault(number, float(event["ts"]))
    assert len(expected) > 3
    assert backward_starts(raw, set(expected)) == expected
    some = set(sorted(expected)[::3])
    assert backward_starts(raw, some) == {n: ts for n, ts in expected.items() if n in some}


# Kineto's own layout of a module range recorded as an op (one key a line).
OP_AS_KINETO_WRITES = b"""  {
    "ph": "X",
    "cat": "cpu_op",
    "name": "nn.Module: %s (Linear)",
    "pid": 7,
    "tid": 7,
    "ts": 1001.000,
    "dur": 1.000
  },
"""


@pytest.mark.parametrize("layout", ["kineto", "no whitespace"])
def test_relabelling_rewrites_the_buffer_in_place_where_kineto_left_room(layout: str) -> None:
    ops = OP_AS_KINETO_WRITES % b"0" + OP_AS_KINETO_WRITES % b"fc"
    if layout == "no whitespace":  # no room for the longer category: a relabelled copy
        ops = orjson.dumps(orjson.loads(b"[" + ops.rstrip(b",\n") + b"]"))[1:-1] + b",\n"
    raw = KINETO.replace(b'"traceEvents": [\n', b'"traceEvents": [\n' + ops)
    buffer = bytearray(raw)
    out = b"".join(splice_parts(buffer, top_level={}, events=[], annotations=("nn.Module: ",)))
    in_place = b'"cat": "user_annotation", "name": "nn.Module: fc' in buffer
    assert in_place == (layout == "kineto") and len(buffer) == len(raw)
    events = orjson.loads(out)["traceEvents"]
    assert events == [
        {**event, "cat": "user_annotation" if event["name"].startswith("nn.") else event["cat"]}
        for event in orjson.loads(splice_kineto_trace(raw, top_level={}, events=[]))["traceEvents"]
    ]
    assert [e["cat"] for e in events[:2]] == ["user_annotation", "user_annotation"]
    assert events[3]["cat"] == "cpu_op"  # the DataLoader wait, rewritten in place too


@pytest.mark.parametrize("name", ["nccl.json.gz", "two_ranks_rank-1.json.gz"])
def test_splicing_real_traces_changes_only_categories(reference_traces: Path, name: str) -> None:
    raw = gzip.decompress((reference_traces / "hta" / name).read_bytes())
    ours = {"ph": "C", "name": "trainprof.memory", "pid": 1, "ts": 1.0, "args": {"rss_bytes": 1}}
    prefix = "aten::"  # stands for our module ranges: many cpu_op ranges with one prefix
    out = splice_kineto_trace(
        bytearray(raw), top_level={"k": 1}, events=[ours], annotations=(prefix,)
    )
    before, after = orjson.loads(raw)["traceEvents"], orjson.loads(out)["traceEvents"]
    assert after[0] == ours and len(after) == len(before) + 1
    relabelled = 0
    for old, new in zip(before, after[1:], strict=True):
        if old.get("cat") == "cpu_op" and old.get("name", "").startswith(prefix):
            old, relabelled = {**old, "cat": "user_annotation"}, relabelled + 1
        assert new == old
    assert relabelled > 10


@pytest.mark.parametrize("plain_zlib", [False, True], ids=["default deflate", "zlib"])
@pytest.mark.parametrize("threads", [True, False], ids=["by the worker", "by the writer"])
def test_the_tail_deflated_ahead_completes_the_same_document(
    threads: bool, plain_zlib: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace_store, "_spare_cpu", lambda: threads)
    if plain_zlib:  # no python-isal: no CRC combining, the tail's CRC is taken in turn
        monkeypatch.setattr(trace_store, "_deflate_module", lambda: zlib)
    raw = KINETO.replace(b'"traceEvents": [\n', b'"traceEvents": [\n' + OP_AS_KINETO_WRITES * 50)
    event = {"ph": "i", "name": "ours", "pid": 1, "ts": 1.0}
    cut = chrome_trace.Splice(bytearray(raw), top_level={"k": 1}, trace_name="t.gz")
    tail = trace_store.DeflateAhead(cut.after)
    if threads:  # the worker runs the job unasked; then the writer cannot take it back
        assert tail._done.wait(timeout=60) and not tail.run()
    packed = trace_store.gzip_bytes([*cut.before, cut.encode([event])], tail=tail)
    assert gzip.decompress(packed) == splice_kineto_trace(
        raw, top_level={"k": 1}, events=[event], trace_name="t.gz"
    )
    assert zlib.decompress(packed, 16 + zlib.MAX_WBITS)  # one member: zlib alone reads it


def test_a_job_is_run_once_by_whoever_takes_it_first() -> None:
    """On a busy machine the thread may not run before the writer needs the result: the writer
    deflates the pieces itself instead of waiting, and the thread, when it comes, does not."""
    parts = [b"abc" * 1000, memoryview(b"xyz" * 1000)]
    tail = trace_store.DeflateAhead(parts)
    packed = trace_store.gzip_bytes([b"head,"], tail=tail)
    assert gzip.decompress(packed) == b"head," + b"abc" * 1000 + b"xyz" * 1000
    assert tail._done.is_set() and not tail.run()


@pytest.mark.parametrize(
    ("cpus", "load", "runnable", "spare"),
    [
        (2, 0.3, 1, True),
        (2, 1.8, 3, False),
        (2, 1.8, 1, True),  # a burst of work just ended: the average still says busy
        (2, 0.3, 3, True),  # one instant: the average says the CPU is mostly free
        (2, 1.8, math.inf, False),  # no /proc/loadavg: the average alone
        (1, 0.0, 1, False),
        (8, 6.0, 9, True),
        (8, 7.8, 9, False),
    ],
)
def test_the_tail_is_deflated_ahead_only_with_a_cpu_to_spare(
    cpus: int, load: float, runnable: float, spare: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's own busy thread counts in the load: one CPU must be left."""
    monkeypatch.setattr(trace_store, "_usable_cpus", lambda: cpus)
    monkeypatch.setattr(trace_store.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(trace_store, "_runnable_now", lambda: runnable)
    assert trace_store._spare_cpu() is spare


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="Linux's /proc/loadavg")
def test_the_runnable_count_includes_the_thread_that_reads_it() -> None:
    assert 1 <= trace_store._runnable_now() < math.inf
