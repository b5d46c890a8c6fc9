"""What the browser tests share: serving the app on a free port, reading plotly's data, waiting.

Each test serves on a port of its own, so browser tests in two processes at once do not meet.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.app import create_app

WAIT_S = 20


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def open_path(dash_duo: Any, root: Path, path_query: str, **app_options: Any) -> None:
    """Serve the app over ``root`` (``create_app(root, **app_options)``) and open ``path_query``
    (``/page?run=...``)."""
    dash_duo.start_server(create_app(root, **app_options), port=free_port())
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}{path_query}", timeout=WAIT_S)


def plotly_data(dash_duo: Any, graph_id: str, script: str) -> Any:
    """``script`` run on graph ``graph_id``'s plotly data as ``d``."""
    dash_duo.wait_for_element(f"#{graph_id} .main-svg", timeout=WAIT_S)
    return dash_duo.driver.execute_script(
        f"const d = document.querySelector('#{graph_id} .js-plotly-plot').data; {script}"
    )


def figure_traces(dash_duo: Any, graph_id: str) -> list[dict[str, Any]]:
    """Name, type and y values of every trace plotly drew in graph ``graph_id``."""
    script = "return d.map(t => ({name: t.name, type: t.type, y: Array.from(t.y || [])}));"
    return list(plotly_data(dash_duo, graph_id, script))


def wait_for_url(dash_duo: Any, test: Any) -> str:
    """Wait until the browser's URL passes ``test``; return it."""
    WebDriverWait(dash_duo.driver, WAIT_S).until(lambda d: test(d.current_url))
    return str(dash_duo.driver.current_url)


def query_value(url: str, key: str = "run") -> str | None:
    """The query parameter ``key`` of ``url``, unquoted."""
    values = parse_qs(urlsplit(url).query).get(key)
    return unquote(values[0]) if values else None


def grid_cell(grid_id: str, field: str) -> str:
    """The CSS selector of the cells of column ``field`` in AG Grid ``grid_id``."""
    return f'#{grid_id} .ag-row .ag-cell[col-id="{field}"]'


def grid_column(dash_duo: Any, grid_id: str, field: str) -> list[str]:
    """The shown text of column ``field`` on the grid's current page, top row first."""
    dash_duo.wait_for_element(grid_cell(grid_id, field), timeout=WAIT_S)
    script = """
        const [gridId, field] = arguments;
        const rows = [...document.querySelectorAll(`#${gridId} .ag-center-cols-container .ag-row`)];
        rows.sort((a, b) => +a.getAttribute('row-index') - +b.getAttribute('row-index'));
        return rows.map(r => r.querySelector(`.ag-cell[col-id="${field}"]`)?.textContent ?? null);
    """
    return list(dash_duo.driver.execute_script(script, grid_id, field))


def number(text: str) -> float:
    """A number as a grid shows it (``12,345.6``)."""
    return float(text.replace(",", ""))


def pick(dash_duo: Any, dropdown: str, value: str) -> None:
    """Open the ``dropdown`` (a CSS selector) and click its option ``value``.

    dash.testing's ``select_dcc_dropdown`` returns quietly when the option is not there yet;
    this waits for it and fails when it never shows.
    """

    def option(driver: Any) -> Any:
        menu = driver.find_elements(By.CSS_SELECTOR, ".dash-dropdown-options")
        if not menu:
            driver.find_element(By.CSS_SELECTOR, dropdown).click()
            return None
        found = menu[0].find_elements(By.CSS_SELECTOR, ".dash-dropdown-option")
        return next((o for o in found if o.text == value), None)

    stale = (StaleElementReferenceException,)
    wait = WebDriverWait(dash_duo.driver, WAIT_S, ignored_exceptions=stale)
    wait.until(option, f"no option {value!r} in {dropdown}").click()
