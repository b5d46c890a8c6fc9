#!/usr/bin/env python3
"""Deep capture's step cost against torch.profiler's, counted by callgrind instead of timed.

On a shared machine the wall-clock step ratio of bench/capture.py moves by more than the 5% it
has to resolve (an A/A run reads 1.01-1.03). Callgrind counts the instructions a step executes,
and with ``--cache-sim=yes`` its cache misses, whatever else the machine is doing. For each case
(a setting on a model, the loops of bench/capture.py on one thread) both sides run at once, each
in its own process under ``valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes``:

- trainprof's ``profile`` or ``torch.profiler.profile`` (CPU, the same Kineto options), with the
  schedule wait=1, warmup=1, active=K+3;
- instrumentation is switched on after the first active step (its setup is not a step's cost);
  one step warms the simulated caches and is dropped, then callgrind dumps its counts after each
  of the K measured steps and once with nothing between two dumps (the cost of a dump, taken off
  every step); the last active step, whose ``step()`` writes the window, is not counted;
- a step is ``step()`` and the profiler's ``step()`` after it, on the main thread only (the
  ticker's one-second chores land ~50x more often per step under valgrind than in real time),
  in user space only (callgrind does not see the kernel's side of a system call).

Estimated cycles are KCachegrind's: Ir + 10 x (I1mr + D1mr + D1mw) + 100 x (ILmr + DLmr + DLmw).

    python bench/cycles.py [--models mlp cnn] [--settings defaults ...] [--steps K] [--runs N]
                           [--json OUT]

Instructions repeat to ~0.3 points from run to run; the cycles ratio moves 2-4 points (each
process lays its memory out anew, and the simulated caches see another set of conflicts), so
``--runs N`` runs each case N times and pools the N x K steps of each side.

It needs valgrind (callgrind_control comes with it). One case takes 2-4 minutes on a 2-core
machine (both sides at once); the defaults (two cases, K=4) about 5-8 minutes a run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/cycles.py`
    sys.path.insert(0, str(REPO))

from bench.common import Ratio, machine, write_ratios  # noqa: E402

if TYPE_CHECKING:
    from bench.capture import Side

SIDES: tuple[Side, ...] = ("trainprof", "torch")
Figure = Literal["ir", "cycles"]  # instructions, or estimated cycles
DEFAULT_STEPS = 4
# KCachegrind's cycle estimate: an L1 miss costs ~10 cycles, a last-level miss ~100.
CYCLE_WEIGHTS: dict[str, int] = {
    "Ir": 1,
    **dict.fromkeys(("I1mr", "D1mr", "D1mw"), 10),
    **dict.fromkeys(("ILmr", "DLmr", "DLmw"), 100),
}
MAIN_THREAD = 1  # callgrind numbers threads from 1 in creation order
# The simulated caches are fixed (32 KiB 8-way L1s, an 8 MiB 16-way last level, 64 B lines)
# rather than read from the CPU, so that two machines count the same misses.
CACHES = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=8388608,16,64")
VALGRIND = ("valgrind", "--tool=callgrind", "--cache-sim=yes", *CACHES, "--instr-atstart=no")
TOOLS = ("valgrind", "callgrind_control")
CHILD_TIMEOUT_S = 1800.0
WARM_STEP = 3  # its index: after the wait, the warmup and the first active step


def read_totals(path: Path) -> dict[str, int]:
    """The total of each event in a callgrind output file (its ``events:`` and ``totals:`` lines).

    ``summary:`` stands in where there is no ``totals:`` line; events left off the end of either
    line are zero (the format allows it).

    Raises:
        ValueError: the file has no ``events:`` line, or neither total.
    """
    events: list[str] | None = None
    found: dict[str, list[int]] = {}
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            key, _, rest = line.partition(":")
            if key == "events":
                events = rest.split()
            elif key in {"totals", "summary"}:
                found[key] = [int(value) for value in rest.split()]
    values = found.get("totals", found.get("summary"))
    if events is None or values is None:
        missing = "'events:'" if events is None else "'totals:' or 'summary:'"
        raise ValueError(f"{path}: not callgrind output (no {missing} line)")
    return {event: values[i] if i < len(values) else 0 for i, event in enumerate(events)}


def estimated_cycles(totals: Mapping[str, int]) -> int:
    """KCachegrind's cycle estimate from an output file's totals (missing events count 0)."""
    return sum(weight * totals.get(event, 0) for event, weight in CYCLE_WEIGHTS.items())


def part_file(out: Path, part: int, thread: int = MAIN_THREAD) -> Path:
    """The file callgrind 3.19 writes for one dump of one thread under --separate-threads=yes."""
    return out.with_name(f"{out.name}.{part}-{thread:02d}")


def callgrind_control(*args: str) -> None:
    """Ask callgrind, from inside the process it runs, to do something to this process."""
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


@dataclass(frozen=True)
class StepCost:
    """What each measured step cost one side, on its main thread (the dump's cost taken off)."""

    ir: tuple[int, ...]
    cycles: tuple[int, ...]

    @classmethod
    def from_parts(cls, out: Path, steps: int) -> StepCost:
        """Read the parts a child dumped: a warm-up step, an empty part, then ``steps`` steps."""
        totals = [read_totals(part_file(out, part)) for part in range(1, steps + 3)]
        empty = totals[1]
        return cls(
            ir=tuple(t["Ir"] - empty["Ir"] for t in totals[2:]),
            cycles=tuple(estimated_cycles(t) - estimated_cycles(empty) for t in totals[2:]),
        )

    @classmethod
    def pooled(cls, runs: Sequence[StepCost]) -> StepCost:
        """The steps of several runs of one side, in run order, as one run's."""
        return cls(
            ir=tuple(ir for run in runs for ir in run.ir),
            cycles=tuple(cycles for run in runs for cycles in run.cycles),
        )

    def mean(self, figure: Figure) -> float:
        """The mean of a figure over the measured steps."""
        return statistics.fmean(getattr(self, figure))


def run_child(side: Side, model: str, setting: str, steps: int, out_dir: Path) -> None:
    """The measured loop, run under callgrind: see the module's docstring for what is counted."""
    import torch

    from bench.capture import MODELS, SETTINGS, open_profiler

    torch.set_num_threads(1)
    module, step = MODELS[model]()
    options = SETTINGS[setting]
    active = steps + 3
    prof = open_profiler(side, module, f"cycles-{model}-{setting}", active, options, out_dir)
    with prof:
        for index in range(2 + active):
            if index == WARM_STEP:
                callgrind_control("-i", "on")
            step()
            prof.step()
            if index == WARM_STEP:  # part 1 ends: the warm-up step
                callgrind_control("--dump")
            if WARM_STEP <= index <= WARM_STEP + steps:  # part 2: nothing; then one per step
                callgrind_control("--dump")
            if index == WARM_STEP + steps:
                callgrind_control("-i", "off")


@dataclass(frozen=True)
class Case:
    """One setting on one model, and what a step cost each side."""

    setting: str
    model: str
    ours: StepCost
    theirs: StepCost

    @property
    def label(self) -> str:
        return f"{self.setting}, {self.model}"

    def ratio(self, figure: Figure) -> float:
        """trainprof's mean step cost over torch.profiler's."""
        return self.ours.mean(figure) / self.theirs.mean(figure)

    def per_step(self, figure: Figure) -> tuple[float, float]:
        """The lowest and highest ratio of the n-th step of each side: how far one step moves."""
        ours, theirs = getattr(self.ours, figure), getattr(self.theirs, figure)
        paired = [a / b for a, b in zip(ours, theirs, strict=True)]
        return min(paired), max(paired)


def child_command(side: Side, model: str, setting: str, steps: int, out: Path) -> list[str]:
    """The command that runs one side of a case under callgrind, its output files at ``out``."""
    return [
        *VALGRIND,
        "--separate-threads=yes",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(Path(__file__).resolve()),
        *("--child", side, "--models", model, "--settings", setting),
        *("--steps", str(steps), "--out-dir", str(out.parent)),
    ]


def measure_case(
    setting: str, model: str, steps: int, work: Path, console: Console, label: str, runs: int = 1
) -> Case:
    """Both sides of a case under callgrind at once, ``runs`` times, their steps pooled, with
    the elapsed time on ``console``.

    Raises:
        RuntimeError: a side failed or ran past CHILD_TIMEOUT_S (the end of its log says why).
    """
    costs: dict[Side, list[StepCost]] = {side: [] for side in SIDES}
    for run in range(1, runs + 1):
        shown = label if runs == 1 else f"{label}, run {run}/{runs}"
        for side, cost in measure_run(setting, model, steps, work / str(run), console, shown):
            costs[side].append(cost)
    return Case(
        setting, model, StepCost.pooled(costs["trainprof"]), StepCost.pooled(costs["torch"])
    )


def measure_run(
    setting: str, model: str, steps: int, work: Path, console: Console, label: str
) -> list[tuple[Side, StepCost]]:
    """One run of both sides of a case under callgrind at once: each side's step costs."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    children: dict[Side, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    for side in SIDES:
        folder = work / f"{setting}-{model}-{side}"
        folder.mkdir(parents=True)
        out, log = folder / "callgrind.out", folder / "log.txt"
        with open(log, "wb") as sink:
            command = child_command(side, model, setting, steps, out)
            proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=sink)
        children[side] = (proc, out, log)
    started = time.monotonic()
    with console.status(f"{label}: both sides under callgrind") as status:
        while any(proc.poll() is None for proc, _, _ in children.values()):
            elapsed = time.monotonic() - started
            if elapsed > CHILD_TIMEOUT_S:
                for proc, _, _ in children.values():
                    proc.kill()
            status.update(f"{label}: both sides under callgrind, {elapsed:.0f} s")
            time.sleep(1.0)
    for side, (proc, _, log) in children.items():
        if proc.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"{label}: the {side} side exited {proc.returncode}:\n{tail}")
    return [(side, StepCost.from_parts(out, steps)) for side, (_, out, _) in children.items()]


def ratios(cases: Sequence[Case], steps: int, target: float, runs: int = 1) -> list[Ratio]:
    """Per case: estimated cycles against ``target``, then instructions (reported, no target)."""
    found = []
    for case in cases:
        rows: tuple[tuple[Figure, str, float | None], ...] = (
            ("cycles", "estimated cycles", target),
            ("ir", "Ir", None),
        )
        for figure, what, goal in rows:
            low, high = case.per_step(figure)
            found.append(
                Ratio(
                    f"step cost ({what}, callgrind), trainprof / torch.profiler, {case.label}",
                    case.ratio(figure),
                    goal,
                    None if goal is None else "<=",
                    note=f"{_steps_text(steps, runs)} ({low:.3f}..{high:.3f} per step), "
                    "main thread",
                )
            )
    return found


def _steps_text(steps: int, runs: int) -> str:
    return f"{steps} steps" if runs == 1 else f"{runs} runs x {steps} steps"


def print_table(cases: Sequence[Case], steps: int, target: float, runs: int = 1) -> None:
    table = Table(
        title="Step cost under callgrind, trainprof vs torch.profiler, " + _steps_text(steps, runs)
    )
    columns = ("setting", "model", "Ir/step (M)", "Ir ratio", "est. cycles/step (M)")
    for column in (*columns, "cycles ratio", "per step", "met"):
        table.add_column(column, justify="left" if column in {"setting", "model"} else "right")
    for case in cases:
        low, high = case.per_step("cycles")
        ratio = case.ratio("cycles")
        table.add_row(
            case.setting,
            case.model,
            f"{case.ours.mean('ir') / 1e6:.1f} / {case.theirs.mean('ir') / 1e6:.1f}",
            f"{case.ratio('ir'):.3f}",
            f"{case.ours.mean('cycles') / 1e6:.1f} / {case.theirs.mean('cycles') / 1e6:.1f}",
            f"{ratio:.3f}",
            f"{low:.3f}..{high:.3f}",
            f"{'yes' if ratio <= target else 'no'} (<= {target})",
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print(
        "trainprof / torch.profiler, means over the steps, main thread only. User space only: "
        "the system calls trainprof makes (its RSS reads of /proc/self/statm) cost kernel time "
        "callgrind does not count, a bias for trainprof; and the step metrics read RSS on a time "
        "interval, so under valgrind (~50x slower) more often per step than in real time, a "
        "small bias against it."
    )


def parse_args() -> argparse.Namespace:
    from bench.capture import MODELS, SETTINGS

    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="Needs valgrind. Each case runs both sides under callgrind at once: 2-4 minutes "
        "a case on a 2-core machine, 5-8 minutes for the defaults.",
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=["defaults"])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="measured steps (K)")
    parser.add_argument(
        "--runs", type=int, default=1, help="runs of each case, their steps pooled (default 1)"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    if args.child:
        run_child(args.child, args.models[0], args.settings[0], args.steps, args.out_dir)
        return 0
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(
            f"bench/cycles.py needs {' and '.join(missing)} on PATH (valgrind's callgrind; "
            "e.g. apt-get install valgrind)",
            file=sys.stderr,
        )
        return 2
    from bench.capture import STEP_RATIO_TARGET

    console = Console(stderr=True)
    pairs = [(setting, model) for setting in args.settings for model in args.models]
    cases = []
    with tempfile.TemporaryDirectory(prefix="trainprof-cycles-") as tmp:
        for index, (setting, model) in enumerate(pairs, 1):
            label = f"[{index}/{len(pairs)}] {setting}, {model}"
            started = time.monotonic()
            try:
                case = measure_case(
                    setting, model, args.steps, Path(tmp), console, label, args.runs
                )
            except RuntimeError as error:
                console.print(f"[red]✗[/] {error}", markup=True, highlight=False)
                return 1
            console.print(
                f"{label}: est. cycles ratio {case.ratio('cycles'):.3f}, "
                f"{time.monotonic() - started:.0f} s"
            )
            cases.append(case)
    print_table(cases, args.steps, STEP_RATIO_TARGET, args.runs)
    if args.json:
        found = ratios(cases, args.steps, STEP_RATIO_TARGET, args.runs)
        per_step = {
            case.label: {"trainprof": vars(case.ours), "torch": vars(case.theirs)} for case in cases
        }
        write_ratios(
            args.json, found, machine(), per_step=per_step, steps=args.steps, runs=args.runs
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
