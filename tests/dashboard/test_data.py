"""The dashboard's data layer: finding runs, confining names to the root, caching results."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

import profiler.analysis.steps as steps_module
from dashboard.data import cache, overview
from dashboard.data.overview import run_summary
from dashboard.data.runs import list_runs, resolve_run
from dashboard.figures.overview import CATEGORY_COLORS, CATEGORY_LABELS
from profiler.analysis.steps import CATEGORIES
from profiler.analysis.table import TraceTable, load_trace
from tests.dashboard.runs import SAMPLE


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with the sample run, a nested run with one corrupt trace, and a non-run folder."""
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    (root / "group" / "bad").mkdir(parents=True)
    (root / "group" / "bad" / "x.pt.trace.json.gz").write_bytes(b"garbage")
    (root / "empty").mkdir()
    return root


def test_list_runs_names_runs_relative_to_the_root(root: Path) -> None:
    runs = list_runs(root)

    assert [r.name for r in runs] == ["group/bad", "sample"]
    sample = runs[1]
    assert (sample.trace_files, sample.has_meta) == (2, True)


def test_list_runs_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert list_runs(tmp_path / "nowhere") == []


@pytest.mark.parametrize("name", ["", "..", "../x", "a/../../x", "/etc", "sample/../..", "a\x00b"])
def test_resolve_run_refuses_names_outside_the_root(root: Path, name: str) -> None:
    with pytest.raises(ValueError):
        resolve_run(root, name)


def test_resolve_run_refuses_symlinks_out_of_the_root(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(SAMPLE, outside)
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(ValueError):
        resolve_run(root, "link")
    assert "link" not in [r.name for r in list_runs(root)]


def test_resolve_run_accepts_nested_names(root: Path) -> None:
    assert resolve_run(root, "group/bad") == (root / "group" / "bad").resolve()


def test_run_summary_of_the_sample(root: Path) -> None:
    result = run_summary(root, "sample")

    assert result.errors == ()
    assert len(result.summary["traces"]) == 2
    assert len(result.breakdown) == 6
    assert {"trace", "rank", "step", "dur_us", "kernel_us", "other_us"} <= set(result.breakdown[0])
    assert len(result.steps) == 20 and result.steps[0]["rank"] == 0
    assert result.run_meta is not None and result.run_meta["run_name"] == "sample"


def test_run_summary_names_the_unreadable_file(root: Path) -> None:
    result = run_summary(root, "group/bad")

    assert result.summary["traces"] == []
    assert len(result.errors) == 1 and result.errors[0].startswith("x.pt.trace.json.gz: ")


def test_run_summary_of_unknown_runs(root: Path) -> None:
    with pytest.raises(LookupError):
        run_summary(root, "empty")
    with pytest.raises(LookupError):
        run_summary(root, "nope")


def test_run_summary_is_cached_until_a_file_changes(root: Path) -> None:
    first = run_summary(root, "sample")
    assert run_summary(root, "sample") is first

    steps = root / "sample" / "meta" / "steps.0.jsonl"
    with steps.open("a") as out:
        out.write('{"step": 20, "dur_us": 1.0}\n')
    stat = steps.stat()
    os.utime(steps, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = run_summary(root, "sample")

    assert second is not first and len(second.steps) == 21
    assert overview._trace_overview.cache_info().hits >= 2  # the trace files were not read again


def test_run_summary_reports_a_bad_steps_line(root: Path) -> None:
    steps = root / "sample" / "meta" / "steps.0.jsonl"
    lines = steps.read_text().splitlines()
    steps.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")

    result = run_summary(root, "sample")

    assert result.errors == ("meta/steps.0.jsonl: line 2 is not a JSON object",)
    assert len(result.steps) == 20


def test_one_overview_derives_each_table_once_per_trace(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """step_table, analysis_window, the breakdown... each computed once per trace file, shared
    by the summary, the GPU figures, the facts and the breakdown rows (they were 4x and 3x)."""
    stored: Counter[tuple[str, str, tuple[object, ...]]] = Counter()

    class Counting(dict):  # what profiler.analysis.memo stores: one entry per computation
        def __setitem__(self, key: tuple[str, tuple[object, ...]], value: object) -> None:
            stored[(self.file, key[0].rsplit(".", 1)[-1], key[1])] += 1
            super().__setitem__(key, value)

    def spying(path: Path, **kwargs: object) -> TraceTable:
        trace = load_trace(path, **kwargs)  # type: ignore[arg-type]
        derived = Counting()
        derived.file = path.name  # type: ignore[attr-defined]
        object.__setattr__(trace, "derived", derived)
        return trace

    host_steps = steps_module._host_steps
    calls = Counter[str]()

    def counted_host_steps(events: object) -> object:
        calls["_host_steps"] += 1
        return host_steps(events)

    monkeypatch.setattr(cache, "load_trace", spying)
    monkeypatch.setattr(steps_module, "_host_steps", counted_host_steps)
    for cached in (cache._loaded_trace, overview._cached_run, overview._trace_overview):
        cached.cache_clear()

    run_summary(root, "sample")

    files = {file for file, _, _ in stored}
    assert len(files) == 2 and calls["_host_steps"] == 2  # step_table's work, once per file
    assert max(stored.values()) == 1
    tables = {name for _, name, _ in stored}
    assert {"step_table", "analysis_window_mask", "step_breakdown", "gpu_metrics"} <= tables


def test_the_figures_show_the_analysis_categories_in_its_order() -> None:
    """dashboard.figures may not import profiler (import-linter), so it names the categories
    for their labels and colours; this holds them to the one list, steps.CATEGORIES."""
    assert tuple(CATEGORY_LABELS) == tuple(CATEGORY_COLORS) == CATEGORIES
