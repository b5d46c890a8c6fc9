"""Nothing outside the trace root is read: a run's files that are symlinks resolving out of
the root (trace files, ``run.json``, steps files, a linked ``meta/``) count as absent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dashboard.app import create_app
from dashboard.data.runs import list_runs, read_run_meta, read_steps, trace_fingerprints
from tests.dashboard.malformed import RUN_JSON, STEPS, banner_text, page_content, router, text
from tests.dashboard.runs import SAMPLE


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Files outside the root that a run's symlinks point at."""
    outside = tmp_path / "outside"
    shutil.copytree(SAMPLE, outside, ignore=shutil.ignore_patterns("cache"))
    meta = json.loads((outside / RUN_JSON).read_text())
    meta["environment"]["hostname"] = "SECRET-HOST"
    (outside / RUN_JSON).write_text(json.dumps(meta))
    return outside


def test_a_trace_file_linking_out_of_the_root_is_not_read(root: Path, outside: Path) -> None:
    trace = sorted(outside.glob("*.json.gz"))[0]
    (root / "sample" / "link.pt.trace.json.gz").symlink_to(trace)
    (root / "only_link").mkdir()
    (root / "only_link" / "w.1.pt.trace.json.gz").symlink_to(trace)

    names = [Path(fp[0]).name for fp in trace_fingerprints(root, "sample")]

    assert "link.pt.trace.json.gz" not in names and len(names) == 2
    assert [r.name for r in list_runs(root)] == ["sample"]  # a run of links only is no run
    client = create_app(root).server.test_client()
    timeline = page_content(router(client, "/timeline", "?run=sample&file=link.pt.trace.json.gz"))
    assert "has no file" in text(timeline)


def test_a_link_to_another_runs_file_inside_the_root_is_read(root: Path) -> None:
    (root / "other").mkdir()
    trace = sorted((root / "sample").glob("*.json.gz"))[0]
    (root / "other" / "w.1.pt.trace.json.gz").symlink_to(trace)

    assert [Path(fp[0]).name for fp in trace_fingerprints(root, "other")] == [
        "w.1.pt.trace.json.gz"
    ]


def test_run_json_and_steps_linking_out_of_the_root_are_not_read(root: Path, outside: Path) -> None:
    for name in (RUN_JSON, STEPS):
        (root / "sample" / name).unlink()
        (root / "sample" / name).symlink_to(outside / name)
    run = root / "sample"

    assert read_run_meta(run, root) == (None, [])
    assert read_steps(run, root) == ([], [])
    client = create_app(root).server.test_client()
    content = page_content(router(client, "/", "?run=sample"))
    assert "SECRET-HOST" not in json.dumps(content)
    assert banner_text(content) is None


def test_a_meta_folder_linking_out_of_the_root_is_not_read(root: Path, outside: Path) -> None:
    shutil.rmtree(root / "sample" / "meta")
    (root / "sample" / "meta").symlink_to(outside / "meta", target_is_directory=True)

    assert read_run_meta(root / "sample", root) == (None, [])
    client = create_app(root).server.test_client()
    assert "SECRET-HOST" not in router(client, "/", "?run=sample").get_data(as_text=True)
    assert not (outside / "meta" / "cache").exists()  # no columnar cache written out there
