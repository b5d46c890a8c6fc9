"""The Operators and Kernels pages' data and figures, as plain functions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dashboard.data import cache, tables
from dashboard.data.tables import run_kernels, run_ops, run_table_errors
from dashboard.figures.tables import TOP_N, kernel_type_figure, top_bar_figure
from profiler.analysis.kernels import kernel_type_breakdown, top_kernels
from profiler.analysis.ops import top_ops
from profiler.analysis.table import load_trace
from tests.conftest import REFERENCE_TRACES
from tests.dashboard.runs import SAMPLE

REFERENCE_TRACE = REFERENCE_TRACES / "hta" / "two_ranks_rank-0.json.gz"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with the sample run and a run with one good and one corrupt trace."""
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    mixed = root / "mixed"
    mixed.mkdir()
    shutil.copy(sorted(SAMPLE.glob("*.json.gz"))[0], mixed)
    (mixed / "bad.pt.trace.json.gz").write_bytes(b"\x1f\x8b not gzip")
    return root


@pytest.fixture
def reference_root(tmp_path: Path) -> Path:
    """A root whose run ``ref`` holds one rank of HTA's two-rank GPU trace."""
    (tmp_path / "ref").mkdir()
    shutil.copy(REFERENCE_TRACE, tmp_path / "ref")
    return tmp_path


def test_run_ops_pools_the_sample_files(root: Path) -> None:
    traces = [load_trace(p) for p in sorted((root / "sample").glob("*.json.gz"))]
    per_file = [top_ops(t, n=None) for t in traces]

    rows = run_ops(root, "sample", by_shape=False)

    assert sum(r["calls"] for r in rows) == sum(int(f["calls"].sum()) for f in per_file)
    assert sum(r["self_us"] for r in rows) == pytest.approx(
        sum(f["self_us"].sum() for f in per_file)
    )
    selfs = [r["self_us"] for r in rows]
    assert selfs == sorted(selfs, reverse=True)
    assert all(r["mean_us"] == pytest.approx(r["total_us"] / r["calls"]) for r in rows)
    assert list(rows[0]) == ["name", "calls", "self_us", "total_us", "mean_us"]


def test_grouping_by_shape_gives_more_rows_with_the_same_calls(root: Path) -> None:
    by_name = run_ops(root, "sample", by_shape=False)
    by_shape = run_ops(root, "sample", by_shape=True)

    assert len(by_shape) > len(by_name)
    assert "input_dims" in by_shape[0]
    assert sum(r["calls"] for r in by_shape) == sum(r["calls"] for r in by_name)


def test_run_ops_of_a_single_file_is_that_files_top_ops(reference_root: Path) -> None:
    expected = top_ops(load_trace(REFERENCE_TRACE), n=None)

    rows = run_ops(reference_root, "ref", by_shape=False)

    assert sum(r["calls"] for r in rows) == int(expected["calls"].sum())
    assert [r["name"] for r in rows] == list(expected["name"])
    assert [r["self_us"] for r in rows] == pytest.approx(list(expected["self_us"]))


def test_run_kernels_of_a_single_file_match_the_analysis(reference_root: Path) -> None:
    trace = load_trace(REFERENCE_TRACE)
    expected_types = kernel_type_breakdown(trace)
    expected_top = top_kernels(trace, n=TOP_N)

    kernels, types = run_kernels(reference_root, "ref")

    assert [t["kernel_type"] for t in types] == list(expected_types["kernel_type"])
    assert [t["sum_us"] for t in types] == pytest.approx(list(expected_types["sum_us"]))
    assert [t["percentage"] for t in types] == pytest.approx(list(expected_types["percentage"]))
    head = kernels[:TOP_N]
    assert [k["name"] for k in head] == list(expected_top["name"])
    assert [k["calls"] for k in head] == list(expected_top["calls"])
    assert [k["grid"] for k in head] == list(expected_top["grid"])
    occupancy = [k["occupancy_pct"] for k in head]
    assert occupancy == pytest.approx(
        list(expected_top["occupancy_pct"].astype(float)), nan_ok=True
    )
    assert all(not isinstance(v, float) or v == v for k in kernels for v in k.values())  # no NaN


def test_a_cpu_only_run_has_no_kernels(root: Path) -> None:
    assert run_kernels(root, "sample") == ([], [])
    assert run_table_errors(root, "sample") == ()


def test_a_bad_file_is_named_and_the_rest_still_counts(root: Path) -> None:
    good = top_ops(load_trace(next((root / "mixed").glob("vm_*"))), n=None)

    rows = run_ops(root, "mixed", by_shape=False)
    errors = run_table_errors(root, "mixed")

    assert sum(r["calls"] for r in rows) == int(good["calls"].sum())
    assert len(errors) == 1 and errors[0].startswith("bad.pt.trace.json.gz: ")


@pytest.mark.parametrize("name", ["../x", "/etc", ""])
def test_names_outside_the_root_are_refused(root: Path, name: str) -> None:
    with pytest.raises(ValueError):
        run_ops(root, name, by_shape=False)
    with pytest.raises(ValueError):
        run_kernels(root, name)


def test_unknown_runs_are_a_lookup_error(root: Path) -> None:
    with pytest.raises(LookupError):
        run_kernels(root, "nope")


def test_each_file_is_loaded_once_and_reloaded_when_it_changes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Path] = []
    real = cache.load_trace
    monkeypatch.setattr(cache, "load_trace", lambda p: loads.append(Path(p)) or real(p))
    cache._loaded_trace.cache_clear()
    tables._trace_tables.cache_clear()  # type: ignore[attr-defined]
    tables._cached_run_tables.cache_clear()

    run_ops(root, "sample", by_shape=False)
    run_ops(root, "sample", by_shape=True)
    run_kernels(root, "sample")
    assert len(loads) == 2

    first = sorted((root / "sample").glob("*.json.gz"))[0]
    stat = first.stat()
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    run_ops(root, "sample", by_shape=False)
    assert loads[2:] == [first]


def test_top_bar_figure_puts_the_largest_on_top() -> None:
    rows = [{"name": f"op{i}", "self_us": float(i)} for i in range(20)]

    figure = top_bar_figure(rows, "self_us", "self time (µs)")

    (bar,) = figure.data
    assert bar.orientation == "h"
    assert len(bar.y) == TOP_N
    assert list(bar.x)[-1] == 19.0 and list(bar.y)[-1] == "op19"  # last drawn is on top
    assert list(bar.x) == sorted(bar.x)


def test_top_bar_figure_shortens_long_names_but_keeps_them_apart() -> None:
    long = "k" * 200
    rows = [{"name": long + "a", "total_us": 2.0}, {"name": long + "b", "total_us": 1.0}]

    (bar,) = top_bar_figure(rows, "total_us", "total").data

    assert len(set(bar.y)) == 2
    assert all(len(label) <= 70 for label in bar.y)
    assert list(bar.customdata) == [long + "b", long + "a"]


def test_kernel_type_figure_is_a_pie_of_the_rows() -> None:
    rows = [{"kernel_type": "COMPUTATION", "sum_us": 3.0}, {"kernel_type": "MEMORY", "sum_us": 1.0}]

    (pie,) = kernel_type_figure(rows).data

    assert pie.type == "pie"
    assert list(pie.labels) == ["COMPUTATION", "MEMORY"] and list(pie.values) == [3.0, 1.0]


def test_empty_rows_give_an_empty_figure_with_a_note() -> None:
    for figure in (top_bar_figure([], "self_us", "x"), kernel_type_figure([])):
        assert not figure.data
        assert figure.layout.annotations[0].text
