"""The pieces of ``trainprof run`` that need no training child: the step rule for several
optimizers, the settings hand-over, the models found from optimizers, exit statuses and the
run's last word, and the bootstrap's start-up in a bare Python."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import torch
from torch import nn

from profiler import on_anomaly as profiler_on_anomaly
from profiler.autorun.config import (
    BOOTSTRAP_DIR,
    DEFAULT,
    ENV_VAR,
    AnomalyWindows,
    AutorunConfig,
    parse_schedule,
)
from profiler.autorun.cycle import OptimizerCycle
from profiler.autorun.roots import training_roots
from profiler.events import RunStatus
from profiler.launch import child_environment, ending, exit_status, plan_run, settle
from profiler.store import RunStore


class Opt:
    """Stands for an optimizer (the rule only needs identity and a weak reference)."""


def ends(cycle: OptimizerCycle, order: list[Opt]) -> list[bool]:
    """Which of these optimizer steps, in order, end a training step."""
    out = []
    for optimizer in order:
        cycle.entered(optimizer)
        out.append(cycle.exited(optimizer))
    return out


def test_one_optimizer_ends_every_step() -> None:
    a = Opt()
    assert ends(OptimizerCycle(), [a] * 4) == [True] * 4


def test_two_optimizers_end_one_step_an_iteration() -> None:
    a, b = Opt(), Opt()
    # Step 0 ends at the first optimizer step; then at the cycle's last optimizer's.
    assert ends(OptimizerCycle(), [a, b] * 3) == [True, False, False, True, False, True]


def test_an_optimizer_stepping_several_times_an_iteration_ends_a_step_each_time() -> None:
    d, g = Opt(), Opt()  # a GAN: the discriminator steps twice per generator step
    assert ends(OptimizerCycle(), [d, d, g] * 2) == [True, True, False, True, True, False]


def test_the_cycle_is_learnt_again_when_its_optimizer_is_gone() -> None:
    cycle = OptimizerCycle()
    a, b = Opt(), Opt()
    assert ends(cycle, [a, b, a, b]) == [True, False, False, True]
    del b
    gc.collect()
    c = Opt()
    assert ends(cycle, [c, a, c, a]) == [True, False, False, True]


def test_parse_schedule() -> None:
    assert parse_schedule("1,1,3") == (1, 1, 3, 1)
    assert parse_schedule(" 0, 2, 4, 0 ") == (0, 2, 4, 0)
    for bad in ("1,1", "1,1,3,1,1", "1,-1,3", "1,1,0", "1,x,3", ""):
        with pytest.raises(ValueError, match="--schedule"):
            parse_schedule(bad)


def test_parse_schedule_anomaly() -> None:
    assert parse_schedule("anomaly") == AnomalyWindows(2.0)  # on_anomaly's default factor
    assert parse_schedule(" anomaly:3.5 ") == AnomalyWindows(3.5)
    for bad in ("anomaly:", "anomaly:1", "anomaly:0.5", "anomaly:x", "anomaly:inf"):
        with pytest.raises(ValueError, match="anomaly:FACTOR takes a number > 1"):
            parse_schedule(bad)
    with pytest.raises(ValueError, match="or anomaly"):
        parse_schedule("anomalous")


def test_the_anomaly_schedule_is_on_anomaly_in_the_child() -> None:
    from profiler.autorun.hooks import _schedule
    from profiler.capture.anomaly import AnomalySchedule

    schedule = _schedule(AutorunConfig("/tmp/out", "r", AnomalyWindows(4.0)))
    assert isinstance(schedule, AnomalySchedule) and schedule.factor == 4.0
    assert schedule == profiler_on_anomaly(factor=4.0)  # its other settings default


@pytest.mark.parametrize("schedule", [DEFAULT, None, (0, 1, 2, 3), AnomalyWindows(3.0)])
def test_the_settings_travel_in_one_environment_variable(schedule: object) -> None:
    config = AutorunConfig("/tmp/out", "run-1", schedule)  # type: ignore[arg-type]
    assert AutorunConfig.from_env(config.to_env()) == config
    assert AutorunConfig.from_env({}) is None
    with pytest.raises(ValueError, match=ENV_VAR):
        AutorunConfig.from_env({ENV_VAR: '{"out_dir": 1}'})


def test_the_child_environment_puts_the_bootstrap_first(tmp_path: Path) -> None:
    config = plan_run(tmp_path, "r")
    env = child_environment(config, {"PYTHONPATH": "/a" + os.pathsep + "/b", "HOME": "/h"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(BOOTSTRAP_DIR), "/a", "/b"]
    assert env["HOME"] == "/h" and AutorunConfig.from_env(env) == config
    assert config.out_dir == str(tmp_path.resolve()) and config.schedule == DEFAULT


def test_a_default_run_name_is_a_free_timestamp(tmp_path: Path) -> None:
    first = plan_run(tmp_path, None, light_only=True)
    (tmp_path / first.run_name).mkdir()
    second = plan_run(tmp_path, None, schedule="1,1,2")
    assert second.run_name != first.run_name and second.run_name.startswith(first.run_name[:8])
    assert first.schedule is None and second.schedule == (1, 1, 2, 1)


def test_exit_statuses_read_as_a_shells() -> None:
    assert [exit_status(code) for code in (0, 3, -9, -15)] == [0, 3, 137, 143]
    assert ending(3) == "exit status 3" and ending(-9) == "killed by SIGKILL"


def _run(tmp_path: Path, status: RunStatus | None) -> Path:
    store = RunStore(tmp_path, "r")
    store.create({}, {})
    if status is not None:
        store.finish(status, steps=5)
    return store.run_dir


def _meta(run_dir: Path) -> dict:
    return orjson.loads((run_dir / "meta" / "run.json").read_bytes())


def test_settle_fails_a_complete_run_whose_command_failed(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, RunStatus.COMPLETE)
    assert settle(run_dir, 3) == "failed (exit status 3)"
    meta = _meta(run_dir)
    assert meta["status"] == "failed" and meta["error"]["message"] == "exit status 3"
    assert meta["steps"] == 5


def test_settle_keeps_what_the_process_recorded(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, RunStatus.COMPLETE)
    assert settle(run_dir, 0) == "complete"
    other = _run(tmp_path / "x", RunStatus.FAILED)
    before = _meta(other)
    assert settle(other, 1) == "failed"
    assert _meta(other) == before


def test_settle_marks_a_run_killed_mid_way_interrupted(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, None)  # still "running": SIGKILL left it so
    assert settle(run_dir, -9) == "interrupted (SIGKILL)"
    assert settle(tmp_path / "nothing", 1) is None


def test_training_roots_are_the_outermost_modules_owning_the_parameters() -> None:
    class Wrapper(nn.Module):  # as DistributedDataParallel holds its model
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    encoder, head, bystander = nn.Linear(2, 2), nn.Linear(2, 1), nn.Linear(3, 3)
    wrapped = Wrapper(nn.Sequential(encoder, nn.ReLU()))
    first = torch.optim.SGD(head.parameters(), lr=0.1)
    second = torch.optim.SGD(encoder.parameters(), lr=0.1)
    assert training_roots([first, second]) == [head, wrapped]
    assert training_roots([]) == []
    del bystander


def _python(code: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A bare Python (no torch) started as ``trainprof run`` starts one, with another
    ``sitecustomize`` further down the path."""
    other = tmp_path / "other"
    other.mkdir(exist_ok=True)
    (other / "sitecustomize.py").write_text("print('theirs ran')\n")
    paths = [str(BOOTSTRAP_DIR), str(other), os.environ.get("PYTHONPATH", "")]
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    if not env:
        full.pop(ENV_VAR, None)
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60
    )


CHECK = (
    "import sys; print(sorted(m for m in sys.modules if m.startswith(('profiler', 'torch'))));"
    "print(any(p.endswith('bootstrap') for p in sys.path))"
)


def test_the_bootstrap_does_nothing_without_settings(tmp_path: Path) -> None:
    result = _python(CHECK, tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["theirs ran", "[]", "False"]
    assert result.stderr == ""


def test_the_bootstrap_waits_for_torch_and_chains(tmp_path: Path) -> None:
    env = AutorunConfig(str(tmp_path), "r").to_env()
    result = _python(CHECK, tmp_path, env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "theirs ran" and lines[2] == "False"
    loaded = eval(lines[1])  # noqa: S307 - our own print of a list of names
    assert "profiler.autorun.watch" in loaded and not [m for m in loaded if "torch" in m]
    assert "profiler.capture" not in loaded and result.stderr == ""


def test_bad_settings_are_one_line_and_the_script_still_runs(tmp_path: Path) -> None:
    result = _python("print('ran')", tmp_path, {ENV_VAR: "{not json"})
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["theirs ran", "ran"]
    assert result.stderr.startswith("trainprof: not profiling this process: ValueError")
    assert len(result.stderr.splitlines()) == 1
