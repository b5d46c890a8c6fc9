"""Time to first render of the dashboard's Overview and Timeline on a synthetic trace.

A synthetic trace of ``--events`` events (bench/synth.py; kept under the cache directory between
runs) is served by the real app in a fresh server process, and opened in headless Chromium
(selenium, Debian's chromium + chromedriver, the browser tests' options). The clock runs from
``driver.get(url)`` until the page's figures are drawn:

- Overview (``/?run=NAME``): ``#step-breakdown .main-svg`` and ``#recommendations`` exist;
- Timeline (``/timeline?run=NAME``): ``#timeline``'s plotly figure holds points.

Cold is the first visit after the server starts (empty caches, no columnar cache on disk: the
trace is loaded and analysed); warm is a new page load afterwards, repeated ``--warm-reps``
times, median reported.
Each page gets its own server and browser. Goal (issue): Overview warm under 3 s for 1M events.
For the Timeline it also reports the points its figure sends fully zoomed out, and the shapes
``dashboard.data.timeline.run_timeline`` returns for the whole trace.

    python bench/dashboard.py [--events N | --quick] [--warm-reps N] [--json OUT]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/dashboard.py`
    sys.path.insert(0, str(REPO))

from bench.common import Ratio, machine, write_ratios  # noqa: E402
from bench.synth import trace_file_name, write_synthetic_run  # noqa: E402
from tests.dashboard.browser import free_port  # noqa: E402
from tests.dashboard.conftest import CHROME_ARGS, CHROMIUM  # noqa: E402

RUN_NAME = "synth"
DEFAULT_EVENTS = 1_000_000
QUICK_EVENTS = 100_000
GOAL_WARM_S = 3.0
RENDER_TIMEOUT_S = 600
SERVER_START_S = 60
WINDOW = (1400, 1000)
CACHE_DIR = Path(tempfile.gettempdir()) / "trainprof-bench"
TIMELINE_PAGE = REPO / "dashboard" / "pages" / "timeline.py"
OVERVIEW_READY = (
    "return !!document.querySelector('#step-breakdown .main-svg')"
    " && !!document.getElementById('recommendations');"
)
TIMELINE_READY = (
    "const g = document.querySelector('#timeline .js-plotly-plot');"
    "return !!(g && g.data && g.data.some(t => t.x && t.x.length));"
)
TIMELINE_POINTS = (
    "return document.querySelector('#timeline .js-plotly-plot').data"
    ".reduce((n, t) => n + (t.x ? t.x.length : 0), 0);"
)
_SERVE = "from dashboard.app import create_app; create_app({root!r}).run(port={port}, debug=False)"


@dataclass
class PageResult:
    """One page's first renders: cold, the warm repeats, and for the Timeline its size."""

    page: str
    events: int
    cold_s: float | None = None
    warm_s: list[float] = field(default_factory=list)
    points: int | None = None
    shapes: int | None = None
    skipped: str | None = None

    @property
    def warm_median_s(self) -> float | None:
        return statistics.median(self.warm_s) if self.warm_s else None


def synthetic_root(events: int, cache_dir: Path = CACHE_DIR) -> Path:
    """A trace root holding run ``synth``: one synthetic trace of ``events`` events (cached)."""
    root = cache_dir / f"events-{events}"
    if not (root / RUN_NAME / trace_file_name(0)).is_file():  # written atomically: complete
        write_synthetic_run(root / RUN_NAME, events)
    return root


