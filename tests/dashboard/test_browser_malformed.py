"""In Chromium, under the app's Content-Security-Policy: malformed runs show the banner, and
the sample run beside them still renders."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from dashboard.figures.overview import CATEGORY_LABELS
from tests.dashboard.browser import (
    WAIT_S,
    figure_traces,
    open_path,
    pick,
    query_value,
    wait_for_url,
)
from tests.dashboard.malformed import BAD_META, BAD_TRACES, STEPS
from tests.dashboard.runs import SAMPLE

pytestmark = pytest.mark.browser

_POLICY_OF_THE_PAGE = (
    "return fetch(location.href).then(r => r.headers.get('content-security-policy'));"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
    BAD_TRACES["corrupt_gzip"](root / "corrupt_gzip")
    BAD_META["steps_wrong_types"](root / "steps_wrong_types")
    return root


def test_malformed_runs_show_the_banner_and_the_sample_still_renders(
    dash_duo: Any, root: Path
) -> None:
    open_path(dash_duo, root, "/timeline?run=corrupt_gzip")
    dash_duo.wait_for_contains_text("#error-banner", "corrupt or truncated gzip", timeout=WAIT_S)
    assert "host_1.1700000000000.pt.trace.json.gz" in dash_duo.find_element("#error-banner").text
    policy = dash_duo.driver.execute_script(_POLICY_OF_THE_PAGE)
    script_src = next(part for part in policy.split(";") if "script-src" in part)
    assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in script_src

    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/?run=steps_wrong_types", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#error-banner", STEPS, timeout=WAIT_S)
    assert "no integer 'step'" in dash_duo.find_element("#error-banner").text
    assert len(figure_traces(dash_duo, "step-breakdown")) == len(CATEGORY_LABELS)  # traces fine

    pick(dash_duo, "#run-picker", "sample")
    wait_for_url(dash_duo, lambda url: query_value(url) == "sample")
    dash_duo.wait_for_contains_text("h3", "Run sample", timeout=WAIT_S)
    assert len(figure_traces(dash_duo, "step-breakdown")) == len(CATEGORY_LABELS)
    assert all(len(t["y"]) == 20 for t in figure_traces(dash_duo, "step-metrics"))
    assert not dash_duo.find_element("#error-banner").is_displayed()
    assert dash_duo.get_logs() == []  # no script or style refused by the policy, no error
