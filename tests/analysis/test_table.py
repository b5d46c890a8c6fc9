"""profiler.analysis.table: any Kineto trace into columnar tables; bad files named clearly."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from profiler.analysis import decode
from profiler.analysis.table import find_trace_files, load, load_trace
from profiler.store.chrome_trace import TraceFormatError

# The 2021 generation (torch 1.8-1.10): Operator/Runtime/Kernel/Memcpy categories, GPU lanes
# named "stream 7", ts in absolute microseconds, no baseTimeNanoseconds.
LEGACY_2021 = {
    "schemaVersion": 1,
    "traceEvents": [
        {
            "ph": "X",
            "cat": "Operator",
            "name": "ProfilerStep#1",
            "pid": 10,
            "tid": 10,
            "ts": 1_600_000_000_000_000,
            "dur": 900,
        },
        {
            "ph": "X",
            "cat": "Operator",
            "name": "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__",
            "pid": 10,
            "tid": 10,
            "ts": 1_600_000_000_000_010,
            "dur": 100,
        },
        {
            "ph": "X",
            "cat": "Operator",
            "name": "aten::mm",
            "pid": 10,
            "tid": 10,
            "ts": 1_600_000_000_000_200,
            "dur": 50,
            "args": {"Input dims": [[2, 3], [3, 4]]},
        },
        {
            "ph": "X",
            "cat": "Runtime",
            "name": "cudaLaunchKernel",
            "pid": 10,
            "tid": 10,
            "ts": 1_600_000_000_000_210,
            "dur": 8,
            "args": {"correlation": 7, "external id": 3},
        },
        {
            "ph": "X",
            "cat": "Kernel",
            "name": "volta_sgemm_128x64_nn",
            "pid": 0,
            "tid": "stream 7",
            "ts": 1_600_000_000_000_230,
            "dur": 40,
            "args": {
                "correlation": 7,
                "device": 0,
                "stream": 7,
                "grid": [4, 1, 1],
                "block": [256, 1, 1],
                "est. achieved occupancy %": 50,
            },
        },
        {
            "ph": "X",
            "cat": "Memcpy",
            "name": "Memcpy HtoD (Pageable -> Device)",
            "pid": 0,
            "tid": "stream 7",
            "ts": 1_600_000_000_000_300,
            "dur": 20,
            "args": {"device": 0, "stream": 7, "bytes": 4096},
        },
        {
            "ph": "M",
            "name": "thread_name",
            "pid": 0,
            "tid": "stream 7",
            "args": {"name": "stream 7"},
        },
    ],
}


def write(path: Path, document: object, *, compress: bool = True) -> Path:
    data = json.dumps(document).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_reference_traces_load_with_rank_and_device(reference_traces: Path) -> None:
    hta = reference_traces / "hta"
    expected = {
        "alexnet.json.gz": (0, "cuda"),
        "amd_mi250.json.gz": (0, "rocm"),
        "cpu_only.json.gz": (34, "cpu"),
        "triton.json.gz": (0, "cuda"),
        "two_ranks_rank-1.json.gz": (1, "cuda"),
    }
    for name, (rank, device) in expected.items():
        trace = load_trace(hta / name)
        assert (trace.rank, trace.device) == (rank, device), name
        assert trace.events["ts_us"].is_monotonic_increasing
        assert (trace.events["end_us"] >= trace.events["ts_us"]).all()


def test_kernel_args_become_columns(reference_traces: Path) -> None:
    trace = load_trace(reference_traces / "hta" / "alexnet.json.gz")
    kernels = trace.events[trace.events["kind"] == "kernel"]
    assert len(kernels) == 79
    assert (kernels["correlation"] > 0).all() and (kernels["stream"] >= 0).all()
    assert kernels["grid"].astype(str).str.startswith("[").all()
    assert kernels["occupancy_pct"].notna().any()
    # Every kernel's correlation id matches one runtime launch.
    launches = trace.events[trace.events["kind"] == "runtime"]
    assert set(kernels["correlation"]) <= set(launches["correlation"])
    copies = trace.events[trace.events["kind"] == "memcpy"]
    assert (copies["bytes"] > 0).all()
    assert len(trace.flows) == 500


def test_collective_fields(reference_traces: Path) -> None:
    trace = load_trace(reference_traces / "hta" / "nccl.json.gz")
    ops = trace.events[trace.events["collective"].astype(str) != ""]
    assert len(ops) == 27 + 21  # the CPU-side ops and their kernels both carry the fields
    assert (ops["group_size"] > 0).all() and (ops["in_nelems"] >= 0).all()


def test_legacy_2021_schema(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path / "old.pt.trace.json.gz", LEGACY_2021))
    kinds = dict(
        zip(trace.events["name"].astype(str), trace.events["kind"].astype(str), strict=True)
    )
    assert kinds["aten::mm"] == "cpu_op"
    assert kinds["cudaLaunchKernel"] == "runtime"
    assert kinds["volta_sgemm_128x64_nn"] == "kernel"
    assert kinds["Memcpy HtoD (Pageable -> Device)"] == "memcpy"
    mm = trace.events[trace.events["name"] == "aten::mm"].iloc[0]
    assert mm["input_dims"] == "[[2,3],[3,4]]"
    kernel = trace.events[trace.events["kind"] == "kernel"].iloc[0]
    assert (kernel["tid"], kernel["stream"], kernel["occupancy_pct"]) == (7, 7, 50.0)
    launch = trace.events[trace.events["name"] == "cudaLaunchKernel"].iloc[0]
    assert launch["external_id"] == 3  # 2021 spelled the key "external id"
    assert trace.device == "cuda" and trace.rank == 0
    assert trace.threads["tid"].tolist() == [7]


def test_shapes_in_either_spelling_in_one_file(tmp_path: Path) -> None:
    """2021's "Input dims" is read on the ops that have it, beside today's "Input Dims" (which
    wins where an op has both), whatever else those ops carry."""
    args = [
        {"Input Dims": [[1, 2]]},
        {"Input dims": [[3, 4]]},
        {"Input Dims": [[5]], "Input dims": [[6]]},
        {},
        {"Input dims": [[7]], "Sequence number": 9},
        {"Input dims": [[3, 4]], "stream": 2},
    ]
    events = [
        {"ph": "X", "cat": "cpu_op", "name": f"op{i}", "pid": 1, "tid": 1, "ts": i, "dur": 1,
         "args": a}
        for i, a in enumerate(args)
    ]  # fmt: skip
    trace = load_trace(write(tmp_path / "t.json.gz", {"traceEvents": events}), cache=False)
    shapes = trace.events["input_dims"].astype(str).tolist()
    assert shapes == ["[[1,2]]", "[[3,4]]", "[[5]]", "", "[[7]]", "[[3,4]]"]
    assert trace.events["seq"].tolist() == [-1, -1, -1, -1, 9, -1]
    assert trace.events["stream"].tolist() == [-1, -1, -1, -1, -1, 2]


def test_bare_array_form_and_plain_json(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path / "a.json", LEGACY_2021["traceEvents"], compress=False))
    assert len(trace.events) == 6 and trace.meta == {}


def test_our_trace_counters_and_memory(tmp_path: Path, train) -> None:
    prof = train(steps=5, out_dir=tmp_path, run_name="r", profile_memory=True)
    (trace,) = load(prof.run_dir).traces
    assert trace.trainprof is not None and trace.trainprof["run_name"] == "r"
    assert trace.device == "cpu"
    assert set(trace.counters["name"]) == {"trainprof.memory"}
    assert (trace.counters["series"] == "rss_bytes").all()
    assert len(trace.memory) > 0 and (trace.memory["total_allocated"] >= 0).all()
    backward = trace.events["name"].astype(str).str.endswith(".backward")
    assert backward.sum() == 12


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (
            gzip.compress(b'{"traceEvents": [{"ph": "X"}', mtime=0)[:-12],
            "corrupt or truncated gzip",
        ),
        (
            gzip.compress(b'{"traceEvents": [{"ph": "X", "name": "a"', mtime=0),
            "invalid or truncated JSON",
        ),
        (b"this is not json", "invalid or truncated JSON"),
        (b'{"schemaVersion": 1}', "no traceEvents array"),
        (b'{"traceEvents": {"ph": "X"}}', "not a Kineto trace"),
        (b'{"traceEvents": [1, 2, 3]}', "not a Kineto trace"),
        (b'{"traceEvents": [{"ph": "X", "ts": "soon"}]}', "not a Kineto trace"),
        (gzip.compress(b"", mtime=0), "empty after gunzip"),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.pt.trace.json.gz"
    path.write_bytes(content)
    with pytest.raises(TraceFormatError) as info:
        load_trace(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)


def test_a_bad_file_does_not_stop_the_rest_of_the_run(
    tmp_path: Path, reference_traces: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(
        reference_traces / "hta" / "two_ranks_rank-0.json.gz", run / "w0.1.pt.trace.json.gz"
    )
    (run / "w1.1.pt.trace.json.gz").write_bytes(b"\x1f\x8b broken")
    (run / "meta").mkdir()
    (run / "meta" / "run.json").write_text("{}")  # no trace, never loaded
    result = load(run)
    assert [t.path.name for t in result.traces] == ["w0.1.pt.trace.json.gz"]
    assert [e.path for e in result.errors] == [str(run / "w1.1.pt.trace.json.gz")]


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        load(tmp_path / "nope")


def _tricky_events(count: int) -> list[dict[str, object]]:
    """Events whose text holds what a cut between events looks like, inside strings and args."""
    events: list[dict[str, object]] = []
    for i in range(count):
        events.append(
            {
                "ph": "X",
                "cat": "cpu_op",
                "name": f'op}},{{"ph": "X"}} #{i % 7}',
                "pid": 1,
                "tid": 2,
                "ts": 1000 - i,
                "dur": 1,
                "args": {"Input Dims": [[i % 3, 2]], "nested": [{"a": "},{"}, {"b": 1}]},
            }
        )
        events.append({"ph": "s", "id": i, "pid": 1, "tid": 2, "ts": 1000 - i, "cat": "ac2g"})
    events.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "t"}})
    return events


def _small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read the file 97 bytes at a time and cut it every ~300 bytes: many pieces."""
    monkeypatch.setattr(decode, "CHUNK_BYTES", 300)
    monkeypatch.setattr(decode, "_READ_BYTES", 97)


