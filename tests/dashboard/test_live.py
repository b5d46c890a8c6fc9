"""A job still writing: new runs, windows and steps show up without a restart; progress shows."""

from __future__ import annotations

import shutil
import threading
import time
from contextvars import copy_context
from pathlib import Path
from typing import Any

import dash
import pytest
from dash._callback_context import context_value
from dash._utils import AttributeDict
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.app import create_app
from dashboard.data import cache
from dashboard.data.runs import fingerprint, run_version
from tests.dashboard.browser import WAIT_S, open_path, pick, plotly_data
from tests.dashboard.runs import SAMPLE

REFRESH_S = 0.3


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    return root


def _touch_steps(run: Path, lines: int) -> None:
    with (run / "meta" / "steps.0.jsonl").open("a") as out:
        for step in range(lines):
            out.write(f'{{"step": {100 + step}, "dur_us": 1000.0, "data_wait_us": 10.0}}\n')


def test_run_version_follows_trace_files_and_optionally_meta(root: Path) -> None:
    with_meta = run_version(root, "sample", with_meta=True)
    traces_only = run_version(root, "sample", with_meta=False)
    assert with_meta and traces_only and with_meta != traces_only

    _touch_steps(root / "sample", 1)
    assert run_version(root, "sample", with_meta=False) == traces_only
    assert run_version(root, "sample", with_meta=True) != with_meta

    window = sorted((root / "sample").glob("*.json.gz"))[0]
    shutil.copy(window, window.with_name("host_9.1800000000000.pt.trace.json.gz"))
    assert run_version(root, "sample", with_meta=False) != traces_only
    assert run_version(root, "../etc", with_meta=False) is None
    assert run_version(root, "nope", with_meta=False) is None


def test_a_pick_is_never_answered_by_a_refresh_tick(root: Path) -> None:
    shutil.copytree(SAMPLE, root / "later")
    app = create_app(root, refresh_s=REFRESH_S)
    (pick_key,) = [k for k in app.callback_map if "run-picker.value" in k and "url.search" in k]
    (list_key,) = [k for k in app.callback_map if "run-picker.options" in k]
    sync_run = app.callback_map[pick_key]["callback"].__wrapped__
    list_options = app.callback_map[list_key]["callback"].__wrapped__
    # A tick re-asking the pick's callback would make Dash drop the pick's answer in flight.
    assert "refresh.n_intervals" not in str(app.callback_map[pick_key]["inputs"])

    def call(triggered: list[str], picked: str) -> tuple[Any, ...]:
        def run() -> tuple[Any, ...]:  # as Dash calls it: the triggering props in the context
            context_value.set(AttributeDict(triggered_inputs=[{"prop_id": p} for p in triggered]))
            return sync_run("?run=sample", picked)

        return tuple(copy_context().run(run))

    search, shown, _ = call(["run-picker.value"], "later")
    assert (search, shown) == ("?run=later", "later")
    assert list_options(7, ["later", "sample"]) is dash.no_update  # nothing new: not resent
    assert list_options(8, ["sample"]) == ["later", "sample"]


