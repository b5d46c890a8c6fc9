"""The Kernels page's idle-time attribution: its numbers against HTA's own, and its figure."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dashboard.data.idle import IDLE_COLUMNS, run_idle_time
from dashboard.figures.idle import IDLE_PARTS, NO_IDLE, idle_time_figure
from profiler.analysis.temporal import IDLE_CATEGORIES
from tests.conftest import REFERENCE_TRACES
from tests.dashboard.runs import SAMPLE
from tests.peers import hta_load

TWO_RANKS = ("two_ranks_rank-0.json.gz", "two_ranks_rank-1.json.gz")
# The two-rank reference has integer-microsecond timestamps, which HTA keeps exactly: the
# pooled numbers must agree to well under a microsecond (float sums of integers).
TOLERANCE_US = 1e-6


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding the two-rank reference as one run, ``two_ranks``."""
    root = tmp_path_factory.mktemp("idle")
    (root / "two_ranks").mkdir()
    for name in TWO_RANKS:
        shutil.copy(REFERENCE_TRACES / "hta" / name, root / "two_ranks")
    return root


def test_idle_time_per_stream_matches_hta(two_ranks: Path) -> None:
    rows = run_idle_time(two_ranks, "two_ranks")
    assert all(list(row) == list(IDLE_COLUMNS) for row in rows)
    hta = hta_load(two_ranks / "two_ranks").get_idle_time_breakdown(ranks=[0, 1], visualize=False)
    theirs = hta[0].groupby(["rank", "stream", "idle_category"])["idle_time"].sum().to_dict()
    assert {(r, s) for r, s, _ in theirs} == {(row["rank"], row["stream"]) for row in rows}
    seen: set[str] = set()
    for row in rows:
        for category in IDLE_CATEGORIES:
            # HTA lists only the categories that occur on a stream.
            expected = theirs.get((row["rank"], row["stream"], category), 0.0)
            assert row[f"{category}_us"] == pytest.approx(expected, abs=TOLERANCE_US)
            seen |= {category} if expected > 0 else set()
        shares = [row[f"{c}_pct"] for c in IDLE_CATEGORIES]
        assert sum(shares) == pytest.approx(100.0 if row["idle_us"] > 0 else 0.0)
    assert seen == set(IDLE_CATEGORIES)  # every category is compared on some stream


def test_a_cpu_only_run_has_no_idle_rows(tmp_path: Path) -> None:
    shutil.copytree(SAMPLE, tmp_path / "sample", ignore=shutil.ignore_patterns("cache"))
    assert run_idle_time(tmp_path, "sample") == ()
    assert idle_time_figure(()).layout.annotations[0].text == NO_IDLE


def test_the_figure_stacks_each_streams_idle_ms(two_ranks: Path) -> None:
    rows = run_idle_time(two_ranks, "two_ranks")
    figure = idle_time_figure(rows)
    assert [trace.name for trace in figure.data] == [label for _, label, _ in IDLE_PARTS]
    assert list(figure.data[0].y) == [f"rank {r['rank']} stream {r['stream']}" for r in rows]
    assert list(figure.data[0].x) == pytest.approx([r["host_wait_us"] / 1000 for r in rows])
    one_rank = [row for row in rows if row["rank"] == 0]
    assert list(idle_time_figure(one_rank).data[0].y)[0] == f"stream {one_rank[0]['stream']}"
