"""Load and summarise traces with trainprof, against HTA's TraceAnalysis load of the same files.

Every measurement runs in a fresh Python process, its imports done before the clock starts, as
a user's first load would; repetitions interleave the measurements, and medians are reported, so
machine noise hits all of them alike. Peak memory per event: in one more fresh process per tool,
a tiny trace (2k events) is loaded first (one-time costs: lazy imports, allocator pools, ~13 MB
for either tool), then the growth of the peak RSS over the RSS before the trace's load (HTA
parses in a forked worker, trainprof a large file's second half in a forked child: that child's
peak over the peak of a child forked and ended just before the load, which is what a fork starts
from, is added) is divided by the trace's events. The timing processes' own peaks (one-time
costs included) are in the JSON.

- **cold**: trainprof's first load of the file, its columnar cache removed beforehand (the load
  writes it; the time includes that); **cold, 2 processes**: the same with
  ``TRAINPROF_LOAD_SPLIT=1`` (a large file's second half built in a forked child,
  :mod:`profiler.analysis.halves`);
- **warm**: a load that finds the cache; **summarize**: ``profiler.summarize``, cold;
- **HTA**: ``TraceAnalysis(trace_dir=...)`` on a directory holding only the file.

Targets: cold >= 10x faster than HTA (issue 17; issue 6 asked 5x), warm >= 30x, peak memory
<= 300 bytes per event (issue 6, item 4). Traces: the largest reference trace
(``diff_control``) and a synthetic one (bench/synth.py, 1M events; ``--quick``: 100k, 3 reps),
kept in the bench cache directory between runs.

    python bench/load_summary.py [--quick] [--reps N] [--events N] [--trace FILE] [--json OUT]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/load_summary.py`
    sys.path.insert(0, str(REPO))

from bench.common import Ratio, machine, machine_line, write_ratios  # noqa: E402
from bench.synth import trace_file_name, write_synthetic_run  # noqa: E402
from profiler.analysis.halves import SPLIT_ENV  # noqa: E402

REFERENCE_TRACE = REPO / "tests" / "data" / "hta" / "diff_control.json.gz"
BENCH_CACHE = Path(tempfile.gettempdir()) / "trainprof-bench"
SYNTH_RUN = "synth"
TARGET_COLD, TARGET_WARM, TARGET_BYTES_PER_EVENT = 10.0, 30.0, 300.0
WARMUP_EVENTS = 2_000
MEASURES = (
    "trainprof cold", "trainprof cold, 2 processes", "trainprof warm", "trainprof summarize",
    "HTA load",
)  # fmt: skip

# Each snippet runs after its imports, with TRACE (in a run directory) and HTA_DIR set; it
# leaves what it loaded in RESULT. Cache files are removed (cold) in the setup, off the clock.
_SETUP = {
    "trainprof cold": "from profiler.analysis.table import load_trace\n"
    "import shutil; shutil.rmtree(TRACE.parent / 'meta' / 'cache', ignore_errors=True)",
    "trainprof cold, 2 processes": "from profiler.analysis.table import load_trace\n"
    f"import os; os.environ['{SPLIT_ENV}'] = '1'\n"
    "import shutil; shutil.rmtree(TRACE.parent / 'meta' / 'cache', ignore_errors=True)",
    "trainprof warm": "from profiler.analysis.table import load_trace",
    "trainprof summarize": "import profiler\n"
    "import shutil; shutil.rmtree(TRACE.parent / 'meta' / 'cache', ignore_errors=True)",
    "HTA load": "import logging; logging.disable(logging.WARNING)\n"
    "from hta.trace_analysis import TraceAnalysis",
}
_STATEMENT = {
    "trainprof cold": "RESULT = load_trace(TRACE)",
    "trainprof cold, 2 processes": "RESULT = load_trace(TRACE)",
    "trainprof warm": "RESULT = load_trace(TRACE)",
    "trainprof summarize": "RESULT = profiler.summarize(TRACE)",
    "HTA load": "RESULT = TraceAnalysis(trace_dir=str(HTA_DIR))",
}
_WARMUP = {
    "trainprof cold": "load_trace(WARMUP / 'run' / 'w.pt.trace.json.gz')",
    "trainprof cold, 2 processes": "load_trace(WARMUP / 'run' / 'w.pt.trace.json.gz')",
    "HTA load": "TraceAnalysis(trace_dir=str(WARMUP / 'hta'))",
}
_CHILD = """\
import json, resource, time, warnings; warnings.simplefilter('ignore')
from pathlib import Path
import psutil
TRACE, HTA_DIR, WARMUP = Path({trace!r}), Path({hta_dir!r}), Path({warmup_dir!r})
{setup}
{warmup}
import os
if (noop := os.fork()) == 0: os._exit(0)
os.waitpid(noop, 0)  # a child's peak RSS counts only what it touched after the fork: from here
forked = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
base = psutil.Process().memory_info().rss
start = time.perf_counter()
{statement}
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({{"s": elapsed, "peak_bytes": max(peak - base, 0) + max(children - forked, 0),
                  "events": getattr(RESULT, "event_count", None)}}))