def test_work_in_progress_names_the_file_being_loaded(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    real = cache.load_trace

    def slow_load(path: Path) -> Any:
        started.set()
        release.wait(WAIT_S)
        return real(path)

    monkeypatch.setattr(cache, "load_trace", slow_load)
    cache._loaded_trace.cache_clear()
    file = sorted((root / "sample").glob("*.json.gz"))[0]
    worker = threading.Thread(target=cache.loaded_trace, args=(fingerprint(file),))
    worker.start()
    try:
        assert started.wait(WAIT_S)
        (work,) = cache.work_in_progress()
        assert (work.file, work.stage, work.size_bytes) == (
            file.name,
            "loading",
            file.stat().st_size,
        )
    finally:
        release.set()
        worker.join(WAIT_S)
    assert cache.work_in_progress() == []


def test_create_app_refuses_a_bad_refresh(root: Path) -> None:
    with pytest.raises(ValueError, match="refresh_s"):
        create_app(root, refresh_s=0)


def _points(dash_duo: Any, graph_id: str) -> int:
    return int(plotly_data(dash_duo, graph_id, "return d[0].y ? d[0].y.length : 0;"))


def _picker_options(dash_duo: Any) -> list[str]:
    """The run picker's options, read by opening its menu (closed again after)."""
    dash_duo.find_element("#run-picker").click()
    options = _menu_options(dash_duo)
    dash_duo.find_element("h2").click()
    return options


def _menu_options(dash_duo: Any) -> list[str]:
    """The options of the dropdown menu that is open now."""
    return [o.text for o in dash_duo.find_elements(".dash-dropdown-options .dash-dropdown-option")]


@pytest.mark.browser
def test_new_runs_windows_and_steps_appear_without_a_restart(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/?run=sample", refresh_s=REFRESH_S)
    dash_duo.wait_for_contains_text("h3", "Run sample", timeout=WAIT_S)
    steps, bars = _points(dash_duo, "step-metrics"), _points(dash_duo, "step-breakdown")
    wait = WebDriverWait(dash_duo.driver, WAIT_S)

    _touch_steps(root / "sample", 3)
    wait.until(lambda _: _points(dash_duo, "step-metrics") == steps + 3)

    window = sorted((root / "sample").glob("*.json.gz"))[0]
    shutil.copy(window, window.with_name("host_9.1800000000000.pt.trace.json.gz"))
    wait.until(lambda _: _points(dash_duo, "step-breakdown") > bars)

    shutil.copytree(SAMPLE, root / "later")
    wait.until(lambda _: "later" in _picker_options(dash_duo))
    pick(dash_duo, "#run-picker", "later")
    dash_duo.wait_for_contains_text("h3", "Run later", timeout=WAIT_S)
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_diff_is_redrawn_when_its_base_run_changes(dash_duo: Any, root: Path) -> None:
    shutil.copytree(SAMPLE, root / "base")
    open_path(dash_duo, root, "/diff?run=sample&base=base", refresh_s=REFRESH_S)
    dash_duo.wait_for_contains_text("#diff-step", "(6 steps)", timeout=WAIT_S)

    window = sorted((root / "base").glob("*.json.gz"))[0]
    shutil.copy(window, window.with_name("host_9.1800000000000.pt.trace.json.gz"))

    dash_duo.wait_for_contains_text("#diff-step", "in base (9 steps)", timeout=WAIT_S)
    assert dash_duo.get_logs() == []


# Keeps the text of every callback response the page receives from now on.
_RECORD_RESPONSES = """
    window.trainprofResponses = [];
    const realFetch = window.fetch;
    window.fetch = (...args) => realFetch(...args).then(response => {
        response.clone().text().then(text => window.trainprofResponses.push(text));
        return response;
    });
"""


@pytest.mark.browser
def test_polls_of_an_unchanged_root_leave_the_open_picker_alone(dash_duo: Any, root: Path) -> None:
    shutil.copytree(SAMPLE, root / "other")
    open_path(dash_duo, root, "/?run=sample", refresh_s=REFRESH_S)
    dash_duo.wait_for_contains_text("h3", "Run sample", timeout=WAIT_S)
    dash_duo.find_element("#run-picker").click()
    dash_duo.wait_for_element(".dash-dropdown-options .dash-dropdown-option")
    dash_duo.driver.execute_script(_RECORD_RESPONSES)

    time.sleep(6 * REFRESH_S)  # several polls of a root where nothing changes

    responses = dash_duo.driver.execute_script("return window.trainprofResponses;")
    assert not [r for r in responses if "run-picker" in r or '"nav"' in r]
    assert _menu_options(dash_duo) == ["other", "sample"]

    shutil.copytree(SAMPLE, root / "later")  # a new run is still sent, menu open or not
    WebDriverWait(dash_duo.driver, WAIT_S).until(lambda _: "later" in _menu_options(dash_duo))
