#!/usr/bin/env python3
"""Run every bench, then print each ratio with its target and whether it is met.

Run from the repository root::

    python bench/run.py --quick               # every bench at its smallest size (see README)
    python bench/run.py                       # the full run: minutes per bench
    python bench/run.py --only overhead capture --json ratios.json

Each bench runs in its own process, one after the other, with ``--json <tmp file>`` (and its
quick options under ``--quick``) and a time limit; its own output goes to a log (kept with
``--logs DIR``). A bench that is missing, crashes, runs out of time or writes no ratios is
reported as such, and the others still run. The exit status is 0 whatever the figures are (this is
a report, not a test), and 1 when a bench crashed, timed out or wrote no ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/run.py`
    sys.path.insert(0, str(REPO))

from bench.common import Ratio, loadavg, machine, machine_line, read_ratios  # noqa: E402
from bench.cycles import TOOLS as CALLGRIND_TOOLS  # noqa: E402

Status = Literal["ok", "missing", "crashed", "timed out", "no ratios"]
FAILED: frozenset[Status] = frozenset({"crashed", "timed out", "no ratios"})
LOG_TAIL_LINES = 8


@dataclass(frozen=True)
class Bench:
    """One bench script, the options that make it quick, its time limits, and the programs it
    needs on PATH beyond Python (without them it is reported missing, not run)."""

    name: str
    script: Path  # relative to the repository root, or absolute
    quick_args: tuple[str, ...] = ("--quick",)
    full_args: tuple[str, ...] = ()
    quick_timeout_s: float = 120.0
    full_timeout_s: float = 1800.0
    needs: tuple[str, ...] = ()

    def command(self, json_out: Path, *, quick: bool) -> list[str]:
        """The command line that runs this bench and writes its ratios to ``json_out``."""
        args = self.quick_args if quick else self.full_args
        return [sys.executable, str(REPO / self.script), *args, "--json", str(json_out)]

    def timeout_s(self, *, quick: bool) -> float:
        """The time limit for a quick or a full run."""
        return self.quick_timeout_s if quick else self.full_timeout_s


BENCHES: tuple[Bench, ...] = (
    Bench("overhead", Path("bench/overhead.py"), ("--quick", "--no-breakdown"), (), 120, 900),
    Bench("capture", Path("bench/capture.py"), ("--quick",), (), 120, 900),  # 8 cases
    Bench("load_summary", Path("bench/load_summary.py"), ("--quick",), (), 120, 1800),
    Bench("scaling", Path("bench/scaling.py"), ("--quick",), (), 90, 1800),
    Bench("dashboard", Path("bench/dashboard.py"), ("--quick", "--warm-reps", "2"), (), 150, 1800),
    Bench("payload", Path("bench/payload.py"), ("--quick",), (), 300, 1800),
    Bench("ranks", Path("bench/ranks.py"), ("--quick",), (), 180, 1800),
    # The step ratio counted by callgrind, which the load does not move (~2.5 min quick; the
    # full run pools two runs of each case, ~10-16 min: the cycles ratio moves between runs).
    Bench(
        "cycles",
        Path("bench/cycles.py"),
        ("--models", "mlp", "--steps", "2"),
        ("--runs", "2"),
        360,
        1800,
        needs=CALLGRIND_TOOLS,
    ),
)


@dataclass(frozen=True)
class Outcome:
    """What running one bench gave: its status, its ratios and, on failure, why."""

    bench: str
    status: Status
    elapsed_s: float = 0.0
    ratios: list[Ratio] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    returncode: int | None = None
    detail: str | None = None  # why it failed: the end of its log, or the reason

    @property
    def failed(self) -> bool:
        """Whether the bench itself failed (a missing script is reported, not failed)."""
        return self.status in FAILED

    def as_json(self) -> dict[str, Any]:
        """The JSON record of this outcome, ratios left out (they go in the top-level list)."""
        keys = ("bench", "status", "elapsed_s", "returncode", "detail", "machine")
        return {key: getattr(self, key) for key in keys}


def read_outcome_file(path: Path) -> tuple[dict[str, Any], list[Ratio]]:
    """The machine and ratios a bench wrote."""
    return read_ratios(path)


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a bench's log, without Kineto's USDT chatter."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith("USDT:")]
    return "\n".join(kept[-lines:])


def run_process(command: list[str], log: Path, timeout_s: float) -> int | None:
    """Run ``command`` with its output in ``log``; its exit status, or None when it timed out.

    It runs in a session of its own so that, however it ends (timeout, interrupt), what it
    started and left running (a dashboard server, a browser) is ended with it.
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing of its group is left
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_bench(bench: Bench, workdir: Path, *, quick: bool) -> Outcome:
    """Run one bench and read its ratios; a missing script or a failure becomes the outcome."""
    if not (REPO / bench.script).is_file():
        return Outcome(bench.name, "missing", detail=f"{bench.script} does not exist")
    absent = [program for program in bench.needs if shutil.which(program) is None]
    if absent:
        return Outcome(bench.name, "missing", detail=f"needs {', '.join(absent)} on PATH")
    json_out, log = workdir / f"{bench.name}.json", workdir / f"{bench.name}.log"
    json_out.unlink(missing_ok=True)
    timeout_s = bench.timeout_s(quick=quick)
    started = time.monotonic()
    code = run_process(bench.command(json_out, quick=quick), log, timeout_s)
    elapsed = round(time.monotonic() - started, 1)
    if code is None:
        detail = f"ran past its limit of {timeout_s:g} s\n{log_tail(log)}"
        return Outcome(bench.name, "timed out", elapsed, detail=detail)
    if code != 0:
        return Outcome(bench.name, "crashed", elapsed, returncode=code, detail=log_tail(log))
    try:
        info, ratios = read_outcome_file(json_out)
    except (OSError, ValueError, KeyError, TypeError) as error:
        detail = f"exit 0 but no ratios in {json_out.name}: {error}"
        return Outcome(bench.name, "no ratios", elapsed, returncode=0, detail=detail)
    return Outcome(bench.name, "ok", elapsed, ratios, info, returncode=0)


