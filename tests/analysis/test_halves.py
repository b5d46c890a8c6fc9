"""A trace loaded in two processes (profiler.analysis.halves) gives the tables one process builds:
the same rows, order, string codes and categories, the same keys and event count; and whatever
goes wrong in a half, the load in one process decides the outcome."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from hypothesis import HealthCheck, given, settings

from profiler.analysis import decode, halves, table
from profiler.analysis.build import build_all
from profiler.analysis.decode import EventStream
from profiler.store.chrome_trace import TraceFormatError
from tests.analysis.malformed import odd_document

DATA = Path(__file__).parents[1] / "data" / "hta"
TABLES = ("events", "flows", "counters", "memory", "threads", "processes")
NO_LIMIT = 1 << 62


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 1 KiB and pieces of 4 KiB: small files hold many, and a split between two."""
    monkeypatch.setattr(decode, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(decode, "_READ_BYTES", 1024)


def in_one_process(path: Path) -> tuple[Any, dict[str, Any]]:
    stream = EventStream(path, max_text_bytes=NO_LIMIT)
    return build_all(stream).finish(), stream.meta


def assert_same(loaded: tuple[Any, dict[str, Any]], reference: tuple[Any, dict[str, Any]]) -> None:
    (tables, meta), (expected, expected_meta) = loaded, reference
    for name in TABLES:
        frame, want = getattr(tables, name), getattr(expected, name)
        pd.testing.assert_frame_equal(frame, want, check_exact=True)
        for column in want.select_dtypes("category"):  # the codes' order, not just the values
            assert list(frame[column].cat.categories) == list(want[column].cat.categories)
    assert tables.event_count == expected.event_count
    assert meta == expected_meta


@pytest.mark.parametrize(
    ("name", "share"),
    [("diff_control", 0.5), ("nccl", 0.2), ("nccl", 0.8), ("mtia_inference", 0.5),
     ("alexnet", 0.5), ("two_ranks_rank-0", 0.6)],
)  # fmt: skip
def test_halves_build_the_tables_of_one_process(name: str, share: float) -> None:
    path = DATA / f"{name}.json.gz"
    split = int(halves.text_size(path) * share)
    first = EventStream(path, stop=split)
    second = EventStream(path, start=split)
    counts = sum(map(len, first)), sum(map(len, second))
    assert first.stopped_at is not None and first.stopped_at == second.started_at
    assert min(counts) > 0  # both halves held events
    loaded = halves.load_in_halves(path, NO_LIMIT, split)
    assert loaded is not None
    assert_same(loaded, in_one_process(path))


def _trace(path: Path, names: list[str]) -> Path:
    """Host ops and kernels (with their args), a counter and a thread name half-way, and a
    key after the events."""
    events: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        gpu = i % 3 == 0
        args = {"stream": 7, "grid": [1, 2, 1], "device": 0} if gpu else {"Input Dims": [[i % 4]]}
        events.append({"ph": "X", "cat": "kernel" if gpu else "cpu_op", "name": name, "pid": 1,
                       "tid": 2 + gpu, "ts": 5000 - i, "dur": 3, "args": args})  # fmt: skip
        if i == len(names) // 2:
            events.append({"ph": "C", "name": "mem", "pid": 1, "ts": i, "args": {"a": i}})
            events.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": 2,
                           "args": {"name": "main"}})  # fmt: skip
    document = {"schemaVersion": 1, "traceEvents": events, "traceName": "after the events"}
    path.write_bytes(gzip.compress(json.dumps(document).encode()))
    return path


