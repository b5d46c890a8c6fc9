"""profiler.analysis.cache: a warm load gives the cold load's tables, and never a stale one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dashboard.data.runs import list_runs, trace_files
from profiler.analysis import cache, table
from profiler.analysis.table import TraceTable, find_trace_files, is_trace_file, load, load_trace

SAMPLE_RUN = Path(__file__).resolve().parents[2] / "traces" / "sample"
TABLES = ("events", "flows", "counters", "memory", "threads", "processes")


def assert_same(cold: TraceTable, warm: TraceTable) -> None:
    """Every table equal, dtypes and categories included, and every scalar."""
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(cold, name), getattr(warm, name), obj=name)
        for column in getattr(cold, name).select_dtypes("category"):
            cold_categories = getattr(cold, name)[column].cat.categories
            warm_categories = getattr(warm, name)[column].cat.categories
            pd.testing.assert_index_equal(cold_categories, warm_categories, exact=True)
    assert (cold.path, cold.rank, cold.device, cold.meta, cold.event_count) == (
        warm.path, warm.rank, warm.device, warm.meta, warm.event_count,
    )  # fmt: skip


class JsonReads:
    """Counts loads that read the JSON (the others came from the cache)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = table.EventStream

        def counting(path: Path, **options: object) -> object:
            self.count += 1
            return real(path, **options)

        monkeypatch.setattr(table, "EventStream", counting)


@pytest.fixture
def run(tmp_path: Path, reference_traces: Path) -> Path:
    """A run directory holding one reference GPU trace (with flows, kernels, memsets)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(reference_traces / "hta" / "alexnet.json.gz", run_dir / "w.1.pt.trace.json.gz")
    return run_dir


def trace_in(run_dir: Path) -> Path:
    (path,) = find_trace_files(run_dir)
    return path


@pytest.fixture(autouse=True)
def cache_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)


def test_warm_equals_cold_on_a_gpu_trace(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = trace_in(run)
    cold = load_trace(path)
    assert cold.device == "cuda" and len(cold.flows) > 0
    assert {p.name for p in (run / "meta" / "cache").iterdir()} == {
        f"{path.name}.v{cache.FORMAT_VERSION}.{name}.parquet" for name in TABLES
    }
    reads = JsonReads(monkeypatch)
    warm = load_trace(path)
    assert reads.count == 0
    assert_same(cold, warm)
    assert_same(load_trace(path, cache=False), warm)


def test_warm_equals_cold_on_our_sample_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "sample"
    shutil.copytree(SAMPLE_RUN, run_dir, ignore=shutil.ignore_patterns("cache"))
    cold = load(run_dir).traces
    reads = JsonReads(monkeypatch)
    warm = load(run_dir).traces
    assert reads.count == 0 and len(cold) == len(warm) == 2
    for one, other in zip(cold, warm, strict=True):
        assert one.trainprof is not None and len(one.counters) > 0
        assert_same(one, other)


def rewrite_same_mtime(path: Path, data: bytes) -> None:
    stat = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("change", ["size", "mtime", "version"])
def test_a_stale_cache_is_rebuilt(
    run: Path, reference_traces: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    path = trace_in(run)
    load_trace(path)
    if change == "size":  # another trace under the same name and mtime
        rewrite_same_mtime(path, (reference_traces / "hta" / "triton.json.gz").read_bytes())
    elif change == "mtime":  # same size, touched
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    else:
        monkeypatch.setattr(cache, "FORMAT_VERSION", cache.FORMAT_VERSION + 1)
    reads = JsonReads(monkeypatch)
    rebuilt = load_trace(path)
    assert reads.count == 1
    assert_same(load_trace(path, cache=False), rebuilt)
    load_trace(path)
    assert reads.count == 2  # the cache=False load; the last one was warm again
    names = sorted(p.name for p in (run / "meta" / "cache").iterdir())
    assert len(names) == len(TABLES) and all(f".v{cache.FORMAT_VERSION}." in n for n in names)


def test_a_file_that_cannot_be_cached_still_loads(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (run / "meta").mkdir()
    (run / "meta" / "cache").write_text("a file where the cache directory would go")
    path = trace_in(run)
    assert_same(load_trace(path, cache=False), load_trace(path))
    reads = JsonReads(monkeypatch)
    load_trace(path)
    assert reads.count == 1  # nothing cached, quietly


def test_an_unwritable_directory_still_loads(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)  # root ignores chmod: refuse at the call
    path = trace_in(run)
    assert len(load_trace(path).events) > 0
    assert not (run / "meta").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_cache_file_is_ignored_and_replaced(
    run: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    path = trace_in(run)
    cold = load_trace(path)
    events_file = cache.cache_files(path)["events"]
    data = events_file.read_bytes()
    events_file.write_bytes(
        {"garbage": b"not parquet at all", "truncated": data[: len(data) // 2], "empty": b""}[
            damage
        ]
    )
    reads = JsonReads(monkeypatch)
    assert_same(cold, load_trace(path))
    assert reads.count == 1
    assert_same(cold, load_trace(path))
    assert reads.count == 1  # replaced by a good one


def test_turned_off_by_argument_or_environment(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = trace_in(run)
    load_trace(path, cache=False)
    load(run, cache=False)
    monkeypatch.setenv(cache.CACHE_ENV, "0")
    load_trace(path)
    assert not (run / "meta").exists()


def test_cache_files_are_never_traces(run: Path) -> None:
    path = trace_in(run)
    load_trace(path)
    (run / "meta" / "run.json").write_text("{}")
    files = list((run / "meta" / "cache").iterdir())
    assert files and not any(is_trace_file(f) for f in files)
    assert find_trace_files(run) == [path] == find_trace_files(run.parent)
    assert trace_files(run) == [path]
    assert [r.name for r in list_runs(run.parent)] == ["run"]
    assert [t.path for t in load(run.parent).traces] == [path]


def test_tables_over_many_row_groups(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "ROW_GROUP_ROWS", 100)
    path = trace_in(run)
    cold = load_trace(path)
    assert len(cold.events) > 500
    reads = JsonReads(monkeypatch)
    assert_same(cold, load_trace(path))
    assert reads.count == 0
