"""Headless, sandbox-less, offline Chromium for dash.testing's ``dash_duo``.

dash.testing builds its driver with ``webdriver.Chrome(options=...)``, taking the options from
the ``pytest_setup_options`` hook below; selenium 4.2 then starts the ``chromedriver`` found on
PATH (Debian's /usr/bin/chromedriver). The browser tests fail, not skip, when the browser is
missing and the environment variable ``CI`` is set (``browser_available`` in tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dash.testing.wait import until
from selenium.webdriver.chrome.options import Options

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = "chromedriver"
CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def pytest_setup_options() -> Options:
    """The Chrome options dash.testing starts its browser with."""
    options = Options()
    for argument in CHROME_ARGS:
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    return options


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.is_file():
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    if shutil.which(CHROMEDRIVER) is None:
        return "chromedriver not found on PATH (apt-get install -y chromium-driver)"
    return None


# How long a browser test's end waits for the page's callbacks to finish before the server stops.
CALLBACKS_DRAIN_S = 15.0


@pytest.fixture(autouse=True)
def _callbacks_done_before_the_server_stops(request: pytest.FixtureRequest) -> Iterator[None]:
    """End a ``dash_duo`` test only once its page has no callback in flight.

    dash.testing stops a Flask server by raising SystemExit in its threads: a request still
    being answered (a page the test's last click opened) died with it, and pytest reported the
    thread's exception after an otherwise passing test. Bounded: a page that keeps calling back
    (an interval) is left as it is after ``CALLBACKS_DRAIN_S``.
    """
    # Requested here, before the test: its teardown (the server's stop) then comes after ours.
    duo = request.getfixturevalue("dash_duo") if "dash_duo" in request.fixturenames else None
    yield
    if duo is None:
        return
    with contextlib.suppress(Exception):  # no page, a closed browser, or still busy: stop anyway
        until(duo._wait_for_callbacks, timeout=CALLBACKS_DRAIN_S, poll=0.1)