def progress_line(outcome: Outcome) -> str:
    """One line for a finished bench."""
    if outcome.status == "ok":
        return f"[green]✓[/] {outcome.bench}: {len(outcome.ratios)} ratios, {outcome.elapsed_s} s"
    if outcome.status == "missing":
        return f"[yellow]-[/] {outcome.bench}: missing ({outcome.detail})"
    code = f" (exit {outcome.returncode})" if outcome.status == "crashed" else ""
    return f"[red]✗[/] {outcome.bench}: {outcome.status}{code} after {outcome.elapsed_s} s"


def run_benches(
    benches: Sequence[Bench], workdir: Path, console: Console, *, quick: bool
) -> list[Outcome]:
    """Run the benches one after the other, a line of progress for each."""
    outcomes = []
    for index, bench in enumerate(benches, 1):
        label = f"[{index}/{len(benches)}]"
        limit = bench.timeout_s(quick=quick)
        with console.status(f"{label} {bench.name}: running {bench.script} (limit {limit:g} s)"):
            outcome = run_bench(bench, workdir, quick=quick)
        console.print(f"{label} {progress_line(outcome)}")
        if outcome.failed and outcome.detail:
            console.print(outcome.detail, style="dim", markup=False, highlight=False)
        outcomes.append(outcome)
    return outcomes


def number(value: float, unit: str) -> str:
    """``value`` in ``unit``: a signed percentage, a multiple (×), or a plain figure and unit."""
    if unit == "%":
        return f"{value:+.2f} %"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text}×" if unit == "x" else f"{text} {unit}"


def target_text(ratio: Ratio) -> str:
    """``≤ 1.05×``, ``≥ 5×``, or ``—`` where there is no target."""
    if ratio.target is None:
        return "—"
    sign = "≤" if ratio.comparison == "<=" else "≥"
    return f"{sign} {number(ratio.target, ratio.unit).lstrip('+')}"


MET_MARKS = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[dim]—[/]"}


def results_table(outcomes: list[Outcome], *, quick: bool) -> Table:
    """One row per ratio, and one per bench that gave none, saying why."""
    table = Table(title=f"trainprof benches{' (--quick)' if quick else ''}: ratios and targets")
    for column in ("bench", "ratio", "measured", "target", "met", "note"):
        right = column in {"measured", "target"}
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for outcome in outcomes:
        if outcome.status != "ok" or not outcome.ratios:
            crashed = outcome.status == "crashed"
            why = outcome.status + (f" (exit {outcome.returncode})" if crashed else "")
            table.add_row(outcome.bench, f"[red]{why}[/]", "—", "—", MET_MARKS[None], "")
        for r in outcome.ratios:
            cells = (number(r.value, r.unit), target_text(r), MET_MARKS[r.met], r.note or "")
            table.add_row(outcome.bench, r.name, *cells)
    return table


def write_json(path: Path, outcomes: list[Outcome], info: dict[str, Any], quick: bool) -> None:
    """Every outcome and every ratio (with its bench) in the benches' shared JSON shape."""
    ratios = [{"bench": o.bench, **r.as_json()} for o in outcomes for r in o.ratios]
    payload = {
        "machine": info,
        "quick": quick,
        "ratios": ratios,
        "benches": [o.as_json() for o in outcomes],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))


def parse_args(argv: Iterable[str] | None, names: Sequence[str]) -> argparse.Namespace:
    """The command line: --quick, --only, --json, --logs."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each bench at its smallest size")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=", ".join(names))
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every ratio as JSON")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep each bench's output here")
    return parser.parse_args(None if argv is None else list(argv))


def report(outcomes: list[Outcome], info: dict[str, Any], console: Console, *, quick: bool) -> None:
    """The table, the machine line, the total time and the benches that failed."""
    console.print(results_table(outcomes, quick=quick))
    console.print(f"machine: {machine_line(info)}; now {info['loadavg_end']}")
    console.print(f"total time {info['elapsed_s']:.0f} s")
    failed = [o.bench for o in outcomes if o.failed]
    if failed:
        console.print(f"[red]failed:[/] {', '.join(failed)}")


def main(
    argv: Iterable[str] | None = None,
    *,
    benches: Sequence[Bench] = BENCHES,
    console: Console | None = None,
) -> int:
    """Run the benches and print the table; 1 when a bench failed, else 0."""
    args = parse_args(argv, [b.name for b in benches])
    chosen = [b for b in benches if not args.only or b.name in args.only]
    console = console or (Console() if sys.stdout.isatty() else Console(width=160))
    info, started = machine(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trainprof-bench-run-") as tmp:
        workdir = args.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        outcomes = run_benches(chosen, workdir, console, quick=args.quick)
    info["loadavg_end"] = loadavg()
    info["elapsed_s"] = round(time.monotonic() - started, 1)
    report(outcomes, info, console, quick=args.quick)
    if args.json:
        write_json(args.json, outcomes, info, args.quick)
    return 1 if any(o.failed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
