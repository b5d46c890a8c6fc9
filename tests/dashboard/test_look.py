"""The look, in Chromium: every page fits 1280 px, the shell is Mantine's, nothing is fetched
from another origin, and the page can be framed only where the app says so."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dash
import pytest
from selenium.webdriver.support.ui import WebDriverWait

from bench.dashboard import browser
from dashboard.app import create_app
from dashboard.data.overview import run_summary
from dashboard.figures.palette import FONT_FAMILY
from tests.conftest import REFERENCE_TRACES
from tests.dashboard.browser import WAIT_S, free_port
from tests.dashboard.runs import SAMPLE
from tests.dashboard.test_every_page import TWO_RANKS

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1280, 800
GPU_RUN = "reference/two_ranks"
# The page is drawn: its body filled, no callback pending, every figure and grid rendered.
DRAWN = """
    const body = document.querySelector('[id$="-body"]');
    if (!body || !body.textContent.trim()) return false;
    if (document.querySelector('[data-dash-is-loading="true"]')) return false;
    const graphs = [...document.querySelectorAll('.js-plotly-plot')];
    return graphs.every(g => g.querySelector('.main-svg'));
"""
SIDEWAYS = "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
OTHER_ORIGINS = """
    return performance.getEntriesByType('resource').map(e => e.name)
        .filter(u => !u.startsWith(location.origin) && !u.startsWith('data:'));
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    gpu = root / GPU_RUN
    gpu.mkdir(parents=True)
    for name in TWO_RANKS:
        shutil.copy(REFERENCE_TRACES / "hta" / name, gpu)
    return root


def wait_drawn(dash_duo: Any, url: str) -> None:
    dash_duo.driver.get(url)
    WebDriverWait(dash_duo.driver, WAIT_S * 2).until(
        lambda d: d.execute_script(DRAWN), message=f"{url} was not drawn"
    )


def test_every_page_fits_1280_px_and_loads_nothing_from_elsewhere(
    dash_duo: Any, root: Path
) -> None:
    dash_duo.start_server(create_app(root), port=free_port())
    dash_duo.driver.set_window_size(WIDTH, HEIGHT)
    paths = [page["path"] for page in dash.page_registry.values()]
    assert {"/runs", "/", "/timeline", "/kernels", "/distributed", "/diff"} <= set(paths)

    for path in paths:
        query = f"?run={GPU_RUN}" + ("&base=sample" if path == "/diff" else "")
        wait_drawn(dash_duo, f"{dash_duo.server_url}{path}{query}")

        assert dash_duo.driver.execute_script(SIDEWAYS) <= 0, f"{path} scrolls sideways"
        assert dash_duo.driver.execute_script(OTHER_ORIGINS) == [], path
        active = dash_duo.find_elements("#nav a[data-active]")
        assert [a.get_attribute("href").split("?")[0] for a in active] == [
            f"{dash_duo.server_url}{path}"
        ]
    assert dash_duo.get_logs() == []  # no CSP refusal, no React error


def test_the_shell_is_mantine_with_the_figures_font(dash_duo: Any, root: Path) -> None:
    dash_duo.start_server(create_app(root), port=free_port())
    dash_duo.driver.set_window_size(WIDTH, HEIGHT)
    wait_drawn(dash_duo, f"{dash_duo.server_url}/?run=sample")

    navbar = dash_duo.find_element(".mantine-AppShell-navbar")
    assert navbar.find_element("css selector", "#nav")
    header = dash_duo.find_element(".mantine-AppShell-header")
    assert header.find_element("css selector", "#run-picker")
    font = dash_duo.driver.execute_script("return getComputedStyle(document.body).fontFamily")
    assert font.split(",")[0] == FONT_FAMILY.split(",")[0]
    # The verdict is a card: a border and its severity on the left edge, its figures as cards.
    verdict = dash_duo.find_element("#verdict")
    assert verdict.value_of_css_property("border-left-width") == "6px"
    expected = run_summary(root, "sample").verdict
    cards = [c.text.split("\n") for c in dash_duo.find_elements("#verdict-numbers .key-number")]
    assert cards == [
        ["mean step", f"{expected.step_mean_us / 1000:,.2f} ms"],
        ["saving per step", f"{expected.saving_us_per_step / 1000:,.2f} ms"],
        ["share of the step", f"{expected.saving_pct:.1f}%"],
        ["severity", expected.severity],
    ]


