"""Every page renders its figures for our own run and for GPU reference traces, in Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.app import create_app
from tests.conftest import REFERENCE_TRACES
from tests.dashboard.browser import WAIT_S, free_port
from tests.dashboard.runs import SAMPLE

pytestmark = pytest.mark.browser

TWO_RANKS = ("two_ranks_rank-0.json.gz", "two_ranks_rank-1.json.gz")
# Figures each page draws for a run with GPU kernels; a CPU-only run shows notices instead
# of the GPU-only ones.
FIGURES = {
    "/": ["step-breakdown", "step-metrics"],
    "/steps": ["steps-time", "steps-phases", "steps-memory"],
    "/timeline": ["timeline"],
    "/operators": ["ops-top"],
    "/kernels": ["kernel-types", "kernels-top", "idle-time"],
    "/memory": ["memory-timeline"],
    "/modules": ["module-tree"],
    "/distributed": ["rank-step-time", "rank-breakdown", "rank-overlap"],
    "/diff": ["diff-categories", "diff-ops"],
}
CPU_ONLY_NOTICES = {"/kernels": "no-kernels"}
CPU_ONLY_FIGURES = {"/distributed": ["rank-step-time", "rank-breakdown"]}  # no communication
NO_MEMORY_SAMPLES = {"/memory": "no-memory", "/modules": "no-modules"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    shutil.copytree(SAMPLE, root / "sample_again")
    gpu = root / "reference" / "two_ranks"
    gpu.mkdir(parents=True)
    for name in TWO_RANKS:
        shutil.copy(REFERENCE_TRACES / "hta" / name, gpu)
    return root


def drawn_points(dash_duo: Any, graph_id: str) -> int:
    """How many values plotly holds over all traces of graph ``graph_id`` (0 if not drawn)."""
    script = """
        const gd = document.querySelector(`#${arguments[0]} .js-plotly-plot`);
        if (!gd || !gd.data) return 0;
        return gd.data.reduce((n, t) => n + ((t.x || t.values || t.y || []).length || 0), 0);
    """
    return int(dash_duo.driver.execute_script(script, graph_id))


def visit(dash_duo: Any, path: str, expected: list[str], notices: list[str]) -> None:
    """Open ``path``; wait until every expected figure has points or notice is shown."""
    dash_duo.driver.get(f"{dash_duo.server_url}{path}")

    def ready(_: Any) -> bool:
        figures = all(drawn_points(dash_duo, graph) > 0 for graph in expected)
        shown = all(dash_duo.find_elements(f"#{notice}") for notice in notices)
        return figures and shown

    WebDriverWait(dash_duo.driver, WAIT_S * 2).until(ready, message=f"{path} did not render")
    banner = dash_duo.find_elements("#error-banner")
    assert not banner or not banner[0].is_displayed(), f"{path}: {banner[0].text}"


@pytest.mark.parametrize(
    ("run", "base", "gpu"),
    [("sample", "sample_again", False), ("reference/two_ranks", "sample", True)],
)
def test_every_page_draws_its_figures(
    dash_duo: Any, root: Path, run: str, base: str, gpu: bool
) -> None:
    dash_duo.start_server(create_app(root), port=free_port())
    for page, figures in FIGURES.items():
        notices = []
        if not gpu and page in CPU_ONLY_NOTICES:
            figures, notices = [], [CPU_ONLY_NOTICES[page]]
        if not gpu:
            figures = CPU_ONLY_FIGURES.get(page, figures)
        if gpu and page in NO_MEMORY_SAMPLES:  # HTA's traces have no memory events or modules
            figures, notices = [], [NO_MEMORY_SAMPLES[page]]
        if gpu and page == "/":  # a plain torch.profiler run has no always-on step metrics
            figures = ["step-breakdown"]
        if gpu and page == "/steps":
            figures, notices = [], ["no-steps"]
        query = f"?run={run}" + (f"&base={base}" if page == "/diff" else "")
        visit(dash_duo, f"{page}{query}", figures, notices)
    assert dash_duo.get_logs() == []
