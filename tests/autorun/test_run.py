"""``trainprof run`` on unmodified training scripts, run as a user would run it.

The scripts (``scripts/``) import no trainprof. Each run imports torch, seconds on a loaded
machine, so the runs of this module all start at once (one fixture) and the tests read what
they left. No wall-clock threshold: data waits are compared with step times as ratios.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from profiler.cli import app
from tests.autorun.helpers import Ran, finish, start
from tests.conftest import read_trace

# Each run imports torch: on a loaded 2-core machine the batch can take minutes.
pytestmark = pytest.mark.timeout(600)

# name: (trainprof run options, the command), each run into <out>/<name>.
RUNS: dict[str, tuple[list[str], list[str]]] = {
    # 8 steps of a tiny model over a dataset that sleeps 150 ms a batch item: data-bound.
    "plain": ([], ["python", "train.py", "8", "--sleep-ms", "150"]),
    "raises": ([], ["python", "train.py", "8", "--fail-at", "6"]),
    "exit3": ([], ["python", "train.py", "8", "--exit", "3"]),
    "module": (["--schedule", "0,1,2"], ["python", "-m", "trainpkg.fit", "7"]),
    "workers": ([], ["python", "train.py", "8", "--workers", "2", "--optimizers", "2"]),
    "light": (["--light-only"], ["python", "train.py", "6", "--workers", "1", "--spawn"]),
    "idle": ([], ["python", "-c", "import torch; print('no training here')"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Ran]]:
    out = tmp_path_factory.mktemp("traces")
    started = {
        name: start([*options, "--run-name", name], command, out)
        for name, (options, command) in RUNS.items()
    }
    yield {name: finish(child, out / name) for name, child in started.items()}


def _names(ran: Ran) -> set[str]:
    return set().union(*(ran.event_names(path) for path in ran.trace_files))


def test_every_step_is_recorded_and_the_deep_window_traced(runs: dict[str, Ran]) -> None:
    ran = runs["plain"]
    assert ran.returncode == 0, ran.stderr
    assert re.fullmatch(r"trained 8 steps, loss \d+\.\d{3}\n", ran.stdout)  # the script's own
    assert [s["step"] for s in ran.steps()] == list(range(8))
    assert ran.meta["status"] == "complete" and ran.meta["steps"] == 8
    # The default schedule: wait 1, warmup 1, active 3: one window over steps 2-4.
    assert len(ran.trace_files) == 1
    names = _names(ran)
    assert {"ProfilerStep#2", "ProfilerStep#3", "ProfilerStep#4"} <= names
    # The model was found from Adam's parameters at the first step.
    assert {"nn.Module: model (Sequential)", "nn.Module: 0 (Linear)"} <= names
    assert "nn.Module: 2 (Linear).backward" in names
    assert ran.own_lines() == [f"trainprof: run complete: {ran.run_dir}"]


def test_the_data_wait_share_is_in_the_summary(runs: dict[str, Ran]) -> None:
    ran = runs["plain"]
    result = CliRunner().invoke(app, ["summary", "--json", "--no-cache", str(ran.run_dir)])
    assert result.exit_code == 0, result.output
    (trace,) = orjson.loads(result.stdout)["traces"]
    breakdown = trace["step_breakdown_pct"]
    # 300 ms of sleep a batch against an 8-16-3 MLP on one thread: the loader takes more
    # than everything else together, even with the machine loaded (~95% when it is not).
    assert breakdown["dataloader"] > 100 - breakdown["dataloader"]
    steps = ran.steps()[1:]
    assert sum(s["data_wait_us"] for s in steps) > 0.5 * sum(s["dur_us"] for s in steps)


def test_a_script_that_raises_keeps_its_traceback_and_its_trace(runs: dict[str, Ran]) -> None:
    ran = runs["raises"]
    assert ran.returncode == 1
    lines = [line for line in ran.stderr.splitlines() if not line.startswith("USDT:")]
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-2:] == [
        "ZeroDivisionError: division by zero",
        f"trainprof: run failed (division by zero): {ran.run_dir}",
    ]
    meta = ran.meta
    assert meta["status"] == "failed"
    assert meta["error"] == {"type": "ZeroDivisionError", "message": "division by zero"}
    assert len(ran.trace_files) == 1  # the window over steps 2-4, written before the error
    completed = [s["step"] for s in ran.steps() if s.get("completed", True)]
    assert completed == list(range(6))


def test_sys_exit_3_is_the_exit_status_and_fails_the_run(runs: dict[str, Ran]) -> None:
    ran = runs["exit3"]
    assert ran.returncode == 3
    assert re.fullmatch(r"trained 8 steps, loss \d+\.\d{3}\n", ran.stdout)
    assert len(ran.steps()) == 8
    assert ran.meta["status"] == "failed"
    assert ran.meta["error"]["message"] == "exit status 3"
    assert ran.own_lines() == [f"trainprof: run failed (exit status 3): {ran.run_dir}"]


def test_python_dash_m_and_a_loop_without_a_dataloader(runs: dict[str, Ran]) -> None:
    ran = runs["module"]
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["fit 7 steps"]
    assert [s["step"] for s in ran.steps()] == list(range(7))
    # --schedule 0,1,2: warmup at step 0, active 1-2 (models are watched from step 1).
    assert ran.meta["config"]["schedule"]["active"] == 2
    names = _names(ran)
    assert {"ProfilerStep#1", "ProfilerStep#2", "nn.Module: 0 (Linear)"} <= names


def test_dataloader_workers_and_two_optimizers_give_one_step_an_iteration(
    runs: dict[str, Ran],
) -> None:
    ran = runs["workers"]
    assert ran.returncode == 0, ran.stderr
    assert [s["step"] for s in ran.steps()] == list(range(8))
    # Only the training process profiled: one step log, traces named after its pid.
    assert sorted(p.name for p in (ran.run_dir / "meta").glob("steps.*")) == ["steps.0.jsonl"]
    worker = f"{socket.gethostname()}_{ran.meta['pid']}."
    assert ran.trace_files and all(p.name.startswith(worker) for p in ran.trace_files)
    # Both models' modules (one Sequential) are ranged; Adam steps the first Linear only.
    assert "nn.Module: 2 (Linear)" in _names(ran)


def test_light_only_logs_steps_and_writes_no_trace(runs: dict[str, Ran]) -> None:
    ran = runs["light"]  # with spawned DataLoader workers, which must not profile
    assert ran.returncode == 0, ran.stderr
    assert ran.trace_files == []
    steps = ran.steps()
    assert [s["step"] for s in steps] == list(range(6)) and not any(s["deep"] for s in steps)
    assert ran.meta["config"]["schedule"] is None
    assert sorted(p.name for p in (ran.run_dir / "meta").glob("steps.*")) == ["steps.0.jsonl"]
    assert not [line for line in ran.own_lines() if "not profiling" in line]


def test_schedule_anomaly_opens_a_window_after_the_stall(tmp_path: Path) -> None:
    """--schedule anomaly:20: steps of ~10 ms (5 ms of sleep per item), one of 500 ms at step
    12: 50x the median, where a loaded machine would need to stall a normal step 200 ms to
    open a window of its own. The window: warmup at 13, recorded 14-16."""
    command = ["python", "train.py", "20", "--sleep-ms", "5", "--stall-at", "12"]
    options = ["--schedule", "anomaly:20", "--run-name", "anomaly"]
    ran = finish(start(options, command, tmp_path), tmp_path / "anomaly")
    assert ran.returncode == 0, ran.stderr
    schedule = ran.meta["config"]["schedule"]
    assert (schedule["kind"], schedule["factor"]) == ("on_anomaly", 20.0)
    triggers = {t["step"]: t for t in ran.meta["triggers"]}
    assert 12 in triggers and triggers[12]["kind"] == "anomaly"
    windows = [read_trace(path)["trainprof"]["window"] for path in ran.trace_files]
    (window,) = [w for w in windows if w["trigger"]["step"] == 12]
    assert (window["first_step"], window["last_step"]) == (14, 16)


def test_a_process_that_never_trains_records_nothing(runs: dict[str, Ran]) -> None:
    ran = runs["idle"]
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "no training here\n"
    assert not ran.run_dir.exists()
    assert len(ran.own_lines()) == 1 and "nothing recorded" in ran.own_lines()[0]


# Refused before anything runs, or nothing to profile: in process, no torch child. -----------


@pytest.mark.parametrize(
    "options",
    [["--schedule", "1,1"], ["--schedule", "1,1,0"], ["--schedule", "a,b,c"],
     ["--schedule", "1,1,3", "--light-only"], ["--run-name", "a/b"],
     ["--schedule", "anomaly:1"], ["--schedule", "anomaly", "--light-only"]],
)  # fmt: skip
def test_bad_options_exit_2(tmp_path: Path, options: list[str]) -> None:
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path), *options, "--", "true"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_run_name_taken_already_exits_2(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    options = ["--out", str(tmp_path), "--run-name", "taken"]
    result = CliRunner().invoke(app, ["run", *options, "--", "true"])
    assert result.exit_code == 2 and "exists already" in result.output


def test_a_command_not_found_exits_127(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path), "--", "no-such-command-tp"])
    assert result.exit_code == 127
    assert "command not found: no-such-command-tp" in result.output


def test_no_command_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no command" in result.output


def test_a_signal_death_is_128_plus_the_signal(tmp_path: Path) -> None:
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    command = ["--", sys.executable, "-c", kill]
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path), *command])
    assert result.exit_code == 128 + 9, result.output


def test_options_after_the_command_are_the_commands(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Without `--` too: options stop at the first word of the command.
    script = "import sys; print(sys.argv[1:])"
    result = CliRunner().invoke(
        app, ["run", "--out", str(tmp_path), sys.executable, "-c", script, "--out", "x", "--"]
    )
    assert result.exit_code == 0, result.output
    assert capfd.readouterr().out == "['--out', 'x', '--']\n"  # the child's, on our stdout
    assert os.listdir(tmp_path) == []