class _Parent(BaseHTTPRequestHandler):
    """A page of another origin (another port) framing the dashboard, as Jupyter does."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f'<html><body><iframe id="app" src="{self.target}" width="1200" height="700">'
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def parent_page() -> Iterator[tuple[str, type[_Parent]]]:
    handler = type("Parent", (_Parent,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("framed", [True, False])
def test_only_a_framable_app_draws_in_another_origins_frame(
    dash_duo: Any, root: Path, parent_page: tuple[str, type[_Parent]], framed: bool
) -> None:
    framers = ("http://localhost:*",) if framed else ()
    dash_duo.start_server(create_app(root, frame_ancestors=framers), port=free_port())
    url, handler = parent_page
    handler.target = f"{dash_duo.server_url}/?run=sample"

    dash_duo.driver.get(url)
    dash_duo.driver.switch_to.frame(dash_duo.driver.find_element("css selector", "#app"))
    if framed:
        WebDriverWait(dash_duo.driver, WAIT_S).until(
            lambda d: "Run sample" in d.execute_script("return document.body.innerText")
        )
    else:  # the browser refuses it: the frame holds no page of the app
        WebDriverWait(dash_duo.driver, WAIT_S).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        # The app's HTML carries its title and React's root before any script runs.
        assert dash_duo.driver.title != "trainprof"
        assert not dash_duo.driver.find_elements("css selector", "#react-entry-point")
    dash_duo.driver.switch_to.default_content()


@pytest.fixture
def webgl_driver() -> Iterator[Any]:
    """Chromium as the other tests start it, but with (software) WebGL, as users' browsers."""
    with browser((WIDTH, HEIGHT), webgl=True) as driver:
        yield driver


def test_the_timeline_draws_with_webgl_under_the_content_security_policy(
    dash_duo: Any, root: Path, webgl_driver: Any
) -> None:
    # plotly.min.js compiles its WebGL code with new Function(), which the policy (no
    # 'unsafe-eval') refuses: scattergl then says "WebGL is not supported". The app serves
    # plotly's strict bundle instead, which needs no eval.
    dash_duo.start_server(create_app(root), port=free_port())
    assert webgl_driver.execute_script(
        "return !!document.createElement('canvas').getContext('webgl')"
    )

    webgl_driver.get(f"{dash_duo.server_url}/timeline?run=sample")
    graph = "document.querySelector('#timeline .js-plotly-plot')"
    drawn = f"return !!{graph}?._fullLayout;"
    WebDriverWait(webgl_driver, WAIT_S * 2).until(lambda d: d.execute_script(drawn))

    text = webgl_driver.execute_script("return document.body.innerText")
    assert "WebGL is not supported" not in text
    assert webgl_driver.find_elements("css selector", "#timeline .gl-container canvas")
    plotly = webgl_driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(u => u.includes('plotly'))"
    )
    assert [url.split("?")[0].rsplit("/", 1)[-1] for url in plotly] == ["plotly-strict.min.js"]
    refused = [e for e in webgl_driver.get_log("browser") if "Content Security" in e["message"]]
    assert refused == []


def test_the_dark_switch_darkens_the_page_its_figures_and_tables(dash_duo: Any, root: Path) -> None:
    dash_duo.start_server(create_app(root), port=free_port())
    dash_duo.driver.set_window_size(WIDTH, HEIGHT)
    wait_drawn(dash_duo, f"{dash_duo.server_url}/kernels?run={GPU_RUN}")
    scheme = "return document.documentElement.getAttribute('data-mantine-color-scheme')"
    assert dash_duo.driver.execute_script(scheme) == "light"

    dash_duo.find_element("#color-scheme").click()

    WebDriverWait(dash_duo.driver, WAIT_S).until(lambda d: d.execute_script(scheme) == "dark")
    colours = dash_duo.driver.execute_script(
        """
        const style = (selector, property) =>
            getComputedStyle(document.querySelector(selector)).getPropertyValue(property);
        return {
            body: style('body', 'background-color'),
            grid: style('.ag-root-wrapper', 'background-color'),
            figure: style('.js-plotly-plot .main-svg', 'background-color'),
            text: style('.js-plotly-plot .xtick text', 'fill'),
        };
        """
    )
    assert _brightness(colours["body"]) < 80  # Mantine's dark body
    assert colours["grid"] == colours["body"]
    assert colours["figure"] == "rgba(0, 0, 0, 0)"  # the page shows through
    assert _brightness(colours["text"]) > 150  # light text on it
    # The choice outlives the page: Mantine keeps it in the browser's storage.
    wait_drawn(dash_duo, f"{dash_duo.server_url}/?run=sample")
    assert dash_duo.driver.execute_script(scheme) == "dark"


def _brightness(css_colour: str) -> float:
    """The mean of an ``rgb(...)``/``rgba(...)`` colour's red, green and blue."""
    channels = css_colour[css_colour.index("(") + 1 : css_colour.index(")")].split(",")
    return sum(float(c) for c in channels[:3]) / 3
