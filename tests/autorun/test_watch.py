"""``Profile.watch``: models handed to a session after it started, as ``trainprof run`` does
at the first optimizer step."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import profiler
from profiler.events import TRACE_SUFFIX
from tests.conftest import read_steps, read_trace


def _train(prof: profiler.Profile, model: nn.Module, steps: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        prof.step()


def _names(run_dir: Path) -> list[set[str]]:
    return [
        {event.get("name", "") for event in read_trace(path)["traceEvents"]}
        for path in sorted(run_dir.glob(f"*{TRACE_SUFFIX}"))
    ]


def test_a_model_watched_after_start_gets_ranges_and_forward_times(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    schedule = profiler.schedule(wait=0, warmup=1, active=2)
    with profiler.profile(out_dir=tmp_path, run_name="r", schedule=schedule) as prof:
        _train(prof, model, 1)  # step 0 (warmup): nothing watched yet
        prof.watch(model)
        prof.watch(model)  # watched already: skipped
        _train(prof, model, 3)
    assert prof.models == [model]
    (names,) = _names(prof.run_dir)
    assert {"nn.Module: model (Sequential)", "nn.Module: 0 (Linear)"} <= names
    steps = read_steps(prof.store.steps_path)
    assert steps[0]["forward_us"] is None
    assert all(step["forward_us"] is not None for step in steps if step["deep"])


def test_a_model_watched_inside_a_window_joins_it(tmp_path: Path) -> None:
    first, second = nn.Linear(3, 1), nn.Linear(3, 1)
    schedule = profiler.schedule(wait=0, warmup=1, active=3)
    with profiler.profile(first, out_dir=tmp_path, run_name="r", schedule=schedule) as prof:
        _train(prof, first, 2)
        prof.watch(second)  # step 2, the second of the window in progress
        _train(prof, first, 1)
        _train(prof, second, 1)
    (names,) = _names(prof.run_dir)
    # Two roots: named model0 and model1 from the watch on; step 1's range kept its name.
    assert {"nn.Module: model (Linear)", "nn.Module: model1 (Linear)"} <= names
    assert "nn.Module: model0 (Linear)" in names


def test_watch_outside_a_session_only_adds_the_model(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    prof = profiler.profile(out_dir=tmp_path, run_name="r", schedule=None)
    prof.watch(model)
    assert prof.models == [model]
    with prof:
        _train(prof, nn.Linear(3, 1), 1)
