"""The Overview's line on what opened a run's triggered windows (``on_anomaly``, a capture
request), read from each trace file's ``trainprof.window``."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import dash
from dash._utils import to_json

from dashboard.app import create_app
from dashboard.data.overview import run_summary
from tests.dashboard.malformed import element
from tests.dashboard.runs import SAMPLE

TRIGGER = {"kind": "anomaly", "step": 56, "step_us": 41_000.0, "median_us": 12_000.0,
           "factor": 2.0}  # fmt: skip


def _root(tmp_path: Path, *, triggered: bool) -> Path:
    """The sample run; with ``triggered``, its first trace's window opened by TRIGGER."""
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
    if triggered:
        first = sorted((root / "sample").glob("*.pt.trace.json.gz"))[0]
        document = json.loads(gzip.decompress(first.read_bytes()))
        document["trainprof"]["window"] = {"first_step": 57, "last_step": 59, "trigger": TRIGGER}
        first.write_bytes(gzip.compress(json.dumps(document).encode()))
    return root


def _page(root: Path) -> object:
    app = create_app(root)
    page = next(p for p in dash.page_registry.values() if p["path"] == "/")
    with app.server.app_context():
        return json.loads(to_json(sys.modules[page["module"]].content(run="sample")))


def test_the_overview_names_what_opened_the_window(tmp_path: Path) -> None:
    root = _root(tmp_path, triggered=True)
    first = sorted((root / "sample").glob("*.pt.trace.json.gz"))[0].name
    expected = (
        f"{first}: window at steps 57-59 opened by anomaly: step 56 took 41.00 ms, "
        "3.4x the median 12.00 ms"
    )
    assert run_summary(root, "sample").triggers == (expected,)
    line = element(_page(root), "window-triggers")
    assert line is not None and line["children"] == expected


def test_scheduled_windows_show_no_line(tmp_path: Path) -> None:
    root = _root(tmp_path, triggered=False)
    assert run_summary(root, "sample").triggers == ()
    assert element(_page(root), "window-triggers") is None
