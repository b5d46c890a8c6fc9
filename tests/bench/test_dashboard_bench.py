"""Smoke test of bench/dashboard.py: its core runs end to end on a tiny trace and gives numbers.

No timing thresholds: the figures depend on the machine; the bench itself reports them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from bench.dashboard import TIMELINE_PAGE, report, run_bench


@pytest.mark.browser
@pytest.mark.slow
def test_bench_measures_cold_and_warm_renders(tmp_path: Path) -> None:
    results = run_bench(2_000, warm_reps=2, cache_dir=tmp_path)
    overview, timeline = results
    assert overview.page == "Overview" and overview.events == 2_000
    assert overview.cold_s is not None and overview.cold_s > 0
    assert len(overview.warm_s) == 2 and all(s > 0 for s in overview.warm_s)
    if TIMELINE_PAGE.is_file():
        assert timeline.cold_s is not None and timeline.cold_s > 0
        assert len(timeline.warm_s) == 2
        assert timeline.points and timeline.shapes
    else:
        assert timeline.skipped and "timeline.py" in timeline.skipped
    console = Console(record=True, width=120)
    report(results, console)
    assert "Overview" in console.export_text()
