"""The cross-rank summary of 64, 256 and 1,024 simulated ranks: time and peak memory.

Each run is a synchronous data-parallel job written by bench/synth.py's ``write_ranks`` (one
trace per rank, ``--events`` each, collectives that end together, rank 1 slow by 5 ms a step,
host clocks skewed), kept in the bench cache directory between runs. Per rank count, each in
a fresh Python process:

* ``build``: the per-rank summaries made from the traces (each trace loaded, summarised and
  dropped) on a local Dask cluster of one single-threaded worker process per core, then the
  cross-rank summary; the summaries are stored beside the run.
* ``view, local``: the cross-rank summary from the stored per-rank summaries, read in this
  process (what ``trainprof summary RUN`` does once they exist).
* ``view, dask``: the same, the summaries read by the workers of a local Dask cluster
  (started before the clock starts, as a cluster one connects to with ``--dask`` is).

Time is the call's wall clock; peak memory is the growth of the process's peak RSS over its RSS
before the call, plus, with Dask, each worker's peak RSS. Ratios compare 256 with 64 and 1,024
with 256 ranks: 4x the ranks should cost about 4x the time and, since each rank adds a
summary of fixed size, the memory should grow with ranks, not with the events in the traces.
Target: the 1,024-rank view in under a minute.

    python bench/ranks.py [--quick] [--ranks 64 256 1024] [--events N] [--reps N] [--json OUT]
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
if str(REPO) not in sys.path:  # run as `python bench/ranks.py`
    sys.path.insert(0, str(REPO))

from bench.common import Ratio, machine, machine_line, write_ratios  # noqa: E402
from bench.load_summary import BENCH_CACHE  # noqa: E402

RANKS = (64, 256, 1024)
QUICK_RANKS = (8, 32)
EVENTS = 3_000  # per rank: small, so 1,024 ranks are written in a minute and fit in 100 MB
STEPS = 5
SLOW_RANK, SLOW_MS = 1, 5.0
TARGET_VIEW_S = 60.0
MODES = ("build", "view, local", "view, dask")
_CHILD = """\
import json, resource, sys, time
import psutil
from profiler.analysis.fanout import LOCAL, dask_client
from profiler.analysis.summary import summarize

run, mode = {run!r}, {mode!r}
def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def timed(dask):
    base = psutil.Process().memory_info().rss
    start = time.perf_counter()
    report = summarize(run, dask=dask)
    return report, time.perf_counter() - start, max(peak() - base, 0)

if __name__ == "__main__":
    if mode == "view, local":
        report, seconds, grown = timed(None)
        workers = 0
    else:
        with dask_client(LOCAL) as client:
            client.run(lambda: __import__("profiler.analysis.summary"))
            report, seconds, grown = timed(client.cluster.scheduler_address)
            workers = sum(client.run(peak).values())
    found = report["distributed"] or {{}}
    print(json.dumps({{"s": seconds, "peak_bytes": grown + workers, "traces": len(report["traces"]),
                      "stragglers": [s["rank"] for s in found.get("stragglers", [])]}}))