"""

# The stages of a cold load, each timed on its own (the fastest of 3) in one fresh process per
# round, after the tiny trace's load: each stage runs everything the one before did, then its
# own step, so the differences are what each step adds.
STAGES = ("read + inflate", "+ JSON decode", "+ column build", "cache write")
_STAGES_CHILD = """\
import gc, json, time, warnings; warnings.simplefilter('ignore')
from pathlib import Path
from profiler.analysis.cache import TABLES, source_key, write_cache
from profiler.analysis.decode import EventStream
from profiler.analysis.table import _from_json, load_trace
from profiler.analysis.text import TextReader
TRACE, WARMUP = Path({trace!r}), Path({warmup_dir!r})
load_trace(WARMUP / 'run' / 'w.pt.trace.json.gz', cache=False)
def clock(step):  # the fastest of 3: a loaded machine's noise only ever adds
    best = None
    for _ in range(3):
        gc.collect(); gc.disable(); start = time.perf_counter(); result = step()
        elapsed = time.perf_counter() - start; gc.enable()
        best = elapsed if best is None else min(best, elapsed)
    return best, result
def read():
    for _ in TextReader(TRACE): pass
def decode():
    for events in EventStream(TRACE): events.clear()
seconds = {{"read + inflate": clock(read)[0], "+ JSON decode": clock(decode)[0]}}
seconds["+ column build"], (tables, meta) = clock(lambda: _from_json(TRACE, 1 << 62))
frames = {{name: getattr(tables, name) for name in TABLES}}
key = source_key(TRACE)
seconds["cache write"] = clock(lambda: write_cache(TRACE, key, frames, meta, 0))[0]
print(json.dumps(seconds))
"""


@dataclass
class TraceResult:
    """One trace's measurements: per measure, seconds and peak bytes of every repetition."""

    name: str
    events: int = 0
    seconds: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MEASURES})
    peak_bytes: dict[str, list[int]] = field(default_factory=lambda: {m: [] for m in MEASURES})
    failed: dict[str, str] = field(default_factory=dict)  # measure -> the error's last line
    marginal_bytes: dict[str, int] = field(default_factory=dict)  # peak after a warm-up load
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})

    def median_s(self, measure: str) -> float:
        return statistics.median(self.seconds[measure])

    def bytes_per_event(self, measure: str) -> float:
        """Peak bytes per event, after a warm-up where measured, else in a fresh process."""
        if measure in self.marginal_bytes:
            return self.marginal_bytes[measure] / max(self.events, 1)
        return statistics.median(self.peak_bytes[measure]) / max(self.events, 1)


def synthetic_trace(events: int, cache_dir: Path = BENCH_CACHE) -> Path:
    """A synthetic trace of ``events`` events, written once and kept (shared with dashboard.py)."""
    path = cache_dir / f"events-{events}" / SYNTH_RUN / trace_file_name(0)
    if not path.is_file():  # written atomically: a file there is complete
        write_synthetic_run(path.parent, events)
    return path