def _assert_same_tables(one, other) -> None:  # noqa: ANN001 - TraceTable both
    for name in ("events", "flows", "counters", "memory", "threads", "processes"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(other, name), obj=name)
    assert (one.meta, one.rank, one.device, one.event_count) == (
        other.meta, other.rank, other.device, other.event_count,
    )  # fmt: skip


@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "indented"])
def test_streamed_pieces_give_the_tables_of_one_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, indent: int | None
) -> None:
    document = {
        "schemaVersion": 1,
        "distributedInfo": {"rank": 3},
        "traceEvents": _tricky_events(300),
        "traceName": "at the end",
    }
    path = tmp_path / "t.pt.trace.json.gz"
    path.write_bytes(gzip.compress(json.dumps(document, indent=indent).encode()))
    whole = load_trace(path, cache=False)
    _small_pieces(monkeypatch)
    assert len(list(decode.EventStream(path))) > 3  # cuts inside strings and args fail
    pieces = load_trace(path, cache=False)
    _assert_same_tables(whole, pieces)
    assert len(pieces.events) == 300 and len(pieces.flows) == 300
    assert pieces.events["ts_us"].is_monotonic_increasing
    assert pieces.meta["traceName"] == "at the end" and pieces.rank == 3
    assert set(pieces.events["input_dims"].astype(str)) == {"[[0,2]]", "[[1,2]]", "[[2,2]]"}


