"""The README's screenshots: every dashboard page, 1280 px wide, from real runs.

Builds a temporary trace root with three runs: ``demo`` (the built-in demo, a small CNN on the
CPU, profiled now by ``profiler.demo.run_demo``), ``sample`` (the repository's ``traces/sample``)
and ``reference/two_ranks`` (the two-rank GPU reference trace from ``tests/data/hta``). Serves
the dashboard on it, opens each page in headless Chromium at 1280 px wide, waits for its
figures and tables, and saves ``docs/images/<page>.png`` (the window grown to the page's
height, at most :data:`MAX_HEIGHT_PX`; palette-reduced when over :data:`MAX_BYTES`).

    python scripts/screenshot.py [--steps N] [--out-dir docs/images] [--pages overview,kernels]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/screenshot.py`
    sys.path.insert(0, str(REPO))

from bench.dashboard import browser, serve  # noqa: E402

DEFAULT_OUT_DIR = REPO / "docs" / "images"
WIDTH_PX = 1280
FIRST_HEIGHT_PX = 800
MAX_HEIGHT_PX = 2200
READY_TIMEOUT_S = 180
SETTLE_S = 1.5  # plotly's and the grid's own transitions, after they exist
MAX_BYTES = 250 * 1024
TWO_RANKS = ("two_ranks_rank-0.json.gz", "two_ranks_rank-1.json.gz")
GPU_RUN = "reference/two_ranks"
# Ready when the page's body is filled, every figure drawn, every grid has rows, no spinner.
PAGE_READY = """
    const [wanted] = arguments;
    const body = document.querySelector('[id$="-body"]');
    if (!body || !body.children.length || body.querySelector('[hidden]') === body.firstChild)
        return false;
    if (document.querySelector('[data-dash-is-loading="true"]')) return false;
    if (!wanted.every(id => document.getElementById(id))) return false;
    const graphs = [...document.querySelectorAll('.js-plotly-plot')];
    if (!graphs.every(g => g.querySelector('.main-svg') && g.data)) return false;
    const grids = [...document.querySelectorAll('.ag-root-wrapper')];
    return grids.every(g => g.querySelector('.ag-row, .ag-overlay-no-rows-center'));
"""

GROWN_HEIGHT = (
    "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight;"
)
SELECT_ALL_RUNS = "dash_ag_grid.getApi('runs-table').selectAll();"


@dataclass(frozen=True)
class Shot:
    """One page to capture: its file name, path and query, and an element it must show."""

    name: str
    path: str
    run: str
    wanted: tuple[str, ...]
    extra: str = ""
    then: str = ""  # a script run once the page is ready (then waited for again)

    def url(self, base: str) -> str:
        return f"{base}{self.path}?run={quote(self.run, safe='/')}{self.extra}"


SHOTS = (
    Shot("runs", "/runs", "demo", ("runs-table",), then=SELECT_ALL_RUNS),
    Shot("overview", "/", "demo", ("verdict", "step-breakdown")),
    Shot("steps", "/steps", "demo", ()),
    Shot("operators", "/operators", "demo", ("ops-top",)),
    Shot("kernels", "/kernels", GPU_RUN, ("kernel-types", "kernels-top")),
    Shot("memory", "/memory", "demo", ()),
    Shot("modules", "/modules", "demo", ()),
    Shot("timeline", "/timeline", "demo", ("timeline",)),
    Shot("distributed", "/distributed", GPU_RUN, ("rank-step-time",)),
    Shot("diff", "/diff", "demo", ("diff-categories",), extra="&base=sample"),
)


def build_root(root: Path, steps: int) -> Path:
    """``root`` holding the three runs (the demo profiled now); returns it."""
    from profiler.demo import run_demo

    run_demo(steps=steps, out_dir=root, run_name="demo")
    shutil.copytree(REPO / "traces" / "sample", root / "sample")
    gpu = root / GPU_RUN
    gpu.mkdir(parents=True)
    for name in TWO_RANKS:
        shutil.copy(REPO / "tests" / "data" / "hta" / name, gpu)
    return root


def capture(root: Path, shots: list[Shot], out_dir: Path) -> list[Path]:
    """Serve ``root`` and save one PNG per shot under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(root, Path(tmp) / "server.log") as base,
        browser((WIDTH_PX, FIRST_HEIGHT_PX), webgl=True) as driver,  # the Timeline: WebGL
    ):
        for shot in shots:
            driver.set_window_size(WIDTH_PX, FIRST_HEIGHT_PX)
            driver.get(shot.url(base))
            _wait_ready(driver, shot)
            if shot.then:
                driver.execute_script(shot.then)
                time.sleep(SETTLE_S)  # the callbacks it starts
                _wait_ready(driver, shot)
            time.sleep(SETTLE_S)
            # The window's height counts the browser's own bars: grow it by the page's overflow.
            height = int(driver.execute_script(GROWN_HEIGHT))
            driver.set_window_size(WIDTH_PX, min(max(height, FIRST_HEIGHT_PX), MAX_HEIGHT_PX))
            time.sleep(SETTLE_S)  # plotly redraws at the new size
            out = out_dir / f"{shot.name}.png"
            driver.save_screenshot(str(out))
            shrink(out)
            saved.append(out)
            print(f"{out.name}: {out.stat().st_size / 1024:.0f} KB", flush=True)
    return saved


def _wait_ready(driver: Any, shot: Shot) -> None:
    wait = WebDriverWait(driver, READY_TIMEOUT_S, poll_frequency=0.2)
    try:
        wait.until(lambda d: d.execute_script(PAGE_READY, list(shot.wanted)))
    except TimeoutException:  # save what it shows: the picture says what went wrong
        print(f"{shot.name}: not ready after {READY_TIMEOUT_S} s", file=sys.stderr)


def shrink(png: Path, limit: int = MAX_BYTES) -> None:
    """Re-save ``png`` with a 256-colour palette, then fewer, until it is under ``limit``
    bytes (needs Pillow)."""
    if png.stat().st_size <= limit:
        return
    try:
        from PIL import Image
    except ImportError:
        print(f"{png} is over {limit // 1024} KB; install Pillow to shrink it", file=sys.stderr)
        return
    with Image.open(png) as image:
        rgb = image.convert("RGB")
    for colors in (256, 128, 64):
        rgb.quantize(colors=colors).save(png, optimize=True)
        if png.stat().st_size <= limit:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="demo steps to profile")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--pages", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    names = {name for name in args.pages.split(",") if name}
    shots = [shot for shot in SHOTS if not names or shot.name in names]
    with tempfile.TemporaryDirectory(prefix="trainprof-screenshot-") as tmp:
        root = build_root(Path(tmp) / "traces", args.steps)
        capture(root, shots, args.out_dir)


if __name__ == "__main__":
    main()
