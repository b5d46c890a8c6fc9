"""Load and summarise a trace with trainprof, against HTA's TraceAnalysis load of the same file.

Interleaved repetitions in one process (trainprof load, trainprof summarize, HTA load, ...),
medians reported, so machine noise hits all three alike. Target (issue 3): the summary of a
100k-event trace in seconds, and trainprof's load at least 5x faster than HTA's.

    python bench/load_summary.py [--trace FILE] [--reps N] [--json OUT]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

DEFAULT_TRACE = (
    Path(__file__).resolve().parents[2] / "shared" / "traces" / "hta" / "diff_control.json.gz"
)
TARGET_LOAD_RATIO = 5.0


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # HTA logs every parse at WARNING
    warnings.simplefilter("ignore")

    from hta.trace_analysis import TraceAnalysis

    import profiler
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
            times["trainprof load"].append(timed(lambda: load_trace(args.trace)))
            times["trainprof summarize"].append(timed(lambda: profiler.summarize(args.trace)))
            times["HTA load"].append(timed(lambda: TraceAnalysis(trace_dir=str(hta_dir))))

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["HTA load"] / medians["trainprof load"]
    table = Table(title=f"{args.trace.name}: {events:,} events, {args.reps} interleaved reps")
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