def measure_in_fresh_process(
    measure: str, trace: Path, hta_dir: Path, warmup_dir: Path | None = None
) -> dict[str, Any]:
    """Seconds, peak bytes and event count of one measure in a new interpreter.

    Args:
        measure: one of :data:`MEASURES`.
        trace: the trace, in a run directory of its own.
        hta_dir: a directory holding only a copy of it, for HTA.
        warmup_dir: where :func:`warmup_dir` put a tiny trace: load it first, off the clock
            and before the memory baseline, so one-time costs (lazy imports, allocator pools:
            ~13 MB for either tool) are not charged to the trace's events.

    Returns:
        The figures, or ``{"error": last line of its stderr}`` where the process failed.
    """
    code = _CHILD.format(
        trace=str(trace), hta_dir=str(hta_dir), setup=_SETUP[measure],
        warmup_dir=str(warmup_dir), warmup=_WARMUP[measure] if warmup_dir else "",
        statement=_STATEMENT[measure],
    )  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit status {out.returncode}"]
        return {"error": lines[-1][:200]}
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def stages_in_fresh_process(trace: Path, warmup_dir: Path) -> dict[str, float]:
    """Seconds of each of :data:`STAGES` on ``trace``, in a new interpreter (empty on failure)."""
    code = _STAGES_CHILD.format(trace=str(trace), warmup_dir=str(warmup_dir))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        return {}
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def copies(source: Path, workdir: Path, name: str | None = None) -> tuple[Path, Path]:
    """``source`` copied into ``workdir/run`` (for trainprof) and ``workdir/hta`` (for HTA)."""
    run_dir, hta_dir = workdir / "run", workdir / "hta"
    run_dir.mkdir(parents=True)
    hta_dir.mkdir()
    shutil.copy(source, hta_dir / (name or source.name))
    trace = Path(shutil.copy(source, run_dir / (name or source.name)))
    return trace, hta_dir


def bench_trace(source: Path, reps: int, workdir: Path, warmup: Path) -> TraceResult:
    """Every measure on ``source``, ``reps`` interleaved rounds; copies keep the source as is.

    Times come from plain fresh processes; peak memory per event from one more process per
    tool that loads the tiny trace in ``warmup`` first (see :func:`measure_in_fresh_process`).
    """
    trace, hta_dir = copies(source, workdir / source.stem)
    result = TraceResult(source.name)
    for measure in ("trainprof cold", "trainprof cold, 2 processes", "HTA load"):
        figures = measure_in_fresh_process(measure, trace, hta_dir, warmup)
        if "error" not in figures:
            result.marginal_bytes[measure] = int(figures["peak_bytes"])
    for _ in range(reps):
        for measure in (m for m in MEASURES if m not in result.failed):
            figures = measure_in_fresh_process(measure, trace, hta_dir)
            if "error" in figures:  # HTA 0.5.0 fails on some traces under pandas 3
                result.failed[measure] = figures["error"]
                continue
            result.seconds[measure].append(figures["s"])
            result.peak_bytes[measure].append(int(figures["peak_bytes"]))
            result.events = int(figures["events"] or result.events)
        for stage, seconds in stages_in_fresh_process(trace, warmup).items():
            result.stages[stage].append(seconds)
    return result


def ratios(result: TraceResult) -> list[Ratio]:
    """The targets' figures for one trace (those against HTA only where HTA loaded it)."""
    if "trainprof cold" in result.failed:
        return []
    note = f"{result.name}, {result.events:,} events"
    found = [
        Ratio(f"peak memory per event, trainprof, {result.name}",
              result.bytes_per_event("trainprof cold"), TARGET_BYTES_PER_EVENT, "<=", "B/event",
              note),
    ]  # fmt: skip
    if "trainprof summarize" not in result.failed:
        found.append(Ratio(f"summarize, {result.name}", result.median_s("trainprof summarize"),
                           unit="s", note=note + ", cold"))  # fmt: skip
    if "HTA load" in result.failed or "trainprof warm" in result.failed:
        return found
    hta = result.median_s("HTA load")
    return found + [
        Ratio(f"load cold vs HTA, {result.name}", hta / result.median_s("trainprof cold"),
              TARGET_COLD, ">=", "x", note),
        Ratio(f"load cold in 2 processes vs HTA, {result.name}",
              hta / result.median_s("trainprof cold, 2 processes"), TARGET_COLD, ">=", "x",
              note=note + f", {SPLIT_ENV}=1"),
        Ratio(f"peak memory per event, trainprof in 2 processes, {result.name}",
              result.bytes_per_event("trainprof cold, 2 processes"), TARGET_BYTES_PER_EVENT, "<=",
              "B/event", note=note + f", {SPLIT_ENV}=1"),
        Ratio(f"load warm (cache) vs HTA, {result.name}", hta / result.median_s("trainprof warm"),
              TARGET_WARM, ">=", "x", note),
        Ratio(f"peak memory per event, HTA, {result.name}", result.bytes_per_event("HTA load"),
              unit="B/event", note=note),
    ]  # fmt: skip


