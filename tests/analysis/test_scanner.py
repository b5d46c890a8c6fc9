"""The C scanner (profiler/analysis/_scanner.c) gives what msgspec's passes give, or nothing.

Where it takes a piece, its columns hold the values msgspec's structs would; where msgspec would
refuse the text, or decide anything the scanner does not, it answers None and the piece goes to
msgspec. Whole loads are compared both ways on every reference trace; single pieces on edge
cases; and a seeded fuzzer mutates a piece thousands of ways and checks that the scanner never
accepts what msgspec refuses, nor reads a value differently.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import numpy as np
import pytest

from profiler.analysis import columns, decode, scanned
from profiler.analysis.columns import (
    GPU_RARE_DEFAULTS,
    GPU_RARE_FIELDS,
    HOST_RARE_DEFAULTS,
    HOST_RARE_FIELDS,
    int_id,
)
from profiler.analysis.event_args import EventArgs
from profiler.analysis.guards import MAX_EVENT_DEPTH, nesting_depth
from profiler.analysis.table import load_trace
from profiler.store.chrome_trace import TraceFormatError
from tests.analysis.test_decode_fast import (
    REFERENCE,
    _assert_same,
    _events,
    _pieces_of_4k,
    _write,
    made_trace,
)
from tests.extensions import require_built

ENVELOPE = ("ph", "cat", "name", "pid", "tid", "ts", "dur", "id")
_ARGS_DECODER = msgspec.json.Decoder(EventArgs)


@pytest.fixture
def scanner() -> ModuleType:
    return require_built(scanned.scanner_c, "profiler.analysis._scanner")


def _scan(events: list[Any] | bytes) -> scanned.ScannedPiece | None:
    text = events if isinstance(events, bytes) else json.dumps(events).encode()
    return scanned.scan(decode.LAYOUT, text)


def _reference(text: bytes) -> list[dict[str, Any]] | None:
    """What msgspec reads of a piece, per event: the envelope, and a complete event's args;
    None where it refuses the piece (as the load would: a complete event's args must be
    EventArgs', other events' args are never read)."""
    try:
        events = decode.EVENTS_DECODER.decode(text)
        found = []
        for event in events:
            values = {name: getattr(event, name) for name in ENVELOPE}
            values["pid"], values["tid"], values["id"] = map(
                int_id, (event.pid, event.tid, event.id)
            )
            if event.ph == "X":
                args = _ARGS_DECODER.decode(event.args)
                values.update({name: getattr(args, name) for name in decode.LAYOUT.names[8:]})
                values["stream"] = int_id(args.stream)
            found.append(values)
        return found
    except msgspec.DecodeError:
        return None


def _read(piece: scanned.ScannedPiece) -> list[dict[str, Any]]:
    """The piece's values per event, as :func:`_reference` has them."""
    columns = {}
    for name in decode.LAYOUT.names:
        kind = decode.LAYOUT.kinds[name]
        if kind == scanned.RAW:
            columns[name] = [msgspec.Raw(text) for text in piece.texts(name)]
        elif kind == scanned.STR:
            columns[name] = piece.texts(name)
        else:
            columns[name] = piece.column(name).tolist()
    rows = []
    for row in range(len(piece)):
        values = {name: columns[name][row] for name in ENVELOPE}
        if values["ph"] == "X":
            values.update({name: columns[name][row] for name in decode.LAYOUT.names[8:]})
        rows.append(values)
    return rows


def _same_value(one: Any, other: Any) -> bool:
    if isinstance(one, msgspec.Raw) or isinstance(other, msgspec.Raw):
        return bytes(one) == bytes(other)
    if isinstance(one, float) and isinstance(other, float):
        if math.isnan(one) or math.isnan(other):
            return math.isnan(one) and math.isnan(other)
        return one == other and math.copysign(1, one) == math.copysign(1, other)
    return type(one) is type(other) and one == other