def test_strings_first_seen_in_the_second_half_come_after_the_first_half_s(
    tmp_path: Path, small_pieces: None
) -> None:
    names = [f"op{i % 7}" if i < 300 else f"late{i % 5}" for i in range(600)]
    path = _trace(tmp_path / "t.json.gz", names)
    loaded = halves.load_in_halves(path, NO_LIMIT, halves.text_size(path) // 2)
    assert loaded is not None
    assert_same(loaded, in_one_process(path))
    assert loaded[1]["traceName"] == "after the events"


def test_a_cut_inside_a_string_at_the_split_leaves_the_load_to_one_process(
    tmp_path: Path, small_pieces: None
) -> None:
    names = ["op"] * 200 + ['a"}, {"ph": "X"'] + ["op"] * 200
    path = _trace(tmp_path / "t.json.gz", names)
    text = gzip.decompress(path.read_bytes())
    split = text.index(b'a\\"}, {') - 1  # the first cut after it is inside that name
    assert halves.load_in_halves(path, NO_LIMIT, split) is None
    reference = in_one_process(path)
    assert reference[0].events["name"].str.contains("}, {", regex=False).sum() == 1


def test_a_child_that_dies_leaves_the_load_to_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_pieces: None
) -> None:
    path = _trace(tmp_path / "t.json.gz", [f"op{i}" for i in range(400)])
    monkeypatch.setattr(halves, "_child", lambda *_: os._exit(3))
    before = {child.pid for child in psutil.Process().children()}
    assert halves.load_in_halves(path, NO_LIMIT, halves.text_size(path) // 2) is None
    # It was waited for: no new child is left, not even a zombie (other tests' children may be).
    assert [c.pid for c in psutil.Process().children() if c.pid not in before] == []


def test_a_load_split_in_two_reads_and_refuses_files_as_one_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_pieces: None
) -> None:
    path = _trace(tmp_path / "t.json.gz", [f"op{i}" for i in range(2000)])
    truncated = tmp_path / "truncated.json.gz"
    truncated.write_bytes(path.read_bytes()[:-2000])
    middle = len(gzip.decompress(path.read_bytes())) // 2
    monkeypatch.setattr(halves, "text_size", lambda _: middle * 2)
    for file in (path, truncated):
        outcomes: list[Any] = []
        for split in (False, True):
            monkeypatch.setattr(table, "split_worthwhile", lambda _, split=split: split)
            try:
                trace = table.load_trace(file, cache=False)
                outcomes.append([getattr(trace, name) for name in TABLES])
            except TraceFormatError as exc:
                outcomes.append(exc.problem)
        if isinstance(outcomes[0], str):
            assert outcomes[1] == outcomes[0] and "truncated" in outcomes[0]
            continue
        for frame, want in zip(outcomes[1], outcomes[0], strict=True):
            pd.testing.assert_frame_equal(frame, want)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(odd_document())
def test_whatever_a_file_holds_halves_load_it_as_one_process_does(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode, "CHUNK_BYTES", 256)
        patch.setattr(decode, "_READ_BYTES", 64)
        path = Path(folder) / "t.json"
        path.write_bytes(data)
        try:
            reference: Any = in_one_process(path)
        except Exception as exc:  # noqa: BLE001 - then the halves must not load it either
            reference = exc
        for share in (0.3, 0.7):
            loaded = halves.load_in_halves(path, NO_LIMIT, max(int(len(data) * share), 1))
            if isinstance(reference, Exception):
                assert loaded is None
            elif loaded is not None:
                assert_same(loaded, reference)


def test_the_split_is_tried_only_where_a_fork_is_safe_and_pays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _trace(tmp_path / "t.json.gz", ["op"] * 10)
    monkeypatch.setattr(halves, "MIN_TEXT_BYTES", 1)
    monkeypatch.delenv(halves.SPLIT_ENV, raising=False)
    assert not halves.split_worthwhile(path)  # asked for only
    monkeypatch.setenv(halves.SPLIT_ENV, "1")
    assert halves.split_worthwhile(path) is (threading.active_count() == 1)
    monkeypatch.setattr(halves, "MIN_TEXT_BYTES", 1 << 40)
    assert not halves.split_worthwhile(path)
    monkeypatch.setattr(halves, "MIN_TEXT_BYTES", 1)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not halves.split_worthwhile(path)  # another thread: no fork
    finally:
        stop.set()
        other.join()
