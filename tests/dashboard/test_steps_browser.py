"""The Steps page in headless Chromium, on a run captured here with no schedule but
``on_anomaly``: the phase split, CPU % and RSS, and a slow step linked to the one deep window,
which it opened."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from dashboard.data.steps import run_steps
from dashboard.figures.steps import NOT_SAMPLED, PHASES, SLOW_STEP
from tests.dashboard.browser import (
    WAIT_S,
    figure_traces,
    grid_cell,
    grid_column,
    open_path,
    query_value,
    wait_for_url,
)

pytestmark = pytest.mark.browser

STEPS = 20
SLOW = 13  # the first step on_anomaly judges (below); its window warms up at 14, records 15-17
STALL_S = 0.5  # at least; and 10x the slowest step before it (a loaded machine's first steps)
# Only the stall can open the window: on_anomaly judges no step before it, and it must take 5x
# the median and 200 ms more (the page still marks slow steps by the default rule, 2x and 1 ms).
TRIGGER = {"factor": 5.0, "min_excess_ms": 200.0, "max_windows": 1, "min_steps": SLOW}


def stalled_loader(batches: list[Any]) -> Iterator[Any]:
    """The batches, the one of step ``SLOW`` after a stall (an input pipeline's hiccup) far
    longer than any step before it, however slow the machine makes them."""
    steps: list[float] = []
    last = time.perf_counter()
    for index, batch in enumerate(batches):
        now = time.perf_counter()
        steps.append(now - last)
        if index == SLOW:
            time.sleep(max(STALL_S, 10 * max(steps)))
        last = time.perf_counter()
        yield batch


def test_steps_page_shows_the_split_the_system_metrics_and_a_linked_slow_step(
    dash_duo: Any, train: Callable[..., Any], tmp_path: Path, every_step_timed: None
) -> None:
    import torch

    import profiler

    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))) for _ in range(STEPS)]
    prof = train(
        steps=STEPS,
        run_name="captured",
        loader=stalled_loader(batches),
        schedule=profiler.on_anomaly(**TRIGGER),
        system_metrics=True,
    )
    (path,) = [Path(path) for path in prof.trace_files]
    window = path.name
    # The page's slow-step rule is the trigger's: the same median of the steps before.
    trigger = json.loads(gzip.decompress(path.read_bytes()))["trainprof"]["window"]["trigger"]
    slow = next(s for s in run_steps(path.parent.parent, "captured").slow if s["step"] == SLOW)
    assert (trigger["step"], slow["median_us"]) == (SLOW, pytest.approx(trigger["median_us"]))

    open_path(dash_duo, tmp_path / "traces", "/steps?run=captured")
    dash_duo.wait_for_contains_text("#steps-body h3", "Steps of run captured", timeout=WAIT_S)

    phases = figure_traces(dash_duo, "steps-phases")
    assert [t["name"] for t in phases] == [label for _, label, _ in PHASES]
    assert all(len(t["y"]) == STEPS for t in phases)  # every step timed (every_step_timed)
    stalled = next(t for t in phases if t["name"] == "data wait")["y"][SLOW]
    assert stalled >= STALL_S * 1000  # ms

    steps = figure_traces(dash_duo, "steps-time")
    assert [t["name"] for t in steps][:2] == ["step time", "data wait"]
    marked = next(t for t in steps if t["name"] == SLOW_STEP)["y"]
    assert max(marked) >= STALL_S * 1000  # the stalled step is marked, in ms
    system = figure_traces(dash_duo, "steps-system")
    cpu = next(t for t in system if t["name"] == "CPU %")
    assert cpu["y"] and all(0 <= v <= 100 * 64 for v in cpu["y"])
    memory = figure_traces(dash_duo, "steps-memory")
    rss = next(t for t in memory if t["name"] == "RSS")
    title = "return document.querySelector('#steps-memory .js-plotly-plot').layout.yaxis.title.text"
    unit = dash_duo.driver.execute_script(title)  # MiB, or GiB from 1 GiB up (CI's Python is)
    scale = {"MiB": 2**20, "GiB": 2**30}[unit.rsplit("(", 1)[-1].rstrip(")").strip()]
    assert len(rss["y"]) == STEPS and all(v * scale > 10 * 2**20 for v in rss["y"])  # with torch
    assert NOT_SAMPLED in dash_duo.find_element("#steps-gpu-util").text  # a CPU-only run

    assert str(SLOW) in grid_column(dash_duo, "steps-slow", "step")
    row = f'#steps-slow .ag-center-cols-container .ag-row[row-id="0:{SLOW}"]'
    cell = dash_duo.find_element(f'{row} .ag-cell[col-id="window"]')
    assert cell.text == window
    recorded = dash_duo.find_element(f'{row} .ag-cell[col-id="recorded"]').text
    assert recorded == f"steps {SLOW + 2}-{SLOW + 4}, opened by this step"
    cell.click()
    url = wait_for_url(dash_duo, lambda u: "/timeline" in u)
    assert (query_value(url), query_value(url, "file")) == ("captured", window)
    dash_duo.wait_for_contains_text("#timeline-body h3", "Timeline of run captured", timeout=WAIT_S)
    assert not dash_duo.driver.find_elements(By.CSS_SELECTOR, grid_cell("steps-slow", "step"))
    assert dash_duo.get_logs() == []