"""


@dataclass(frozen=True)
class Result:
    """One rank count and mode: median seconds and peak bytes, and what the summary found."""

    ranks: int
    mode: str
    seconds: float
    peak_bytes: float
    reps: int
    stragglers: tuple[int, ...]


def synthetic_ranks(ranks: int, events: int, cache_dir: Path = BENCH_CACHE) -> Path:
    """The run of ``ranks`` simulated ranks (written once, then reused)."""
    from bench.synth import write_ranks

    run = cache_dir / f"ranks-{ranks}x{events}"
    done = run / ".complete"
    if not done.exists():
        write_ranks(run, events, ranks=ranks, slow_rank=SLOW_RANK, slow_ms=SLOW_MS, steps=STEPS)
        done.touch()
    return run


def clear_summaries(run: Path) -> None:
    """Remove the stored per-rank summaries and trace caches: the next summary builds them."""
    for file in (run / "meta" / "cache").glob("*.parquet"):
        file.unlink()


def measure_once(run: Path, mode: str) -> dict[str, float]:
    """One measurement in a fresh interpreter (``build`` first clears the stored summaries)."""
    if mode == "build":
        clear_summaries(run)
    code = _CHILD.format(run=str(run), mode="view, dask" if mode == "build" else mode)
    script = run.parent / "ranks_child.py"  # a file: Dask's worker processes re-import __main__
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, cwd=REPO
    )
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def measure(ranks: int, events: int, reps: int, cache_dir: Path = BENCH_CACHE) -> list[Result]:
    """Every mode for one rank count: ``build`` once, the views ``reps`` times, interleaved."""
    run = synthetic_ranks(ranks, events, cache_dir)
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    runs["build"].append(measure_once(run, "build"))
    for _ in range(reps):
        for mode in MODES[1:]:
            runs[mode].append(measure_once(run, mode))
    return [
        Result(
            ranks=ranks,
            mode=mode,
            seconds=statistics.median(r["s"] for r in found),
            peak_bytes=statistics.median(r["peak_bytes"] for r in found),
            reps=len(found),
            stragglers=tuple(found[-1]["stragglers"]),
        )
        for mode, found in runs.items()
    ]


def ratios(results: list[Result]) -> list[Ratio]:
    """Per rank count and mode, seconds and MB; the growth between rank counts; the target."""
    found = []
    for r in results:
        note = f"{r.ranks} ranks, median of {r.reps}"
        found.append(Ratio(f"{r.mode} time, {r.ranks} ranks", r.seconds, unit="s", note=note))
        found.append(Ratio(f"{r.mode} peak memory, {r.ranks} ranks", r.peak_bytes / 1e6,
                           unit="MB", note=note))  # fmt: skip
    counts = sorted({r.ranks for r in results})
    by = {(r.ranks, r.mode): r for r in results}
    for low, high in zip(counts, counts[1:], strict=False):
        for mode in MODES:
            a, b = by[(low, mode)], by[(high, mode)]
            note = f"{high} / {low} ranks ({high // low}x the ranks)"
            found.append(Ratio(f"{mode} time growth {high}/{low}", b.seconds / a.seconds,
                               note=note))  # fmt: skip
            found.append(Ratio(f"{mode} memory growth {high}/{low}",
                               b.peak_bytes / max(a.peak_bytes, 1.0), note=note))  # fmt: skip
    largest = max(counts)
    view = by[(largest, "view, local")]
    found.append(Ratio(f"cross-rank view of {largest} ranks from their summaries", view.seconds,
                       TARGET_VIEW_S, "<=", "s", "in this process"))  # fmt: skip
    return found


def report(results: list[Result], found: list[Ratio], events: int, console: Console) -> None:
    """A table per rank count and mode, then the ratios with a target."""
    table = Table(title=f"cross-rank summary, {events:,} events per rank, fresh process each")
    for column in ("ranks", "mode", "median s", "peak MB", "stragglers", "reps"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(str(r.ranks), r.mode, f"{r.seconds:.2f}", f"{r.peak_bytes / 1e6:,.0f}",
                      ",".join(map(str, r.stragglers)) or "-", str(r.reps))  # fmt: skip
    console.print(table)
    for ratio in found:
        if "growth" in ratio.name or ratio.target is not None:
            verdict = "" if ratio.target is None else f" (target <= {ratio.target:g})"
            console.print(f"{ratio.name}: {ratio.value:.2f}{ratio.unit}{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 and 32 ranks, one rep")
    parser.add_argument("--ranks", type=int, nargs="+", default=None, help="rank counts")
    parser.add_argument("--events", type=int, default=EVENTS, help="events per rank's trace")
    parser.add_argument("--reps", type=int, default=None, help="views per rank count (3)")
    parser.add_argument("--json", type=Path, default=None, help="write the ratios here")
    parser.add_argument("--cache-dir", type=Path, default=BENCH_CACHE, help="synthetic runs")
    args = parser.parse_args()
    counts = args.ranks or (QUICK_RANKS if args.quick else RANKS)
    reps = args.reps or (1 if args.quick else 3)
    info = machine()
    results = [r for ranks in counts for r in measure(ranks, args.events, reps, args.cache_dir)]
    found = ratios(results)
    console = Console()
    report(results, found, args.events, console)
    console.print(machine_line(info))
    if args.json:
        rows = [r.__dict__ for r in results]
        write_ratios(args.json, found, info, results=rows, events_per_rank=args.events)


if __name__ == "__main__":
    main()
