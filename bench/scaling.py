"""How trainprof's load time and peak memory grow with a trace's size: they should be linear.

Synthetic traces (bench/synth.py, kept in the bench cache directory between runs) of 10k, 100k,
1M and 5M events (``--quick``: up to 1M) are each loaded with ``load_trace(path, cache=False)`` in
a fresh Python process, after its imports and a load of a 2k-event trace (which takes the
one-time costs, ~13 MB and some lazy imports, off the figures); the peak memory is the growth of
the process's peak RSS over its RSS before the load. Per size: the median over ``--reps``
(default 3, 1 at 5M) of seconds and peak bytes, and both per event. Linear growth keeps the cost
per event flat: the ratios compare it at the largest size with 100k (target: at most 1.5x).

    python bench/scaling.py [--quick] [--sizes 10000 100000 ...] [--reps N] [--json OUT]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/scaling.py`
    sys.path.insert(0, str(REPO))

from bench.common import Ratio, machine, machine_line, write_ratios  # noqa: E402
from bench.load_summary import BENCH_CACHE, WARMUP_EVENTS, synthetic_trace  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000, 5_000_000)
QUICK_SIZES = SIZES[:3]
REFERENCE_SIZE = 100_000
TARGET_GROWTH = 1.5
_CHILD = """\
import json, resource, time
import psutil
from profiler.analysis.table import load_trace
load_trace({warmup!r}, cache=False)  # one-time costs (lazy imports, allocator pools) go here
base = psutil.Process().memory_info().rss
start = time.perf_counter()
trace = load_trace({path!r}, cache=False)
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"s": elapsed, "peak_bytes": max(peak - base, 0), "events": trace.event_count}}))
"""


@dataclass(frozen=True)
class SizeResult:
    """One size's load: events, and the median seconds and peak bytes over the repetitions."""

    events: int
    seconds: float
    peak_bytes: float
    reps: int

    @property
    def us_per_event(self) -> float:
        return self.seconds / self.events * 1e6

    @property
    def bytes_per_event(self) -> float:
        return self.peak_bytes / self.events


def load_in_fresh_process(path: Path, warmup: Path) -> dict[str, float]:
    """Seconds, peak bytes and event count of ``load_trace(path)`` in a new interpreter, after
    a load of the tiny trace ``warmup``."""
    code = _CHILD.format(path=str(path), warmup=str(warmup))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def measure(events: int, reps: int, cache_dir: Path = BENCH_CACHE) -> SizeResult:
    """Load a synthetic trace of ``events`` events ``reps`` times, each in a fresh process."""
    path, warmup = synthetic_trace(events, cache_dir), synthetic_trace(WARMUP_EVENTS, cache_dir)
    runs = [load_in_fresh_process(path, warmup) for _ in range(reps)]
    return SizeResult(
        events=int(runs[0]["events"]),
        seconds=statistics.median(r["s"] for r in runs),
        peak_bytes=statistics.median(r["peak_bytes"] for r in runs),
        reps=reps,
    )


def ratios(results: list[SizeResult]) -> list[Ratio]:
    """Per size, time and memory per event; then the growth of both, largest against 100k."""
    found = []
    for r in results:
        note = f"{r.events:,} events, median of {r.reps}"
        found.append(Ratio(f"load time per event, {r.events:,}", r.us_per_event, unit="us/event",
                           note=note))  # fmt: skip
        found.append(Ratio(f"peak memory per event, {r.events:,}", r.bytes_per_event,
                           unit="B/event", note=note))  # fmt: skip
    reference = next((r for r in results if r.events == REFERENCE_SIZE), results[0])
    largest = max(results, key=lambda r: r.events)
    if largest is not reference:
        note = f"per event at {largest.events:,} / at {reference.events:,} events"
        found.append(Ratio("load time growth (linear: ~1)", largest.us_per_event /
                           reference.us_per_event, TARGET_GROWTH, "<=", "x", note))  # fmt: skip
        found.append(Ratio("peak memory growth (linear: ~1)", largest.bytes_per_event /
                           reference.bytes_per_event, TARGET_GROWTH, "<=", "x", note))  # fmt: skip
    return found


def report(results: list[SizeResult], found: list[Ratio], console: Console) -> None:
    """A table of the sizes, then the growth ratios against their targets."""
    table = Table(title="load_trace, fresh process per load (after a 2k-event warm-up), cache off")
    for column in ("events", "median s", "us/event", "peak MB", "peak B/event", "reps"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r.events:,}", f"{r.seconds:.3f}", f"{r.us_per_event:.2f}",
            f"{r.peak_bytes / 1e6:,.1f}", f"{r.bytes_per_event:,.0f}", str(r.reps),
        )  # fmt: skip
    console.print(table)
    for ratio in found:
        if ratio.target is not None:
            verdict = "met" if ratio.met else "NOT met"
            console.print(
                f"{ratio.name}: {ratio.value:.2f}x ({ratio.note}; target "
                f"{ratio.comparison} {ratio.target:g}: {verdict})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k, 100k and 1M events only")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="events per trace")
    parser.add_argument("--reps", type=int, default=None, help="loads per size (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="write the ratios here")
    parser.add_argument("--cache-dir", type=Path, default=BENCH_CACHE, help="synthetic traces")
    args = parser.parse_args()
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    info = machine()
    results = []
    for events in sizes:
        reps = args.reps or (1 if events >= 5_000_000 or args.quick and events >= 1e6 else 3)
        results.append(measure(events, reps, args.cache_dir))
    found = ratios(results)
    console = Console()
    report(results, found, console)
    console.print(machine_line(info))
    if args.json:
        write_ratios(args.json, found, info, sizes=[r.__dict__ for r in results])


if __name__ == "__main__":
    main()