def _assert_agrees(text: bytes) -> bool:
    """The scanner either refuses ``text`` or reads what msgspec does; returns whether it took
    it. It never takes what msgspec refuses."""
    piece = scanned.scan(decode.LAYOUT, text)
    if piece is None:
        return False
    expected = _reference(text)
    assert expected is not None, f"the scanner took what msgspec refuses: {text!r}"
    got = _read(piece)
    assert len(got) == len(expected)
    for row, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        for name, value in theirs.items():
            assert _same_value(mine[name], value), (row, name, mine[name], value, text)
    return True


def _count_scans(monkeypatch: pytest.MonkeyPatch) -> Counter[bool]:
    """How many pieces the scanner takes (True) and leaves (False) from now on."""
    tries = Counter[bool]()
    real = scanned.scan

    def counting(layout: scanned.Layout, text: Any) -> scanned.ScannedPiece | None:
        piece = real(layout, text)
        tries[piece is not None] += 1
        return piece

    monkeypatch.setattr(scanned, "scan", counting)
    return tries


@pytest.mark.usefixtures("scanner")
@pytest.mark.parametrize("source", [*REFERENCE, "made", "odd"], ids=lambda s: getattr(s, "name", s))
def test_a_load_gives_the_same_tables_with_the_scanner_as_without(
    source: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(source, str):
        source = made_trace(source, tmp_path)
    _pieces_of_4k(monkeypatch)  # every trace in many pieces, each a scan
    taken = _count_scans(monkeypatch)
    fast = load_trace(source, cache=False)
    assert taken[True] >= 1  # the scanner did take pieces of this trace
    monkeypatch.setattr(scanned, "scanner_c", None)
    _assert_same(fast, load_trace(source, cache=False))


DROP = object()


def _piece(**changes: Any) -> list[dict[str, Any]]:
    """A complete event with args of every kind, a flow and a counter; ``changes`` replace
    (or, as DROP, drop) the complete event's keys, ``args__KEY`` its args'."""
    args: dict[str, Any] = {
        "External id": 7, "correlation": 8, "stream": 7, "device": 0, "grid": [1, 2, 1],
        "Input Dims": [[2, 3], []], "est. achieved occupancy %": 50.5, "dtype": "Float",
        "Trace name": "PyTorch Profiler", "Call stack": "a.py(1): f\nb.py(2): g",
    }  # fmt: skip
    event: dict[str, Any] = {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7,
                             "ts": 1661203462598738.5, "dur": 19, "args": args}  # fmt: skip
    for key, value in changes.items():
        target, key = (args, key[6:]) if key.startswith("args__") else (event, key)
        if value is DROP:
            target.pop(key, None)
        else:
            target[key] = value
    flow = {"ph": "f", "id": 3, "pid": 0, "tid": "stream 7", "ts": 5, "cat": "ac2g", "bp": "e"}
    counter = {"ph": "C", "name": "mem", "pid": 0, "ts": 6, "args": {"device": "cuda:0"}}
    return [event, flow, counter]


@pytest.mark.usefixtures("scanner")
@pytest.mark.parametrize(
    "text",
    [
        json.dumps(_piece()).encode(),
        json.dumps(_piece(), indent=4).encode(),  # Kineto's layout: newlines and indents
        b" [ ] ",
        b'[{"ph":"X","ts":-0,"dur":-0.0,"args":{}}]',  # -0 is an int: 0.0; -0.0 stays
        json.dumps(_piece(ts=1e300, dur=2.5e-7, name="é€😀 ü"), ensure_ascii=False).encode(),
        json.dumps(_piece(ts=2**80, dur=12345678901234567890.123)).encode(),  # slow floats
        json.dumps(_piece(tid=None, id=None, pid="rank 3", args__stream="stream 9")).encode(),
        json.dumps(_piece(pid="7x", tid=-(2**63), args__seq=2**63 - 1)).encode(),
        json.dumps(_piece(args=DROP, cat=DROP)).encode(),  # no args, no cat: the defaults
        json.dumps(_piece(args__grid="text", args__block={"a": [1, {"b": None}]})).encode(),
        json.dumps(_piece(**{"args__Call stack": 'esc \\ " \n \u00e9 \u2028'})).encode(),
    ],
    ids=[
        "compact",
        "indented",
        "empty",
        "zeros",
        "floats",
        "big",
        "labels",
        "edges",
        "defaults",
        "raw values",
        "escapes skipped",
    ],  # fmt: skip
)
def test_plain_pieces_are_read_as_msgspec_reads_them(text: bytes) -> None:
    assert _assert_agrees(text)


@pytest.mark.usefixtures("scanner")
@pytest.mark.parametrize(
    "text",
    [
        json.dumps(_piece(name='say "hi"')).encode(),  # an escape in a string the tables read
        json.dumps(_piece(args__correlation=1.5)).encode(),  # a float for an int
        json.dumps(_piece(args__correlation=2**64)).encode(),  # an int past int64
        json.dumps(_piece(args__dtype=3)).encode(),
        json.dumps(_piece(args=[1])).encode(),  # args not an object
        json.dumps(_piece(ts="12")).encode(),  # the envelope: checked on every event
        json.dumps(_piece(pid=None)).encode(),
        json.dumps(_piece(tid=1.0)).encode(),
        json.dumps(_piece(ts=1e400)).encode().replace(b"Infinity", b"1e400"),
        b'[{"ph":"X","ph":"X"}]',  # a key twice
        b'[{"ph":"X"},]',  # a trailing comma
        b'[{"ph":"X"}] x',  # text after the array
        b'[{"ph":"X","ts":01}]',  # a leading zero
        b'[{"ph":"X","args":{"k":"\x01"}}]',  # a control character
        b'[{"ph":"X","args":{"k":"\xff"}}]',  # not UTF-8
        b'[{"ph":"X","args":{"k":"\\ud800"}}]',  # a lone surrogate
        b'[{"ph":"X","args":{"k":' + b"[" * 70 + b"]" * 70 + b"}}]",  # deeper than it goes
        b"[1]",  # an event that is no object
        b'[{"ph":"X"',  # cut short
    ],
)
def test_what_the_scanner_cannot_decide_is_left_to_msgspec(text: bytes) -> None:
    assert _scan(text) is None


@pytest.mark.usefixtures("scanner")
def test_nesting_the_scanner_refuses_is_within_the_guard_msgspec_s_pieces_get() -> None:
    # A piece is scanned without the depth guard first: what nests deeper than the scanner
    # goes to msgspec's path, which guards it.
    deep = b'[{"ph":"X","args":{"k":' + b"[" * 70 + b"]" * 70 + b"}}]"
    assert _scan(deep) is None and nesting_depth(deep) < MAX_EVENT_DEPTH


@pytest.mark.usefixtures("scanner")
def test_args_of_other_types_are_passed_over_on_events_whose_args_are_not_read() -> None:
    events = _piece()
    events[1]["args"] = {"stream": [1], "correlation": "x"}  # a flow's args: never read
    piece = _scan(events)
    assert piece is not None and len(piece) == 3
    events[0]["args"]["correlation"] = "x"  # a complete event's: read, so msgspec decides
    assert _scan(events) is None


@pytest.mark.usefixtures("scanner")
def test_an_allocator_event_s_args_are_read_so_other_types_go_to_msgspec() -> None:
    memory = {"ph": "i", "name": "[memory]", "pid": 1, "ts": 2, "args": {"Bytes": 512}}
    other = {"ph": "i", "name": "mark", "pid": 1, "ts": 3, "args": {"Bytes": "many"}}
    piece = _scan([memory, other])
    assert piece is not None and piece.column("alloc_bytes").tolist() == [512, 0]
    assert _scan([{**memory, "args": {"Bytes": "many"}}, other]) is None
    assert _scan([{**memory, "ph": "I", "args": {"Device Id": 1.5}}]) is None


def _decimal(value: int, point: int) -> str:
    digits = str(value).rjust(point + 1, "0")
    return f"{digits[:-point]}.{digits[-point:]}" if point else f"{digits}.0"


@pytest.mark.usefixtures("scanner")
def test_times_of_up_to_19_digits_are_the_floats_python_reads() -> None:
    rng = random.Random(3)
    texts = [_decimal(rng.randrange(10**19), rng.randint(0, 19)) for _ in range(20000)]
    texts += [_decimal(rng.randrange(10**15, 10**17), 3) for _ in range(20000)]  # Kineto's
    # Halfway between two doubles, which round to the even one: 2**53 + odd, 2**54 + 2 * odd.
    texts += [_decimal(2**53 + n, 0) for n in range(1, 40, 2)]
    texts += [_decimal((2**54 + 2 * n) * 100, 2) for n in range(1, 40, 2)]
    texts += ["-" + text for text in texts[::7]] + ["0.000", "-0.0", "00.5"[1:], "1e5", "2.5E-3"]
    events = b",".join(b'{"ph":"X","ts":%s}' % text.encode() for text in texts)
    piece = _scan(b"[" + events + b"]")
    assert piece is not None
    got, want = piece.column("ts"), np.array([float(text) for text in texts])
    assert got.tolist() == want.tolist()
    assert (np.signbit(got) == np.signbit(want)).all()


_MUTATIONS = b'{}[]",:0123456789-.eE+ \\\nnulltrue\x00\xc3\xa9\xff'


@pytest.mark.usefixtures("scanner")
def test_a_thousand_mutated_pieces_are_refused_or_read_as_msgspec_reads_them() -> None:
    rng = random.Random(17)
    base = json.dumps(_piece() + _piece(name="relu", args__seq=4), separators=(",", ":")).encode()
    taken = 0
    for _ in range(3000):
        text = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text))
            what = rng.random()
            if what < 0.4:
                text[at] = rng.choice(_MUTATIONS)
            elif what < 0.7:
                text.insert(at, rng.choice(_MUTATIONS))
            else:
                del text[at]
        taken += _assert_agrees(bytes(text))
    assert 100 < taken < 3000  # it took some, and refused some


