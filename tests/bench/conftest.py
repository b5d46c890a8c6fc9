"""Browser tests here behave as in tests/dashboard: skipped without a browser, failed in CI."""

from __future__ import annotations

import os

import pytest

from tests.dashboard.conftest import missing_browser


@pytest.fixture(autouse=True)
def browser_available(request: pytest.FixtureRequest) -> None:
    """Skip ``browser`` tests where no browser is installed; fail them when ``CI`` is set."""
    if request.node.get_closest_marker("browser") is None:
        return
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)