def test_streamed_bare_array_and_multi_member_gzip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_pieces(monkeypatch)
    events = _tricky_events(100)
    half = len(events) // 2
    path = tmp_path / "two_members.json.gz"
    text = json.dumps({"traceEvents": events}).encode()
    cut = text.index(b'{"ph": "s", "id": 50')  # two gzip members, split mid-array
    path.write_bytes(gzip.compress(text[:cut]) + gzip.compress(text[cut:]))
    bare = write(tmp_path / "bare.json", events, compress=False)
    assert load_trace(path, cache=False).event_count == len(events) == half * 2 + 1
    assert len(load_trace(bare, cache=False).events) == 100


def test_a_truncated_gzip_is_named_after_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_pieces(monkeypatch)
    data = gzip.compress(json.dumps({"traceEvents": _tricky_events(200)}).encode())
    path = tmp_path / "cut.pt.trace.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceFormatError, match="corrupt or truncated gzip"):
        load_trace(path, cache=False)


def test_run_side_files_are_no_traces(tmp_path: Path, reference_traces: Path) -> None:
    run = tmp_path / "run"
    (run / "meta" / "cache" / "deeper").mkdir(parents=True)
    shutil.copy(reference_traces / "hta" / "triton.json.gz", run / "w.1.pt.trace.json.gz")
    (run / "meta" / "cache" / "deeper" / "x.json").write_text("{}")
    assert find_trace_files(tmp_path) == [run / "w.1.pt.trace.json.gz"]
