"""The fast ways of reading a trace give what the reference ways give: isal's inflate against
zlib's (and zlib's words on a corrupt file), the typed pass against the raw-args pass, the C
field reader against the Python way. (The C scanner, which takes pieces before either pass, is
off here: tests/analysis/test_scanner.py compares it with these.)"""

from __future__ import annotations

import gzip
import json
import threading
import typing
from operator import attrgetter
from pathlib import Path
from types import ModuleType

import msgspec
import numpy as np
import pandas as pd
import pytest

from profiler.analysis import columns, decode, scanned, text
from profiler.analysis.event_args import CompleteArgs
from profiler.analysis.table import load_trace
from profiler.store.chrome_trace import TraceFormatError
from tests.extensions import require_built

TABLES = ("events", "flows", "counters", "memory", "threads", "processes")


@pytest.fixture(autouse=True)
def _without_the_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scanned, "scanner_c", None)


def _events(count: int) -> list[dict[str, object]]:
    """Complete events with args of every sort the tables read, flows, allocator events, and
    counters and names (whose pieces need the raw pass) in the middle."""
    events: list[dict[str, object]] = []
    for i in range(count):
        gpu = i % 3 == 0
        args: dict[str, object] = {"External id": i, "correlation": i + 1}
        if gpu:
            args.update({"stream": 7, "grid": [1, 2, 1], "block": [32, 1, 1], "device": 0})
        else:
            args.update({"Input Dims": [[i % 4, 2]], "Sequence number": i})
        if i % 50 == 7:
            args.update({"Collective name": "allreduce", "In msg nelems": 8, "dtype": "Float"})
        events.append(
            {"ph": "X", "cat": "kernel" if gpu else "cpu_op", "name": f"op{i % 9}", "pid": 1,
             "tid": 2, "ts": 1000 + i, "dur": 3, "args": args}
        )  # fmt: skip
        events.append({"ph": "s", "id": i, "pid": 1, "tid": 2, "ts": 1000 + i, "cat": "ac2g"})
        if i % 10 == 0:
            memory = {"Bytes": 512, "Total Allocated": i, "Device Id": 0}
            events.append(
                {"ph": "i", "name": "[memory]", "pid": 1, "tid": 2, "ts": 1000 + i, "args": memory}
            )
        if count // 2 <= i < count // 2 + 5:
            events.append({"ph": "C", "name": "mem", "pid": 1, "ts": 1000 + i, "args": {"a": i}})
            events.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": i,
                           "args": {"name": f"t{i}"}})  # fmt: skip
    return events


def _write(path: Path, events: list[dict[str, object]]) -> Path:
    path.write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
    return path


def _pieces_of_4k(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(decode, "_READ_BYTES", 1024)


def _assert_same(one, other) -> None:  # noqa: ANN001 - TraceTable both
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(one, name), getattr(other, name), obj=name)
    assert one.event_count == other.event_count


def test_the_typed_pass_gives_the_tables_of_the_raw_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "t.pt.trace.json.gz", _events(600))
    _pieces_of_4k(monkeypatch)
    pieces = list(decode.EventStream(path))
    kinds = {type(piece[0]) for piece in pieces if piece}
    assert kinds == {decode.TypedEvent, decode.Event}  # both passes ran
    typed = load_trace(path, cache=False)
    # A typed pass that refuses every piece: all are decoded the raw way.
    monkeypatch.setattr(decode, "_TYPED_DECODER", msgspec.json.Decoder(list[int]))
    raw = load_trace(path, cache=False)
    _assert_same(typed, raw)
    assert len(typed.counters) == 5 and len(typed.threads) == 5 and len(typed.memory) == 60
    assert (typed.events["collective"] == "allreduce").sum() == 12


def test_args_the_typed_pass_refuses_are_read_or_named_by_the_raw_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pieces_of_4k(monkeypatch)
    events = _events(300)
    # An allocator's key on a complete event is no column: the raw pass reads past it.
    events[0]["args"] = {"External id": 1, "Bytes": "not a number"}  # type: ignore[index]
    loaded = load_trace(_write(tmp_path / "ok.pt.trace.json.gz", events), cache=False)
    assert loaded.events["external_id"].iloc[0] == 1
    at = next(n for n, e in enumerate(events) if n > 100 and e["ph"] == "X")  # a typed piece's
    events[at]["args"] = {"External id": "x"}
    bad = _write(tmp_path / "bad.pt.trace.json.gz", events)
    with pytest.raises(TraceFormatError, match=rf"traceEvents\[{at}\]\.args.External id is a s"):
        load_trace(bad, cache=False)


