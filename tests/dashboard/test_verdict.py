"""The Overview opens with the verdict, in Chromium: on the demo's input-bound run it names the
input pipeline, the saving per step in ms and the action, and links to the evidence; on a run
with no finding it says that nothing stands out."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from dashboard.data.overview import run_summary
from profiler.analysis.verdict import NOTHING_STANDS_OUT
from profiler.demo import run_demo
from profiler.events import TRACE_SUFFIX
from tests.conftest import REFERENCE_TRACES
from tests.dashboard.browser import WAIT_S, open_path, query_value

pytestmark = pytest.mark.browser


@pytest.fixture
def input_bound_root(tmp_path: Path) -> Path:
    root = tmp_path / "traces"
    run_demo(steps=12, out_dir=root)
    return root


def test_the_overview_opens_with_the_verdict(dash_duo: Any, input_bound_root: Path) -> None:
    open_path(dash_duo, input_bound_root, "/?run=demo")
    dash_duo.wait_for_contains_text("#verdict", "input pipeline", timeout=WAIT_S)
    verdict = run_summary(input_bound_root, "demo").verdict
    assert verdict.rule == "dataloader_bound" and verdict.saving_us_per_step is not None
    text = " ".join(dash_duo.find_element("#verdict").text.split())
    saving = f"{verdict.saving_us_per_step / 1000:,.2f} ms per step"
    assert f"Fixing it saves up to {saving} ({verdict.saving_pct:.1f}% of the" in text
    assert "Action: Use DataLoader(num_workers=N" in text
    # The first thing on the page, above every figure.
    first = dash_duo.driver.execute_script(
        "const v = document.getElementById('verdict');"
        "const g = document.getElementById('step-breakdown');"
        "return !!(v.compareDocumentPosition(g) & Node.DOCUMENT_POSITION_FOLLOWING);"
    )
    assert first
    evidence = dash_duo.find_element("#verdict-evidence")
    assert evidence.text == "See the evidence on the Timeline page"
    evidence.click()
    dash_duo.wait_for_element("#timeline", timeout=WAIT_S)
    url = dash_duo.driver.current_url
    assert "/timeline" in url and query_value(url) == "demo"


def test_a_run_with_no_finding_says_nothing_stands_out(dash_duo: Any, tmp_path: Path) -> None:
    run = tmp_path / "traces" / "inference"
    run.mkdir(parents=True)
    shutil.copy(REFERENCE_TRACES / "hta" / "mtia_inference.json.gz", run)
    assert run_summary(tmp_path / "traces", "inference").recommendations == ()
    open_path(dash_duo, tmp_path / "traces", "/?run=inference")
    dash_duo.wait_for_contains_text("#verdict", f"{NOTHING_STANDS_OUT}:", timeout=WAIT_S)
    assert not dash_duo.driver.find_elements(By.CSS_SELECTOR, "#verdict-evidence")


def test_a_run_with_step_logs_only_has_the_step_logs_verdict(input_bound_root: Path) -> None:
    for trace in (input_bound_root / "demo").glob(f"*{TRACE_SUFFIX}"):
        trace.unlink()
    data = run_summary(input_bound_root, "demo")
    assert data.reports == () and data.recommendations == ()
    logs = data.summary["step_logs"]
    assert data.verdict.rule == "dataloader_bound"
    assert data.verdict.saving_us_per_step == logs["data_wait_us"]
    assert data.verdict.step_mean_us == logs["mean_us"]