@pytest.mark.usefixtures("scanner")
def test_an_allocator_event_s_bad_args_are_named_as_without_the_scanner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pieces_of_4k(monkeypatch)
    events = _events(300)
    at = next(n for n, e in enumerate(events) if n > 100 and e.get("name") == "[memory]")
    events[at]["args"] = {"Bytes": "many"}
    path = _write(tmp_path / "bad.pt.trace.json.gz", events)
    with pytest.raises(TraceFormatError, match=rf"traceEvents\[{at}\]\.args.Bytes is a s") as one:
        load_trace(path, cache=False)
    monkeypatch.setattr(scanned, "scanner_c", None)
    with pytest.raises(TraceFormatError) as other:
        load_trace(path, cache=False)
    assert str(one.value) == str(other.value)


def test_the_scanner_s_layout_is_the_typed_pass_s_fields() -> None:
    fields = {f.name: f for f in msgspec.structs.fields(decode.TypedEvent)}
    arg_fields = msgspec.structs.fields(EventArgs)
    assert decode.LAYOUT.names == [n for n in fields if n != "args"] + [f.name for f in arg_fields]
    keys = [spec[0].decode() for spec in decode.LAYOUT.spec]
    assert keys == [f.encode_name for f in fields.values()]
    args_spec = next(spec for spec in decode.LAYOUT.spec if spec[1] == scanned.ARGS)[3]
    assert [spec[0].decode() for spec in args_spec] == [f.encode_name for f in arg_fields]
    with pytest.raises(TypeError, match="cannot read a field of type"):
        scanned.Layout(msgspec.defstruct("Odd", [("x", list[int])]))


