"""Load and summarise a trace with trainprof, against HTA's TraceAnalysis load of the same file.

Cold: each measurement runs in a fresh Python process (imports done before the clock starts), as
a user's first load would; repetitions of the three are interleaved and medians reported, so
machine noise hits all of them alike. In one long-lived process the figures drift with whatever
the heap holds from earlier runs. Target (issue 3): the summary of a 100k-event trace in seconds,
and trainprof's load at least 5x faster than HTA's.

    python bench/load_summary.py [--trace FILE] [--reps N] [--json OUT]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

DEFAULT_TRACE = (
    Path(__file__).resolve().parents[2] / "shared" / "traces" / "hta" / "diff_control.json.gz"
)
TARGET_LOAD_RATIO = 5.0


SNIPPETS = {
    "trainprof load": (
        "from profiler.analysis.table import load_trace", "load_trace(TRACE)"),
    "trainprof summarize": ("import profiler", "profiler.summarize(TRACE)"),
    "HTA load": (
        "import logging; logging.disable(logging.WARNING)\n"
        "from hta.trace_analysis import TraceAnalysis", "TraceAnalysis(trace_dir=RUN_DIR)"),
}  # fmt: skip


def timed_in_fresh_process(what: str, trace: Path, run_dir: Path) -> float:
    """Seconds the snippet's statement takes in a new interpreter, its imports not counted."""
    setup, statement = SNIPPETS[what]
    code = (
        f"import time, warnings; warnings.simplefilter('ignore')\n{setup}\n"
        f"TRACE, RUN_DIR = {str(trace)!r}, {str(run_dir)!r}\n"
        f"start = time.perf_counter(); {statement}; print(time.perf_counter() - start)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from profiler.analysis.table import load_trace

    with tempfile.TemporaryDirectory() as tmp:
        hta_dir = Path(tmp) / "run"
        hta_dir.mkdir()
        shutil.copy(args.trace, hta_dir / args.trace.name)
        events = load_trace(args.trace).event_count
        times: dict[str, list[float]] = {
            "trainprof load": [],
            "trainprof summarize": [],
            "HTA load": [],
        }
        for _ in range(args.reps):
            for what, values in times.items():
                values.append(timed_in_fresh_process(what, args.trace, hta_dir))

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["HTA load"] / medians["trainprof load"]
    title = f"{args.trace.name}: {events:,} events, {args.reps} interleaved reps, fresh processes"
    table = Table(title=title)
    for column in ("what", "median s", "min s", "max s"):
        table.add_column(column, justify="right" if column != "what" else "left")
    for name, values in times.items():
        table.add_row(name, f"{medians[name]:.3f}", f"{min(values):.3f}", f"{max(values):.3f}")
    console = Console()
    console.print(table)
    met = "met" if ratio >= TARGET_LOAD_RATIO else "NOT met"
    console.print(
        f"load ratio HTA / trainprof: {ratio:.2f}x (target >= {TARGET_LOAD_RATIO}x: {met})"
    )
    console.print(f"summary of {events:,} events: {medians['trainprof summarize']:.2f} s")
    if args.json:
        args.json.write_bytes(
            orjson.dumps(
                {
                    "trace": args.trace.name,
                    "events": events,
                    "medians_s": medians,
                    "load_ratio": ratio,
                }
            )
        )


if __name__ == "__main__":
    main()
