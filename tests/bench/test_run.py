"""bench/run.py against tiny fake benches, and the ratio record of bench/common.py.

The real benches are too slow for CI; these fakes write known JSON, fail or go missing, so the
runner's table, JSON and exit status can be checked exactly. No timing thresholds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from bench.common import Ratio, infer_comparison, machine, machine_line, read_ratios, write_ratios
from bench.dashboard import PageResult, page_ratios
from bench.run import Bench, main, number, target_text

# A fake bench: writes RATIOS (and the arguments it got, as a note) to the file after --json.
FAKE = """\
import json, sys
out = sys.argv[sys.argv.index("--json") + 1]
ratios = {ratios}
for ratio in ratios:
    ratio["note"] = " ".join(sys.argv[1:sys.argv.index("--json")])
json.dump({{"machine": {{"cpu_model": "fake"}}, "ratios": ratios}}, open(out, "w"))
"""
PASSING = [{"name": "step ratio", "value": 1.01, "target": 1.05, "comparison": "<=", "unit": "x"}]
# No "comparison": bench/run.py infers it from value, target and met.
FAILING = [{"name": "load ratio", "value": 3.0, "target": 5.0, "met": False, "unit": "x"}]


def fake_bench(tmp_path: Path, name: str, body: str | None) -> Bench:
    """A Bench whose script is ``body`` in tmp_path (None: the script does not exist)."""
    script = tmp_path / f"{name}.py"
    if body is not None:
        script.write_text(body)
    return Bench(name, script, quick_args=("--quick", "--tiny"), quick_timeout_s=60)


@pytest.fixture
def benches(tmp_path: Path) -> list[Bench]:
    """One bench that meets its target, one that misses it, one that crashes, one missing."""
    return [
        fake_bench(tmp_path, "passing", FAKE.format(ratios=PASSING)),
        fake_bench(tmp_path, "failing", FAKE.format(ratios=FAILING)),
        fake_bench(tmp_path, "crashing", "raise RuntimeError('boom in the bench')\n"),
        fake_bench(tmp_path, "missing", None),
    ]


def run_main(argv: list[str], benches: list[Bench]) -> tuple[int, str]:
    """bench/run.py's main on these benches: its exit status and everything it printed."""
    console = Console(record=True, width=200, force_terminal=False)
    code = main(argv, benches=benches, console=console)
    return code, console.export_text()


def test_table_lists_every_ratio_and_every_failure(benches: list[Bench], tmp_path: Path) -> None:
    code, text = run_main(["--quick", "--json", str(tmp_path / "out.json")], benches)
    assert code == 1  # a bench crashed
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert "1.01×" in rows["passing"] and "≤ 1.05×" in rows["passing"]
    assert "✓" in rows["passing"] and "--quick --tiny" in rows["passing"]
    assert "3×" in rows["failing"] and "≥ 5×" in rows["failing"] and "✗" in rows["failing"]
    assert "crashed (exit 1)" in rows["crashing"]
    assert "missing" in rows["missing"]
    assert "boom in the bench" in text  # the crash's log tail is shown
    assert "failed: crashing" in text
    assert "machine:" in text