def test_a_corrupt_gzip_is_said_in_zlib_s_words(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(json.dumps({"traceEvents": _events(3000)}).encode()))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path = tmp_path / "t.pt.trace.json.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(TraceFormatError, match="corrupt or truncated gzip: Error -3 while"):
        load_trace(path, cache=False)


def test_the_text_is_the_same_through_either_inflater(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps({"traceEvents": _events(2000)}).encode()
    path = tmp_path / "t.json.gz"
    half = len(body) // 2
    path.write_bytes(gzip.compress(body[:half]) + gzip.compress(body[half:]))
    fast = b"".join(text.TextReader(path, read_bytes=4096))
    monkeypatch.setattr(text, "_INFLATE", text.zlib)
    assert fast == b"".join(text.TextReader(path, read_bytes=4096)) == body


def _blocks(reader: text.TextReader, ahead_after: int, blocks: list[bytes]) -> list[bytes]:
    """The reader's blocks, put in ``blocks`` as they come, reading ahead from the
    ``ahead_after``-th on."""
    for block in reader:
        blocks.append(block)
        reader.ahead = len(blocks) >= ahead_after
    return blocks


def test_reading_ahead_gives_the_same_blocks_and_errors_in_order(tmp_path: Path) -> None:
    body = json.dumps({"traceEvents": _events(2000)}).encode()
    path = tmp_path / "t.json.gz"
    path.write_bytes(gzip.compress(body))
    plain = list(text.TextReader(path, read_bytes=4096))
    assert _blocks(text.TextReader(path, read_bytes=4096), 2, []) == plain
    assert b"".join(plain) == body and len(plain) > 10
    # Damage past the first blocks: what came before it comes out, then zlib's words on it.
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    seen: list[list[bytes]] = [[], []]
    for ahead_after, blocks in zip((10**9, 2), seen, strict=True):
        with pytest.raises(TraceFormatError, match="corrupt or truncated gzip: Error -3 while"):
            _blocks(text.TextReader(path, read_bytes=4096), ahead_after, blocks)
    assert seen[0] == seen[1] and len(seen[0]) > 2


def test_the_thread_reading_ahead_stops_with_the_reader(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.pt.trace.json.gz", _events(3000))
    reader = text.TextReader(path, read_bytes=4096)
    blocks = iter(reader)
    next(blocks)
    reader.ahead = True
    next(blocks)
    next(blocks)
    assert "trainprof-read-ahead" in {thread.name for thread in threading.enumerate()}
    blocks.close()  # type: ignore[attr-defined]
    assert "trainprof-read-ahead" not in {thread.name for thread in threading.enumerate()}
    # A load that fails part way through the file stops it too (conftest checks no thread is
    # left behind after each test).
    events = _events(3000)
    events[-10]["args"] = {"External id": "not a number"}
    with pytest.raises(TraceFormatError, match="args.External id is a string"):
        load_trace(_write(tmp_path / "bad.pt.trace.json.gz", events), cache=False)


def test_the_typed_pass_refuses_the_phases_whose_args_are_read_whole() -> None:
    typed = set(typing.get_args(decode._TypedPhase))
    assert decode._RAW_ARGS_PHASES.isdisjoint(typed) and {"X", "i", "s", "f"} <= typed
    for phase in decode._RAW_ARGS_PHASES:
        with pytest.raises(msgspec.ValidationError, match=r"\$\[1\]\.ph"):
            decode._TYPED_DECODER.decode(f'[{{"ph": "X"}}, {{"ph": "{phase}"}}]'.encode())


REFERENCE = sorted((Path(__file__).parent.parent / "data" / "hta").glob("*.json.gz"))


def _odd_events() -> list[dict[str, object]]:
    """Values only the Python way reads: labels for ids, ints past 64 bits, and a start
    missing (some of each in complete events, flows and allocator events)."""
    events = _events(60)
    for n, event in enumerate(events[:40]):
        args = typing.cast(dict[str, object], event.get("args", {}))
        odd = n % 8
        if odd == 0:
            event["pid"] = "stream 7"
        elif odd == 1:
            event["tid"] = 2**70
        elif odd == 2 and "External id" in args:
            args["External id"] = 2**64
        elif odd == 3 and "Sequence number" in args:
            args["Sequence number"] = -(2**63)
        elif odd == 4:
            event["dur"] = 2**80
        elif odd == 5:
            del event["ts"]
        elif odd == 6:
            event["ts"] = 1 << 60
    return events


def made_trace(kind: str, directory: Path) -> Path:
    """A made-up trace in ``directory``: "made" (:func:`_events`) or "odd" (:func:`_odd_events`)."""
    return _write(directory / f"{kind}.json.gz", _events(600) if kind == "made" else _odd_events())


@pytest.fixture
def fields_c() -> ModuleType:
    """The C field reader (profiler/analysis/_fields.c)."""
    return require_built(columns.fields_c, "profiler.analysis._fields")


@pytest.mark.usefixtures("fields_c")
@pytest.mark.parametrize("source", [*REFERENCE, "made", "odd"], ids=lambda s: getattr(s, "name", s))
def test_the_c_field_reader_gives_the_tables_of_the_python_way(
    source: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(source, str):
        source = made_trace(source, tmp_path)
        _pieces_of_4k(monkeypatch)
    fast = load_trace(source, cache=False)
    monkeypatch.setattr(columns, "fields_c", None)
    _assert_same(fast, load_trace(source, cache=False))


def test_the_c_field_reader_answers_false_where_the_python_way_must_decide(
    fields_c: ModuleType,
) -> None:
    plain = [CompleteArgs(correlation=n, occupancy=n / 2) for n in range(5)]
    out = np.zeros(5, np.int64)
    assert fields_c.ints(plain, "correlation", out) and out.tolist() == [0, 1, 2, 3, 4]
    floats = np.zeros(5)
    assert fields_c.floats(plain, "occupancy", floats) and floats.tolist() == [0, 0.5, 1, 1.5, 2]
    for odd in (2**63, True, 1.0, "1"):
        assert not fields_c.ints(
            [*plain, CompleteArgs(correlation=odd)], "correlation", np.zeros(6, np.int64)
        )  # type: ignore[arg-type]
    assert not fields_c.floats([*plain, CompleteArgs(occupancy=3)], "occupancy", np.zeros(6))
    with pytest.raises(ValueError, match="out holds"):
        fields_c.ints(plain, "correlation", np.zeros(4, np.int64))
    with pytest.raises(AttributeError):
        fields_c.ints(plain, "no_such_field", out)
    # codes: numbered through the dict's __missing__, as dict.__getitem__ does
    index = columns._Codes()
    codes = np.zeros(5, np.int32)
    assert fields_c.codes([CompleteArgs(dtype=t) for t in "abacb"], "dtype", index, codes)
    assert codes.tolist() == [0, 1, 0, 2, 1] and list(index) == ["a", "b", "c"]
    # differs: by identity first, then by value; NaN defaults compare by identity
    names, defaults = ("correlation", "dtype", "occupancy"), (-1, "", CompleteArgs().occupancy)
    items = [
        CompleteArgs(),
        CompleteArgs(dtype="x"),
        CompleteArgs(correlation=-1),
        CompleteArgs(occupancy=0.0),
    ]
    flags = np.zeros(4, bool)
    fields_c.differs(items, names, defaults, flags)
    getter = attrgetter(*names)
    assert flags.tolist() == [getter(i) != defaults for i in items] == [False, True, False, True]


def test_the_c_field_reader_stops_where_python_code_it_calls_changes_the_items(
    fields_c: ModuleType,
) -> None:
    items = [CompleteArgs(dtype=t) for t in "abc"]

    class Emptying(dict):  # a lookup that empties the list being read
        def __missing__(self, key: object) -> int:
            items.clear()
            self[key] = len(self)
            return self[key]

    with pytest.raises(RuntimeError, match="changed"):
        fields_c.codes(items, "dtype", Emptying(), np.zeros(3, np.int32))

    class Odd:  # a default that cannot be compared (tuples compare their items by ==)
        def __eq__(self, other: object) -> bool:
            raise ValueError("no comparing")

        __hash__ = object.__hash__

    with pytest.raises(ValueError, match="no comparing"):
        fields_c.differs([CompleteArgs()], ("dtype",), (Odd(),), np.zeros(1, bool))
