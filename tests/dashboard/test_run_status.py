"""The run's status as the dashboard shows it: ``profiler.store.liveness``'s reading of
``run.json``, taken when the page is drawn, so a killed run reads as interrupted."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import dash
import pytest
from dash._utils import to_json

from dashboard.app import create_app
from dashboard.data.runs import run_status, run_version
from profiler.analysis import run as run_module
from profiler.store import liveness
from tests.dashboard.malformed import RUN_JSON, element, text
from tests.dashboard.runs import SAMPLE

BEAT = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def _meta(**fields: Any) -> dict[str, Any]:
    return {"run_name": "r", "status": "running", "heartbeat_unix_s": BEAT, **fields}


@pytest.mark.parametrize(
    ("meta", "now", "label"),
    [
        (_meta(), BEAT + 5, "running"),
        (_meta(), BEAT + 3600, "interrupted (no heartbeat since 2023-11-14 22:13:20 UTC)"),
        (_meta(status="degraded", degraded={"reason": "disk full"}), BEAT, "degraded (disk full)"),
        (_meta(status="failed", error={"type": "RuntimeError"}), BEAT, "failed (RuntimeError)"),
        (_meta(status="complete"), BEAT + 3600, "complete"),
        ({}, BEAT, "unknown"),
        (None, BEAT, None),
    ],
)
def test_run_status_is_the_liveness_label(meta: Any, now: float, label: str | None) -> None:
    assert run_status(meta, now=now) == label


@pytest.mark.parametrize(
    "meta",
    [_meta(heartbeat_unix_s=-1e300), _meta(heartbeat_unix_s=float("-inf")), _meta(pid=2**80)],
)
def test_run_status_of_odd_values_is_still_a_status(meta: dict[str, Any]) -> None:
    assert isinstance(run_status(meta, now=BEAT), str)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
    return root


def _write_meta(root: Path, **fields: Any) -> None:
    meta = json.loads((root / "sample" / RUN_JSON).read_text())
    (root / "sample" / RUN_JSON).write_text(json.dumps({**meta, **fields}))


def _environment(root: Path) -> str:
    app = create_app(root)
    page = next(p for p in dash.page_registry.values() if p["path"] == "/")
    with app.server.app_context():
        tree = json.loads(to_json(sys.modules[page["module"]].content(run="sample")))
    return text(element(tree, "environment"))


def test_the_overview_shows_a_killed_run_as_interrupted(root: Path) -> None:
    _write_meta(root, status="running", heartbeat_unix_s=BEAT)  # long stale on any clock now

    shown = _environment(root)

    assert "status" in shown
    assert "interrupted (no heartbeat since 2023-11-14 22:13:20 UTC)" in shown


def test_the_overview_shows_why_a_run_is_degraded(root: Path) -> None:
    _write_meta(root, status="degraded", degraded={"reason": "no space left on device"})

    assert "degraded (no space left on device)" in _environment(root)


def test_the_status_is_read_when_the_page_is_drawn_not_cached(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file changes when a heartbeat stops: only the clock tells, so nothing may cache it."""
    _write_meta(root, status="running", heartbeat_unix_s=BEAT)
    clock = [BEAT + 5]
    monkeypatch.setattr(
        run_module, "run_state", lambda meta, now=None: liveness.run_state(meta, now=clock[0])
    )
    assert "running" in _environment(root) and "interrupted" not in _environment(root)

    clock[0] = BEAT + 3600

    assert "interrupted (no heartbeat since" in _environment(root)


def test_a_stopped_heartbeat_changes_the_run_version(root: Path) -> None:
    """The overview polls ``run_version``: the page redraws itself when the run goes stale."""
    _write_meta(root, status="running", heartbeat_unix_s=BEAT)

    alive = run_version(root, "sample", with_meta=True, now=BEAT + 5)
    stale = run_version(root, "sample", with_meta=True, now=BEAT + 3600)

    assert alive != stale
    assert run_version(root, "sample", with_meta=True, now=BEAT + 6) == alive
    traces_only = {run_version(root, "sample", with_meta=False, now=now) for now in (BEAT, 1e10)}
    assert len(traces_only) == 1