@pytest.mark.usefixtures("scanner")
def test_a_file_whose_pieces_the_scanner_refuses_stops_being_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pieces_of_4k(monkeypatch)
    events = _events(600)
    for event in events:
        event["name"] = f'"{event.get("name", "")}"'  # an escape in every name
    tries = _count_scans(monkeypatch)
    table = load_trace(_write(tmp_path / "t.pt.trace.json.gz", events), cache=False)
    assert tries == {False: 4}  # four tries, then msgspec alone
    assert table.events["name"].iloc[0].startswith('"op')


@pytest.mark.usefixtures("scanner")
def test_number_looks_each_value_up_once_in_order_of_first_appearance() -> None:
    looked: list[str] = []

    class Index(dict[str, int]):
        def __missing__(self, key: str) -> int:
            looked.append(key)
            code = self[key] = len(self) + 10
            return code

    codes = np.array([2, 0, 2, 1, 0], np.int32)
    out = np.empty(5, np.int32)
    mapping = np.full(3, -1, np.int32)
    scanned.scanner_c.number(codes, ["a", "b", "c"], Index(), mapping, out)
    assert looked == ["c", "a", "b"] and out.tolist() == [10, 11, 10, 12, 11]
    with pytest.raises(IndexError):
        scanned.scanner_c.number(np.array([5], np.int32), ["a"], Index(), np.full(1, -1, np.int32),
                                 np.empty(1, np.int32))  # fmt: skip