def test_json_holds_each_ratio_with_its_bench(benches: list[Bench], tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    run_main(["--json", str(out)], benches)
    data = orjson.loads(out.read_bytes())
    assert [(r["bench"], r["name"], r["met"], r["comparison"]) for r in data["ratios"]] == [
        ("passing", "step ratio", True, "<="),
        ("failing", "load ratio", False, ">="),
    ]
    assert data["ratios"][0]["note"] == ""  # no --quick: the full run passes no options
    status = {b["bench"]: b["status"] for b in data["benches"]}
    assert status == {"passing": "ok", "failing": "ok", "crashing": "crashed", "missing": "missing"}
    assert data["quick"] is False and "cpu_model" in data["machine"]


def test_unmet_targets_and_missing_scripts_exit_0(benches: list[Bench]) -> None:
    code, text = run_main(["--only", "passing", "failing", "missing"], benches)
    assert code == 0
    assert "crashing" not in text


def test_a_bench_whose_program_is_absent_is_missing_not_run(tmp_path: Path) -> None:
    """cycles.py needs valgrind: where a bench's program is not on PATH it is not started (this
    one would crash) and is reported missing with what it needs, which fails nothing."""
    crashing = fake_bench(tmp_path, "needy", "raise RuntimeError('must not run')\n")
    needy = Bench(crashing.name, crashing.script, needs=("python3", "no-such-program-here"))
    code, text = run_main(["--json", str(tmp_path / "out.json")], [needy])
    assert code == 0
    assert "needs no-such-program-here on PATH" in text and "must not run" not in text
    (bench,) = orjson.loads((tmp_path / "out.json").read_bytes())["benches"]
    assert bench["status"] == "missing" and "python3" not in bench["detail"]


def test_the_cycles_bench_needs_valgrind() -> None:
    from bench.run import BENCHES

    (cycles,) = [b for b in BENCHES if b.name == "cycles"]
    assert {"valgrind", "callgrind_control"} <= set(cycles.needs)


def test_a_bench_past_its_limit_is_ended_and_reported(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text("import time\ntime.sleep(60)\n")
    bench = Bench("slow", script, full_timeout_s=0.5)
    code, text = run_main([], [bench])
    assert code == 1
    assert "timed out" in text and "limit of 0.5 s" in text


def test_a_timed_out_bench_takes_its_children_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = tmp_path / "spawner.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    run_main([], [Bench("spawner", script, full_timeout_s=3)])
    child = int(pid_file.read_text())
    # SIGKILL is sent to the whole group, but the orphaned child dies when the kernel next
    # schedules it: on a loaded machine that is a moment after the bench's own exit is reaped.
    deadline = time.monotonic() + 10  # a bound for the wait only; it sleeps 60 s if missed
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by init, does not count)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\tZ" not in status.read_text().split("State:")[1].splitlines()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_bench_that_writes_no_ratios_fails(tmp_path: Path) -> None:
    bench = fake_bench(tmp_path, "silent", "print('no json written')\n")
    code, text = run_main(["--quick"], [bench])
    assert code == 1
    assert "no ratios" in text


def test_dashboard_pages_become_ratios() -> None:
    pages = [
        PageResult("Overview", 1_000_000, cold_s=9.0, warm_s=[2.0, 2.5, 4.0]),
        PageResult("Timeline", 1_000_000, warm_s=[5.0], points=400, shapes=100),
    ]
    cold, warm, timeline_warm, shapes = page_ratios(pages)
    assert (cold.name, cold.value, cold.target) == ("Overview first render, cold", 9.0, None)
    assert (warm.value, warm.target, warm.comparison, warm.met) == (2.5, 3.0, "<=", True)
    assert (timeline_warm.value, timeline_warm.target) == (5.0, None)
    assert (shapes.value, shapes.unit) == (100, "shapes") and "400 points" in (shapes.note or "")
    (small,) = page_ratios([PageResult("Overview", 100_000, warm_s=[2.0])])
    assert small.target is None and "100,000 events" in (small.note or "")
    assert "goal < 3 s is at 1,000,000" in (small.note or "")


def test_ratio_met_follows_its_comparison() -> None:
    assert Ratio("a", 1.04, 1.05, "<=").met is True
    assert Ratio("a", 1.06, 1.05, "<=").met is False
    assert Ratio("b", 6.0, 5.0, ">=").met is True
    assert Ratio("b", 4.0, 5.0, ">=").met is False
    assert Ratio("c", 1.5).met is None
    with pytest.raises(ValueError):
        Ratio("d", 1.0, 2.0)  # a target without a comparison
    with pytest.raises(ValueError):
        Ratio("e", 1.0, 2.0, "<")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "target", "met", "expected"),
    [(1.0, 2.0, True, "<="), (3.0, 2.0, False, "<="), (3.0, 2.0, True, ">="),
     (1.0, 2.0, False, ">="), (2.0, 2.0, True, None), (1.0, None, None, None)],
)  # fmt: skip
def test_infer_comparison(
    value: float, target: float | None, met: bool | None, expected: str | None
) -> None:
    assert infer_comparison(value, target, met) == expected


def test_write_then_read_ratios(tmp_path: Path) -> None:
    ratios = [Ratio("overhead", 0.4, 1.0, "<=", "%", note="CI"), Ratio("size", 1.5)]
    path = tmp_path / "sub" / "out.json"
    write_ratios(path, ratios, {"cpu_model": "x"}, extra={"k": 1})
    data = json.loads(path.read_text())
    assert data["extra"] == {"k": 1} and data["ratios"][0]["met"] is True
    info, read = read_ratios(path)
    assert info == {"cpu_model": "x"} and read == ratios


def test_read_ratios_rejects_other_shapes(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="ratios"):
        read_ratios(path)
    path.write_text("not json")
    with pytest.raises(ValueError, match="not JSON"):
        read_ratios(path)


def test_machine_names_the_cpu_and_versions() -> None:
    info = machine()
    assert info["cpu_count"] and info["python"] and info["torch"]
    assert str(info["cpu_count"]) in machine_line(info)


def test_numbers_and_targets_read_as_printed() -> None:
    assert number(0.4321, "%") == "+0.43 %" and number(1.0526, "x") == "1.05×"
    assert number(1234.5, "B/event") == "1,234 B/event" and number(2.5, "s") == "2.5 s"
    assert target_text(Ratio("a", 1.0, 1.0, "<=", "%")) == "≤ 1.00 %"
    assert target_text(Ratio("b", 6.0, 5.0, ">=")) == "≥ 5×"
    assert target_text(Ratio("c", 1.0)) == "—"
