"""Headless, sandbox-less, offline Chromium for dash.testing's ``dash_duo``.

dash.testing builds its driver with ``webdriver.Chrome(options=...)``, taking the options from
the ``pytest_setup_options`` hook below; selenium 4.2 then starts the ``chromedriver`` found on
PATH (Debian's /usr/bin/chromedriver). The browser tests fail, not skip, when the browser is
missing and the environment variable ``CI`` is set (``browser_available`` in tests/conftest.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

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