@contextmanager
def serve(root: Path, log: Path) -> Iterator[str]:
    """The dashboard over ``root`` in a fresh Python process; yields its base URL."""
    port = free_port()
    code = _SERVE.format(root=str(root), port=port)
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=out, stderr=out)
    try:
        _wait_for_port(port, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the dashboard server exited with {server.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the dashboard server did not listen on port {port}")


# Software WebGL, as users' browsers have WebGL (the tests' Chromium runs with --disable-gpu).
WEBGL_ARGS = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader")


@contextmanager
def browser(window: tuple[int, int] = WINDOW, *, webgl: bool = False) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with the browser tests' options, at a fixed window size; with
    ``webgl``, WebGL in software instead of no GPU."""
    arguments = [*CHROME_ARGS, f"--window-size={window[0]},{window[1]}"]
    if webgl:
        arguments = [a for a in arguments if a != "--disable-gpu"] + list(WEBGL_ARGS)
    options = Options()
    for argument in arguments:
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(options=options)
    try:
        yield driver
    finally:
        driver.quit()


def time_render(driver: webdriver.Chrome, url: str, ready_script: str) -> float:
    """Seconds from opening ``url`` (a new page load) until ``ready_script`` returns true."""
    driver.get("about:blank")
    start = time.perf_counter()
    driver.get(url)
    WebDriverWait(driver, RENDER_TIMEOUT_S, poll_frequency=0.05).until(
        lambda d: d.execute_script(ready_script)
    )
    return time.perf_counter() - start


def measure_page(
    result: PageResult, root: Path, path: str, ready_script: str, warm_reps: int
) -> None:
    """Fill ``result`` with one cold and ``warm_reps`` warm renders of ``path``."""
    url_path = f"{path}?run={RUN_NAME}"
    # Cold is a first visit ever: no columnar cache from an earlier run of the bench.
    shutil.rmtree(root / RUN_NAME / "meta" / "cache", ignore_errors=True)
    with (
        serve(root, root.parent / f"server-{result.page.lower()}.log") as base,
        browser() as driver,
    ):
        result.cold_s = time_render(driver, base + url_path, ready_script)
        result.warm_s = [time_render(driver, base + url_path, ready_script)
                         for _ in range(warm_reps)]  # fmt: skip
        if result.page == "Timeline":
            result.points = int(driver.execute_script(TIMELINE_POINTS))


def measure_overview(root: Path, events: int, warm_reps: int) -> PageResult:
    """The Overview's cold and warm first renders."""
    result = PageResult("Overview", events)
    measure_page(result, root, "/", OVERVIEW_READY, warm_reps)
    return result


def measure_timeline(root: Path, events: int, warm_reps: int) -> PageResult:
    """The Timeline's cold and warm first renders, and what it draws fully zoomed out.

    Skipped, with the reason, while ``dashboard/pages/timeline.py`` does not exist.
    """
    result = PageResult("Timeline", events)
    if not TIMELINE_PAGE.is_file():
        result.skipped = f"no Timeline page yet ({TIMELINE_PAGE.relative_to(REPO)} is missing)"
        return result
    measure_page(result, root, "/timeline", TIMELINE_READY, warm_reps)
    result.shapes = timeline_shapes(root)
    return result


def timeline_shapes(root: Path) -> int | None:
    """Shapes the Timeline's data layer returns for the whole trace (None: it failed)."""
    from dashboard.data.timeline import run_timeline

    view = run_timeline(root, RUN_NAME)
    return None if isinstance(view, str) else view.shape_count


def run_bench(
    events: int, *, warm_reps: int = 5, cache_dir: Path = CACHE_DIR, timeline: bool = True
) -> list[PageResult]:
    """Generate (or reuse) the trace, then measure the Overview and the Timeline."""
    root = synthetic_root(events, cache_dir)
    results = [measure_overview(root, events, warm_reps)]
    if timeline:
        results.append(measure_timeline(root, events, warm_reps))
    return results


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(results: list[PageResult], console: Console) -> None:
    """The results as a table, then the goal's verdict and any skipped page."""
    table = Table(title="dashboard: time to first render (headless Chromium)")
    for column in ("page", "events", "cold s", "warm s (median)", "warm min..max", "shapes"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for r in results:
        spread = f"{min(r.warm_s):.2f}..{max(r.warm_s):.2f}" if r.warm_s else "-"
        size = "-" if r.shapes is None else f"{r.shapes:,} ({r.points:,} points)"
        row = (r.page, f"{r.events:,}", _seconds(r.cold_s), _seconds(r.warm_median_s), spread)
        table.add_row(*row, size)
    console.print(table)
    for r in results:
        if r.skipped:
            console.print(f"{r.page}: skipped: {r.skipped}")
        elif r.page == "Overview" and r.warm_median_s is not None:
            met = "met" if r.warm_median_s < GOAL_WARM_S else "NOT met"
            console.print(f"goal: Overview warm < {GOAL_WARM_S:.0f} s: {met}")


def page_ratios(results: list[PageResult]) -> list[Ratio]:
    """The pages' renders as ratios: cold, warm (the Overview's against its goal, which is
    for 1M events), and the Timeline's shapes fully zoomed out."""
    found: list[Ratio] = []
    for page in results:
        note = f"{page.events:,} events"
        if page.cold_s is not None:
            found.append(Ratio(f"{page.page} first render, cold", page.cold_s, unit="s", note=note))
        if page.warm_median_s is not None:
            found.append(warm_render(page))
        if page.shapes is not None:
            points = f"{page.points:,} points" if page.points is not None else "points unknown"
            name = "Timeline shapes sent fully zoomed out"
            found.append(Ratio(name, page.shapes, unit="shapes", note=f"{note}, {points}"))
    return found


def warm_render(page: PageResult) -> Ratio:
    """A page's median warm render; the Overview's with its goal where the trace is 1M events."""
    value = page.warm_median_s
    assert value is not None
    note = f"{page.events:,} events, median of {len(page.warm_s)}"
    name = f"{page.page} first render, warm"
    if page.page != "Overview":
        return Ratio(name, value, unit="s", note=note)
    if page.events < DEFAULT_EVENTS:
        note += f"; goal < {GOAL_WARM_S:g} s is at {DEFAULT_EVENTS:,}"
        return Ratio(name, value, unit="s", note=note)
    return Ratio(name, value, GOAL_WARM_S, "<=", "s", note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    parser.add_argument("--warm-reps", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--no-timeline", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    events = QUICK_EVENTS if args.quick else args.events
    results = run_bench(
        events, warm_reps=args.warm_reps, cache_dir=args.cache_dir, timeline=not args.no_timeline
    )
    report(results, Console(width=120))
    if args.json:
        write_ratios(args.json, page_ratios(results), machine(), pages=[asdict(r) for r in results])


if __name__ == "__main__":
    main()
