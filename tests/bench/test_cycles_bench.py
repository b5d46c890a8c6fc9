"""bench/cycles.py: the callgrind output parser on files written here in callgrind's format, the
ratios it reports, and one real run of a small Python child under valgrind (skipped only where
valgrind is not installed). No timing thresholds: callgrind's counts do not depend on time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cycles import (
    VALGRIND,
    Case,
    StepCost,
    estimated_cycles,
    part_file,
    ratios,
    read_totals,
)

REPO = Path(__file__).resolve().parents[2]
EVENTS = "Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw"


def callgrind_file(path: Path, totals: str, *, events: str = EVENTS, summary: str = "0") -> Path:
    """A file in callgrind's output format with these totals (one function, one cost line)."""
    path.write_text(
        "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 4242\n"
        "cmd:  python child.py\npart: 1\nthread: 1\n\n"
        f"positions: line\nevents: {events}\nsummary: {summary}\n\n"
        "ob=(1) python\nfl=(1) ???\nfn=(1) main\n0 10 4 2\n\n"
        f"totals: {totals}\n"
    )
    return path


def test_read_totals_names_each_event_and_fills_left_off_ones_with_zero(tmp_path: Path) -> None:
    path = callgrind_file(tmp_path / "out", "1000 300 200 7 5 3")  # the last-level misses left off
    totals = read_totals(path)
    assert totals == {
        "Ir": 1000, "Dr": 300, "Dw": 200, "I1mr": 7, "D1mr": 5, "D1mw": 3,
        "ILmr": 0, "DLmr": 0, "DLmw": 0,
    }  # fmt: skip


def test_read_totals_takes_summary_where_there_is_no_totals_line(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("version: 1\nevents: Ir\nsummary: 512\n\nfn=(1) main\n0 512\n")
    assert read_totals(path) == {"Ir": 512}


def test_read_totals_names_the_file_that_is_not_callgrind_output(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("version: 1\nevents: Ir\n")
    with pytest.raises(
        ValueError, match=r"notes\.txt: not callgrind output \(no 'totals:' or 'summary:' line\)"
    ):
        read_totals(path)
    path.write_text("totals: 5\n")
    with pytest.raises(ValueError, match=r"notes\.txt: not callgrind output \(no 'events:' line\)"):
        read_totals(path)


def test_estimated_cycles_weighs_l1_misses_ten_and_last_level_misses_a_hundred() -> None:
    totals = {"Ir": 1000, "Dr": 99, "I1mr": 1, "D1mr": 2, "D1mw": 3, "ILmr": 4, "DLmr": 5}
    assert estimated_cycles(totals) == 1000 + 10 * (1 + 2 + 3) + 100 * (4 + 5)
    assert estimated_cycles({"Ir": 70}) == 70  # a run without --cache-sim


def test_a_step_costs_its_part_less_the_empty_part(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    parts = ["900 0 0 90", "100 0 0 1", "1100 0 0 3 0 0 1", "1300 0 0 2"]  # warm, empty, 2 steps
    for part, totals in enumerate(parts, 1):
        callgrind_file(part_file(out, part), totals)
    cost = StepCost.from_parts(out, steps=2)
    assert cost.ir == (1000, 1200)
    assert cost.cycles == (1100 + 30 + 100 - 110, 1300 + 20 - 110)
    assert cost.mean("ir") == 1100


def test_the_cycles_ratio_has_the_step_target_and_the_instructions_ratio_none() -> None:
    ours = StepCost(ir=(110, 100), cycles=(220, 200))
    theirs = StepCost(ir=(100, 100), cycles=(200, 200))
    found = ratios([Case("defaults", "mlp", ours, theirs)], steps=2, target=1.05)
    cycles, instructions = found
    name = "trainprof / torch.profiler, defaults, mlp"
    assert cycles.name == f"step cost (estimated cycles, callgrind), {name}"
    assert (cycles.value, cycles.target, cycles.comparison, cycles.met) == (1.05, 1.05, "<=", True)
    assert instructions.name == f"step cost (Ir, callgrind), {name}"
    assert (instructions.target, instructions.met) == (None, None)
    assert cycles.note == "2 steps (1.000..1.100 per step), main thread"


def test_runs_pool_their_steps_and_say_so() -> None:
    first, second = StepCost(ir=(100, 110), cycles=(200, 230)), StepCost(ir=(90,), cycles=(170,))
    pooled = StepCost.pooled([first, second])
    assert pooled == StepCost(ir=(100, 110, 90), cycles=(200, 230, 170))
    assert pooled.mean("cycles") == 200

    theirs = StepCost(ir=(100, 100, 100), cycles=(200, 200, 200))
    cycles, _ = ratios([Case("defaults", "mlp", pooled, theirs)], steps=1, target=1.05, runs=3)
    assert cycles.value == 1.0
    assert cycles.note == "3 runs x 1 steps (0.850..1.150 per step), main thread"


def test_runs_below_one_are_refused() -> None:
    command = [sys.executable, str(REPO / "bench" / "cycles.py"), "--runs", "0"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "--runs must be at least 1" in done.stderr


def test_the_bench_exits_2_naming_valgrind_where_it_is_missing(tmp_path: Path) -> None:
    empty_path = {**os.environ, "PATH": str(tmp_path)}
    command = [sys.executable, str(REPO / "bench" / "cycles.py"), "--models", "mlp"]
    done = subprocess.run(command, env=empty_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "needs valgrind and callgrind_control" in done.stderr


# The layout run_child dumps (a warm-up part, an empty part, one part per step), each step the
# same loop, with a second thread that works while the main thread's empty part is counted.
CHILD = """\
import sys, threading
sys.path.insert(0, {repo!r})
from bench.cycles import callgrind_control

def spin(n):
    total = 0
    for i in range(n):
        total += i
    return total

callgrind_control("-i", "on")
spin(50_000)
callgrind_control("--dump")
worker = threading.Thread(target=spin, args=(100_000,))
worker.start()
worker.join()
callgrind_control("--dump")
for _ in range(2):
    spin(50_000)
    callgrind_control("--dump")
callgrind_control("-i", "off")
"""


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_a_python_child_under_callgrind_gives_main_thread_parts(tmp_path: Path) -> None:
    script, out = tmp_path / "child.py", tmp_path / "callgrind.out"
    script.write_text(CHILD.format(repo=str(REPO)))
    command = [*VALGRIND, "--separate-threads=yes", f"--callgrind-out-file={out}"]
    subprocess.run([*command, sys.executable, str(script)], check=True, timeout=120)
    cost = StepCost.from_parts(out, steps=2)
    assert all(ir > 50_000 * 10 for ir in cost.ir)  # tens of instructions per loop iteration
    assert 0.9 < cost.ir[0] / cost.ir[1] < 1.1  # the same loop counts about the same
    assert all(cycles > 0 for cycles in cost.cycles)
    worker = read_totals(part_file(out, 2, thread=2))["Ir"]
    assert worker > 100_000 * 10  # the worker's loop is counted on its own thread...
    assert read_totals(part_file(out, 2))["Ir"] < worker / 2  # ...not in the main thread's part