def report(results: list[TraceResult], found: list[Ratio], console: Console) -> None:
    """The measurements per trace, then every ratio against its target."""
    for result in results:
        reps = max(len(values) for values in result.seconds.values())
        table = Table(title=f"{result.name}: {result.events:,} events, {reps} interleaved reps")
        for column in ("what", "median s", "min s", "max s", "peak B/event"):
            table.add_column(column, justify="left" if column == "what" else "right")
        for measure, values in result.seconds.items():
            if not values:
                table.add_row(measure, "failed", "", "", result.failed.get(measure, "")[:60])
                continue
            table.add_row(
                measure, f"{statistics.median(values):.3f}", f"{min(values):.3f}",
                f"{max(values):.3f}", f"{result.bytes_per_event(measure):,.0f}",
            )  # fmt: skip
        console.print(table)
        console.print(stage_table(result))
    for result in results:
        for measure, error in result.failed.items():
            console.print(f"{result.name}: {measure} failed: {error}")
    for ratio in found:
        verdict = "" if ratio.met is None else " (met)" if ratio.met else " (NOT met)"
        target = f", target {ratio.comparison} {ratio.target:g}" if ratio.target else ""
        console.print(f"{ratio.name}: {ratio.value:,.2f} {ratio.unit}{target}{verdict}")


def stage_table(result: TraceResult) -> Table:
    """Where a cold load's time goes: each stage's median, what it adds to the one before, and
    that as a share of the cold load."""
    cold = result.median_s("trainprof cold") if result.seconds["trainprof cold"] else 0.0
    table = Table(title=f"{result.name}: cold load by stage (medians; each stage includes the "
                  "ones above it, but the cache write)")  # fmt: skip
    for column in ("stage", "median s", "adds s", "of cold"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    before = 0.0
    for stage, values in result.stages.items():
        if not values:
            continue
        median = statistics.median(values)
        adds = median if stage == "cache write" else median - before
        before = before if stage == "cache write" else median
        share = f"{adds / cold:.0%}" if cold else ""
        table.add_row(stage, f"{median:.3f}", f"{adds:.3f}", share)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k synthetic events, 3 reps")
    parser.add_argument("--reps", type=int, default=None, help="rounds (default 5; quick 3)")
    parser.add_argument("--events", type=int, default=None, help="synthetic size (default 1M)")
    parser.add_argument("--trace", type=Path, default=REFERENCE_TRACE, help="a real trace")
    parser.add_argument("--json", type=Path, default=None, help="write the ratios here")
    parser.add_argument("--cache-dir", type=Path, default=BENCH_CACHE, help="synthetic traces")
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 5)
    events = args.events or (100_000 if args.quick else 1_000_000)
    info = machine()
    sources = [s for s in (args.trace, synthetic_trace(events, args.cache_dir)) if s.is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        warmup = Path(tmp) / "warmup"
        copies(synthetic_trace(WARMUP_EVENTS, args.cache_dir), warmup, "w.pt.trace.json.gz")
        results = [bench_trace(s, reps, Path(tmp), warmup) for s in sources]
    found = [ratio for result in results for ratio in ratios(result)]
    console = Console()
    report(results, found, console)
    console.print(machine_line(info))
    if args.json:
        raw = {r.name: {"events": r.events, "seconds": r.seconds, "peak_bytes": r.peak_bytes,
                        "marginal_bytes": r.marginal_bytes, "failed": r.failed,
                        "stages": r.stages}
               for r in results}  # fmt: skip
        write_ratios(args.json, found, info, traces=orjson.loads(orjson.dumps(raw)))


if __name__ == "__main__":
    main()