@pytest.mark.usefixtures("scanner")
def test_which_events_have_a_rare_arg_is_what_the_structs_say() -> None:
    events = [_piece()[0], _piece(args__stream="stream 3")[0]]  # complete events only
    rare = [{}, {"stream": -1}, {"stream": 7}, {"Collective name": ""}, {"In msg nelems": 4},
            {"Input dims": [[1]]}, {"external id": -1}, {"external id": 3, "dtype": "Float"},
            {"Sequence number": 2}, {"Fwd thread id": -1}]  # fmt: skip
    for n, extra in enumerate(rare):
        events.append({"ph": "X", "name": f"op{n}", "ts": n, "args": {"External id": n, **extra}})
    text = json.dumps(events).encode()
    piece = _scan(text)
    assert piece is not None
    structs = [_ARGS_DECODER.decode(event.args) for event in decode.EVENTS_DECODER.decode(text)]
    for fields, defaults in ((HOST_RARE_FIELDS, HOST_RARE_DEFAULTS),
                             (GPU_RARE_FIELDS, GPU_RARE_DEFAULTS)):  # fmt: skip
        scanned_rows = columns.differs(piece, fields, defaults)
        assert scanned_rows.tolist() == columns.differs(structs, fields, defaults).tolist()
        assert 0 < scanned_rows.sum() < len(events)
        half = np.arange(len(events)) % 2 == 1  # and on a selection of the piece
        assert columns.differs(piece.select(half), fields, defaults).tolist() == (
            scanned_rows[half].tolist()
        )


_UNDER_MEMCHECK = """
import json, random
from profiler.analysis import decode, scanned
rng = random.Random(23)
event = {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": "stream 7", "ts": 2**70,
         "dur": 1661203462598738.5, "args": {"External id": 7, "grid": [1, [2, {"a": "\\u00e9"}]],
         "Call stack": "a\\\\nb", "dtype": "Float", "est. achieved occupancy %": 5e-3}}
base = json.dumps([event, {"ph": "C", "name": "m", "args": {"x": 1}}] * 2).encode()
taken = 0
for _ in range(150):
    text = bytearray(base)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text))
        text[at:at + rng.randint(0, 1)] = bytes([rng.choice(MUTATIONS)])[: rng.randint(0, 1)]
    taken += scanned.scan(decode.LAYOUT, bytes(text)) is not None
for end in range(1, len(base) + 1, 7):  # every way of being cut short
    scanned.scan(decode.LAYOUT, base[:end])
print("taken", taken)
""".replace("MUTATIONS", repr(_MUTATIONS))


@pytest.mark.usefixtures("scanner")
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_the_scanner_reads_and_writes_only_memory_it_owns(tmp_path: Path) -> None:
    """Mutated and truncated pieces under valgrind's memcheck: no error whose stack passes
    through the scanner (CPython's own, without suppressions, are left aside)."""
    log = tmp_path / "memcheck.log"
    done = subprocess.run(
        ["valgrind", "--tool=memcheck", "--num-callers=40", f"--log-file={log}",
         sys.executable, "-c", _UNDER_MEMCHECK],
        env={**os.environ, "PYTHONMALLOC": "malloc"}, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"taken [1-9]", done.stdout)  # it took some of them
    blocks = re.split(r"\n==\d+== \n", log.read_text())
    ours = [block for block in blocks if "_scanner" in block and "== " in block]
    assert not ours, ours[0][:3000]
