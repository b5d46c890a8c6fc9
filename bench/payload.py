"""Bytes the dashboard sends per page, and the server CPU of a live Overview's polls.

For one checkout of the code (``--checkout``, default this one; a ``git worktree`` of an older
commit measures "before"), in a fresh process over a synthetic run of ``--events`` events
(bench/synth.py):

- HTML bytes: the response to ``GET /<page>?run=synth`` for each of the eight pages (Dash Pages
  embeds its validation layout, built from every page's layout, in each);
- callback bytes: what drawing the Overview and the Timeline costs after the HTML: the pages
  router's answer, plus the page body's fill callback where pages have one;
- live CPU: process CPU seconds (``time.process_time``) for ``--polls`` polls of an Overview on a
  run whose step log has 1k, then 100k lines, ``--new`` steps appended before each poll: before,
  each poll redraws the page; after, each poll reads the new lines and extends the figure.

    python bench/payload.py [--events N ...] [--checkout DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/payload.py`
    sys.path.insert(0, str(REPO))

from bench.common import Ratio, machine, write_ratios  # noqa: E402
from bench.dashboard import RUN_NAME, synthetic_root  # noqa: E402

PAGES = ("/", "/timeline", "/operators", "/kernels", "/memory", "/modules", "/distributed", "/diff")
DRAWN = ("/", "/timeline")
STEP_COUNTS = (1_000, 100_000)
CACHE_DIR = Path(tempfile.gettempdir()) / "trainprof-bench"

# Runs inside the measured checkout: it imports that checkout's dashboard, nothing of this one.
_PAYLOAD = r"""
import json, sys
from dashboard.app import create_app
root, run, pages, drawn = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
client = create_app(root).server.test_client()
html = {page: len(client.get(f"{page}?run={run}").data) for page in pages}
bodies = {"/": "overview-body", "/timeline": "timeline-body"}

def post(output, outputs, inputs, changed):
    body = {"output": output, "outputs": outputs, "inputs": inputs,
            "changedPropIds": changed, "state": []}
    answer = client.post("/_dash-update-component", json=body)
    assert answer.status_code in (200, 204), answer.status_code
    return len(answer.data)

callbacks = {}
for page in drawn:
    search = f"?run={run}"
    size = post(".._pages_content.children..._pages_store.data..",
                [{"id": "_pages_content", "property": "children"},
                 {"id": "_pages_store", "property": "data"}],
                [{"id": "_pages_location", "property": "pathname", "value": page},
                 {"id": "_pages_location", "property": "search", "value": search}],
                ["_pages_location.pathname"])
    fill = 0
    try:
        import dashboard.components.page  # after: the body is filled by its own callback
    except ImportError:
        pass
    else:
        body = bodies[page]
        fill = post(f"{body}.children", {"id": body, "property": "children"},
                    [{"id": "run-version", "property": "data", "value": None},
                     {"id": "url", "property": "search", "value": search},
                     {"id": "_pages_store", "property": "data", "value": None}],
                    ["url.search"])
    callbacks[page] = {"router": size, "fill": fill}
print(json.dumps({"html": html, "callbacks": callbacks}))
"""

_LIVE = r"""
import json, shutil, sys, time
from pathlib import Path
import dash
from plotly.io.json import to_json_plotly
from dashboard.app import create_app
root, steps, polls, new = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
run = root / "live"
shutil.rmtree(root, ignore_errors=True)
shutil.copytree(Path("traces/sample"), run, ignore=shutil.ignore_patterns("cache"))
log = run / "meta" / "steps.0.jsonl"
line = '{{"step": {}, "dur_us": 1000.0, "data_wait_us": 10.0, "memory_bytes": 1048576}}\n'
log.write_text("".join(line.format(s) for s in range(steps)))
app = create_app(root)
module = sys.modules[next(p for p in dash.page_registry.values() if p["path"] == "/")["module"]]
after = hasattr(module, "extend_steps")
sent = 0
with app.server.app_context():
    if after:
        from dashboard.data.live import overview_version, new_steps
        whole = new_steps(root, "live")
        cursor = module.step_cursor("live", whole.rows, whole)
        to_json_plotly(module.content(run="live"))
    else:
        from dashboard.data.runs import run_version
        to_json_plotly(module.layout(run="live"))
    start = time.process_time()
    for poll in range(polls):
        with log.open("a") as out:
            first = steps + poll * new
            out.write("".join(line.format(s) for s in range(first, first + new)))
        if after:
            overview_version(root, "live")
            answer = module.extend_steps(poll, cursor)
            cursor = answer[2] if isinstance(answer[2], dict) else cursor
        else:  # each new steps line changed the run version: the page was drawn again
            run_version(root, "live", with_meta=True)
            answer = module.layout(run="live")
        sent += len(to_json_plotly(answer))
    cpu = time.process_time() - start
print(json.dumps({"cpu_s": cpu, "bytes": sent}))
"""


def _child(checkout: Path, script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=checkout,
        env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_payload(checkout: Path, events: int) -> dict[str, Any]:
    """HTML bytes per page and callback bytes of the drawn pages, at ``events`` events."""
    root = synthetic_root(events, CACHE_DIR)
    return _child(checkout, _PAYLOAD, str(root), RUN_NAME, json.dumps(PAGES), json.dumps(DRAWN))


def measure_live(checkout: Path, steps: int, polls: int, new: int) -> dict[str, Any]:
    """CPU seconds and bytes sent for ``polls`` polls of a live Overview at ``steps`` steps."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "traces"
        return _child(checkout, _LIVE, str(root), str(steps), str(polls), str(new))


def ratios(payload: dict[int, dict[str, Any]], live: dict[int, dict[str, Any]]) -> list[Ratio]:
    """The live Overview's CPU at 100k steps over 1k: 1 means flat in the run's length."""
    short, long = live.get(STEP_COUNTS[0]), live.get(STEP_COUNTS[-1])
    if not short or not long or short["cpu_s"] <= 0:
        return []
    return [
        Ratio(
            "live_overview_cpu_100k_over_1k",
            long["cpu_s"] / short["cpu_s"],
            note="server CPU of a live Overview's polls at 100k steps over 1k",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--checkout", type=Path, default=REPO)
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--new", type=int, default=10, help="steps appended before each poll")
    parser.add_argument("--quick", action="store_true", help="100k events only")
    parser.add_argument("--no-live", action="store_true", help="the payload figures only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    events = [100_000] if args.quick else args.events
    payload = {n: measure_payload(args.checkout.resolve(), n) for n in events}
    live = (
        {}
        if args.no_live
        else {
            s: measure_live(args.checkout.resolve(), s, args.polls, args.new) for s in STEP_COUNTS
        }
    )
    print(json.dumps({"payload": payload, "live": live}, indent=1))
    if args.json is not None:
        write_ratios(args.json, ratios(payload, live), machine())


if __name__ == "__main__":
    main()
