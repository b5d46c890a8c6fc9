"""Run and RunSet: the one read side of the trace store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from profiler.analysis.run import Run, RunNotFound, RunRefused, RunSet
from profiler.analysis.table import load

SAMPLE = Path(__file__).parents[2] / "traces" / "sample"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(SAMPLE, root / "sample")
    return root


def test_a_run_owns_its_files_meta_steps_and_status(root: Path) -> None:
    run = RunSet(root).run("sample")
    assert run.name == "sample"
    assert list(run.trace_paths) == sorted(run.trace_paths) and len(run.trace_paths) == 2
    assert [fp[0] for fp in run.fingerprints()] == [str(p) for p in run.trace_paths]
    assert run.meta.meta is not None and run.meta.problem is None
    assert run.status() == "complete" and run.problems() == []
    assert len(run.steps()) == 20 and run.steps()[0]["rank"] == 0
    loaded = run.load()
    assert len(loaded.traces) == 2 and loaded.errors == ()


def test_a_bad_trace_is_its_files_error(root: Path) -> None:
    (root / "sample" / "zz.pt.trace.json.gz").write_bytes(b"garbage")
    loaded = RunSet(root).run("sample").load()
    assert len(loaded.traces) == 2
    assert [Path(e.path).name for e in loaded.errors] == ["zz.pt.trace.json.gz"]


def test_a_run_set_lists_runs_and_follows_no_link_out(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(SAMPLE, outside)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "group" / "b").mkdir(parents=True)
    (root / "group" / "b" / "x.pt.trace.json").symlink_to(next(outside.glob("*.json.gz")))
    assert [run.name for run in RunSet(root)] == ["sample"]
    assert load(root).errors == () and len(load(root).traces) == 2
    with pytest.raises(RunRefused):
        RunSet(root).run("linked")
    with pytest.raises(RunRefused):
        RunSet(root).run("../outside")
    with pytest.raises(RunNotFound):
        RunSet(root).run("group/b")
    (root / "sample" / "meta").mkdir(exist_ok=True)
    (root / "sample" / "meta" / "run.json").write_text("{}")  # would pass for a trace file
    (root / ".hidden").mkdir()
    for name in ("sample/meta", "meta", ".hidden", "sample/.x"):
        with pytest.raises(RunRefused, match="meta/ or a hidden folder"):
            RunSet(root).run(name)
    assert RunSet(root).run("sample").name == "sample"


def test_one_set_of_step_line_rules(tmp_path: Path) -> None:
    (tmp_path / "meta").mkdir()
    lines = [
        json.dumps({"step": 1, "dur_us": 5.0}),
        "garbage",
        json.dumps({"dur_us": 5.0}),
        json.dumps({"step": 2, "dur_us": "5", "memory_bytes": [1], "note": "kept"}),
        "[1]",
        "{}",
        '{"step": 3, "dur',
    ]
    (tmp_path / "meta" / "steps.0.jsonl").write_text("\n".join(lines))
    run = Run(tmp_path)
    assert run.steps() == [
        {"step": 1, "dur_us": 5.0, "rank": 0},
        {"step": 2, "note": "kept", "rank": 0},
    ]
    assert run.problems() == [
        "meta/steps.0.jsonl: line 2 is not a JSON object",
        "meta/steps.0.jsonl: line 3 has no integer 'step'",
        "meta/steps.0.jsonl: line 4 has 'dur_us', 'memory_bytes' not a finite number",
        "meta/steps.0.jsonl: 2 more bad line(s)",
    ]  # at most three named; the last line, cut short, is no problem
    assert run.step_files[0].cut_short


def test_a_run_json_outside_the_root_is_absent(root: Path, tmp_path: Path) -> None:
    meta = root / "sample" / "meta" / "run.json"
    outside = tmp_path / "run.json"
    shutil.move(meta, outside)
    meta.symlink_to(outside)
    run = RunSet(root).run("sample")
    assert run.meta.meta is None and run.meta.problem is None and run.status() is None
