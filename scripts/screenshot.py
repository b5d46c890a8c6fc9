"""The README's screenshot of the Overview, taken from a real profiled run.

Profiles the built-in demo (``profiler.demo.run_demo``: a small CNN, CPU) into a temporary trace
store, or takes an existing run directory, serves the dashboard on it, opens the Overview in
headless Chromium at a fixed window size, waits for its figures and saves a PNG.

    python scripts/screenshot.py [--run-dir traces/RUN] [--steps N] [--out docs/overview.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/screenshot.py`
    sys.path.insert(0, str(REPO))

from bench.dashboard import OVERVIEW_READY, browser, serve  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "overview.png"
WINDOW = (1400, 1800)
READY_TIMEOUT_S = 120
SETTLE_S = 1.0  # plotly's own transitions, after the figures exist
MAX_BYTES = 400 * 1024
FIGURES_READY = (
    "return Array.from(document.querySelectorAll('.js-plotly-plot'))"
    ".every(g => g.querySelector('.main-svg') && g.data);"
)


def profile_demo(out_dir: Path, steps: int) -> Path:
    """Run the demo training under the profiler into ``out_dir``; return the run directory."""
    from profiler.demo import run_demo

    return Path(run_demo(steps=steps, out_dir=out_dir, run_name="demo").run_dir)


def take_screenshot(run_dir: Path, out: Path, window: tuple[int, int] = WINDOW) -> Path:
    """Serve ``run_dir``'s trace store, open the run's Overview and save it as a PNG at ``out``."""
    root, run = run_dir.parent, run_dir.name
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(root, Path(tmp) / "server.log") as base,
        browser(window) as driver,
    ):
        driver.get(f"{base}/?run={quote(run)}")
        wait = WebDriverWait(driver, READY_TIMEOUT_S, poll_frequency=0.1)
        wait.until(lambda d: d.execute_script(OVERVIEW_READY))
        wait.until(lambda d: d.execute_script(FIGURES_READY))
        time.sleep(SETTLE_S)
        driver.save_screenshot(str(out))
    shrink(out)
    return out


def shrink(png: Path, limit: int = MAX_BYTES) -> None:
    """Re-save ``png`` with a 256-colour palette when it is over ``limit`` bytes (needs Pillow)."""
    if png.stat().st_size <= limit:
        return
    try:
        from PIL import Image
    except ImportError:
        print(f"{png} is over {limit // 1024} KB; install Pillow to shrink it", file=sys.stderr)
        return
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256)
    small.save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None, help="an existing run directory")
    parser.add_argument("--steps", type=int, default=30, help="demo steps when profiling one")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainprof-screenshot-") as tmp:
        run_dir = args.run_dir or profile_demo(Path(tmp) / "traces", args.steps)
        out = take_screenshot(run_dir.resolve(), args.out)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
