"""profiler.profile on CPU: a real model trains under the profiler; the files are checked."""

from __future__ import annotations

import gzip
import os
import re
import time
from pathlib import Path

import orjson
import pytest
import torch

import profiler
from profiler.capture import step_metrics
from profiler.capture.kineto import BACKWARD_LANE_TID
from profiler.capture.session import ProfilerStateError
from profiler.capture.step_metrics import (
    MAX_PHASE_EVERY,
    PHASE_COST_NS,
    PHASE_SHARE,
    phase_every,
)
from profiler.events import (
    COUNTER_MEMORY,
    PHASE_COMPLETE,
    PHASE_COUNTER,
    TRACE_SUFFIX,
    parse_module_range_name,
)
from tests.conftest import read_steps, read_trace

MODULES = {
    "model": "Sequential",
    "0": "Conv2d",
    "1": "BatchNorm2d",
    "2": "ReLU",
    "3": "Flatten",
    "4": "Linear",
}


def complete_events(trace: dict, *, name_prefix: str = "") -> list[dict]:
    return [
        e
        for e in trace["traceEvents"]
        if e.get("ph") == PHASE_COMPLETE and e.get("name", "").startswith(name_prefix)
    ]


def test_layout_and_top_level_keys(train, tmp_path: Path) -> None:
    prof = train(steps=6, out_dir=tmp_path, run_name="exp1")
    run_dir = tmp_path / "exp1"
    assert prof.run_dir == run_dir
    assert len(prof.trace_files) == 1
    (trace_path,) = prof.trace_files
    assert re.fullmatch(rf"[^.]+_{os.getpid()}\.\d{{13}}{re.escape(TRACE_SUFFIX)}", trace_path.name)
    # Nothing else that HTA would try to load sits beside the traces, and no partial file is left.
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([trace_path.name, "meta"])
    assert sorted(p.name for p in (run_dir / "meta").iterdir()) == [
        "rank.0.json",
        "run.json",
        "steps.0.jsonl",
    ]

    raw = trace_path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"  # gzip
    trace = read_trace(trace_path)
    for key in (
        "schemaVersion",
        "deviceProperties",
        "distributedInfo",
        "displayTimeUnit",
        "baseTimeNanoseconds",
        "traceEvents",
        "trainprof",
    ):
        assert key in trace, key
    assert trace["distributedInfo"]["rank"] == 0
    # HTA reads the rank with the pattern "rank":\s+(\d+)
    text = gzip.decompress(raw)
    assert re.search(rb'"rank":\s+0', text)
    # The file names itself, and carries no path of the machine that wrote it.
    assert trace["traceName"] == trace_path.name
    assert str(tmp_path).encode() not in text
    meta = trace["trainprof"]
    assert meta["format"] == "trainprof.trace/1"
    assert meta["run_name"] == "exp1" and meta["device"] == "cpu"
    assert meta["window"] == {"first_step": 2, "last_step": 3}


def test_profiler_steps_modules_and_data_wait(train, tmp_path: Path) -> None:
    prof = train(steps=6, out_dir=tmp_path, run_name="r")
    trace = read_trace(prof.trace_files[0])
    steps = complete_events(trace, name_prefix="ProfilerStep#")
    assert sorted(e["name"] for e in steps) == ["ProfilerStep#2", "ProfilerStep#3"]

    forward, backward = {}, {}
    for event in complete_events(trace, name_prefix="nn.Module: "):
        path, cls, is_backward = parse_module_range_name(event["name"])
        (backward if is_backward else forward).setdefault(path, []).append(event)
        assert cls == MODULES[path]
    assert {p: len(v) for p, v in forward.items()} == {p: 2 for p in MODULES}
    assert {p: len(v) for p, v in backward.items()} == {p: 2 for p in MODULES}
    assert all(e["tid"] == BACKWARD_LANE_TID for events in backward.values() for e in events)
    assert all(e["tid"] != BACKWARD_LANE_TID for events in forward.values() for e in events)
    # Recorded the cheap way (cpu_op) on CPU, written as annotations: peers key on that.
    ranges = [*forward.values(), *backward.values()]
    assert {e["cat"] for events in ranges for e in events} == {"user_annotation"}

    # Each forward range sits inside its step, children inside the root, backward after forward.
    for step in steps:
        lo, hi = step["ts"], step["ts"] + step["dur"]
        roots = [e for e in forward["model"] if lo <= e["ts"] <= hi]
        assert len(roots) == 1
        root = roots[0]
        for path in MODULES:
            if path == "model":
                continue
            child = next(e for e in forward[path] if lo <= e["ts"] <= hi)
            assert (
                root["ts"] <= child["ts"] and child["ts"] + child["dur"] <= root["ts"] + root["dur"]
            )
        bwd_root = next(e for e in backward["model"] if lo <= e["ts"] <= hi)
        assert bwd_root["ts"] >= root["ts"] + root["dur"]
        assert bwd_root["ts"] + bwd_root["dur"] <= hi + 1.0  # 1 us of clock-mapping slack

    # A plain list is not a DataLoader: trainprof records the wait itself, as a cpu_op range.
    waits = complete_events(trace, name_prefix="enumerate(DataLoader)#")
    assert [e["name"] for e in waits] == ["enumerate(DataLoader)#list_iterator.__next__"] * 2
    assert {e["cat"] for e in waits} == {"cpu_op"}


def test_torch_dataloader_wait_is_counted_once(train, tmp_path: Path) -> None:
    dataset = torch.utils.data.TensorDataset(torch.randn(24, 3, 8, 8), torch.randint(0, 5, (24,)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    prof = train(steps=6, loader=loader, out_dir=tmp_path, run_name="dl")
    trace = read_trace(prof.trace_files[0])
    waits = complete_events(trace, name_prefix="enumerate(DataLoader)#")
    # torch's own range, once per active step, recategorised to cpu_op for TensorBoard's plugin.
    assert [e["name"] for e in waits] == [
        "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__"
    ] * 2
    assert {e["cat"] for e in waits} == {"cpu_op"}
    steps = read_steps(prof.store.steps_path)
    assert all(s["data_wait_us"] > 0 for s in steps)


def test_memory_counters_at_module_boundaries(train, tmp_path: Path) -> None:
    prof = train(steps=6, out_dir=tmp_path, run_name="m")
    trace = read_trace(prof.trace_files[0])
    counters = [
        e
        for e in trace["traceEvents"]
        if e.get("ph") == PHASE_COUNTER and e["name"] == COUNTER_MEMORY
    ]
    # Two per module per forward (enter, exit), plus backward boundaries, for 2 active steps.
    assert len(counters) >= 2 * 2 * len(MODULES)
    assert all(e["args"]["rss_bytes"] > 1_000_000 for e in counters)
    assert all(e["pid"] == os.getpid() for e in counters)
    steps = complete_events(trace, name_prefix="ProfilerStep#")
    lo = min(e["ts"] for e in steps)
    hi = max(e["ts"] + e["dur"] for e in steps)
    assert all(lo <= e["ts"] <= hi for e in counters)


def test_with_profile_memory_counters_only_at_the_roots(train, tmp_path: Path) -> None:
    """Kineto's allocator events cover every module; our RSS counters stay, but coarse."""
    prof = train(steps=6, out_dir=tmp_path, run_name="pm", profile_memory=True)
    trace = read_trace(prof.trace_files[0])
    counters = [
        e
        for e in trace["traceEvents"]
        if e.get("ph") == PHASE_COUNTER and e["name"] == COUNTER_MEMORY
    ]
    # Per active step: the root's forward (enter, exit), backward start and end.
    assert len(counters) == 2 * 4
    assert all(e["args"]["rss_bytes"] > 1_000_000 for e in counters)


def test_steps_jsonl_has_one_line_per_step(every_step_timed, train, tmp_path: Path) -> None:
    prof = train(steps=7, out_dir=tmp_path, run_name="s")
    steps = read_steps(prof.store.steps_path)
    assert [s["step"] for s in steps] == list(range(7))
    assert [s["deep"] for s in steps] == [False, False, True, True, False, False, False]
    for s in steps:
        assert s["dur_us"] > 0 and s["forward_us"] > 0 and s["backward_us"] > 0
        assert s["optimizer_us"] > 0 and s["data_wait_us"] >= 0
        assert s["forward_us"] + s["backward_us"] + s["optimizer_us"] < s["dur_us"]
        assert s["memory_bytes"] > 0 and s["peak_memory_bytes"] >= s["memory_bytes"]
    starts = [s["start_unix_us"] for s in steps]
    assert starts == sorted(starts)
    pairs = zip(starts[:-1], starts[1:], steps[:-1], strict=True)
    assert all(b - a >= s["dur_us"] - 1 for a, b, s in pairs)


PHASES = ("forward_us", "backward_us", "optimizer_us")


class TickingClock:
    """A stand-in for ``perf_counter_ns`` that moves ``tick_ns`` at each reading, so a step's
    duration counts the readings taken in it, however long the machine really took."""

    def __init__(self, tick_ns: int) -> None:
        self.tick_ns = tick_ns
        self.now_ns = time.perf_counter_ns()

    def __call__(self) -> int:
        self.now_ns += self.tick_ns
        return self.now_ns


def test_phase_split_is_sampled_on_short_steps_and_kept_on_deep_ones(
    train, tmp_path, monkeypatch
) -> None:
    # 5 ms a reading: a timed step reads the clock five times after its start (forward in and
    # out, optimizer in and out, end): 25 ms, so every 5th step is timed; an untimed one is 5 ms.
    monkeypatch.setattr(step_metrics, "_now", TickingClock(5_000_000))
    assert phase_every(25_000_000) == 5
    schedule = profiler.schedule(wait=12, warmup=1, active=3)
    prof = train(steps=40, out_dir=tmp_path, run_name="sampled", schedule=schedule)
    steps = read_steps(prof.store.steps_path)
    assert len(steps) == 40
    next_timed = 0
    for s in steps:
        timed = s["deep"] or s["step"] >= next_timed
        if timed:
            assert all(s[key] > 0 for key in PHASES), s
            next_timed = s["step"] + phase_every(round(s["dur_us"] * 1000))
        else:
            assert all(s[key] is None for key in PHASES), s
        assert s["dur_us"] > 0 and s["memory_bytes"] > 0  # every step, timed or not
    deep = [s["step"] for s in steps if s["deep"]]
    timed = [s["step"] for s in steps if s["forward_us"] is not None]
    assert deep == [13, 14, 15]
    assert timed == [0, 5, 10, 13, 14, 15, 20, 25, 30, 35]


def test_every_step_times_its_phases_once_steps_take_120_ms(tmp_path: Path) -> None:
    from torch import nn

    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with profiler.profile(model, out_dir=tmp_path, run_name="slow", schedule=None) as prof:
        for _ in range(5):
            model(torch.randn(2, 4)).sum().backward()
            time.sleep(0.121)
            opt.step()
            prof.step()
    steps = read_steps(prof.store.steps_path)
    assert len(steps) == 5 and all(s[key] > 0 for s in steps for key in PHASES)
    assert all(s["backward_us"] >= 121_000 for s in steps)


def test_untimed_steps_run_without_the_wrapper_or_optimizer_hooks(tmp_path: Path) -> None:
    from torch import nn
    from torch.optim import optimizer as optim_module

    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hooks_before = len(optim_module._global_optimizer_pre_hooks)
    installed = []
    with profiler.profile(model, out_dir=tmp_path, run_name="light", schedule=None) as prof:
        for _ in range(6):
            hooked = len(optim_module._global_optimizer_pre_hooks) > hooks_before
            installed.append(("forward" in model.__dict__, hooked))
            model(torch.randn(2, 4)).sum().backward()
            opt.step()
            prof.step()
    steps = read_steps(prof.store.steps_path)
    assert installed == [(s["forward_us"] is not None,) * 2 for s in steps]
    assert installed[0] == (True, True) and (False, False) in installed
    assert "forward" not in model.__dict__
    assert len(optim_module._global_optimizer_pre_hooks) == hooks_before


def test_phase_sampling_keeps_its_cost_under_its_share_of_the_step() -> None:
    for step_ns in (1_000, 100_000, 2_500_000, 10_000_000, 120_000_000, 10**9):
        every = phase_every(step_ns)
        assert 1 <= every <= MAX_PHASE_EVERY
        if every < MAX_PHASE_EVERY:  # the cap gives way to the share only for tiny steps
            assert PHASE_COST_NS / every <= PHASE_SHARE * step_ns
        if every > 1:  # and it times as often as the share allows
            assert PHASE_COST_NS / (every - 1) > PHASE_SHARE * step_ns
    assert phase_every(120_000_000) == 1 and phase_every(119_000_000) == 2
    assert phase_every(2_500_000) == 48
    assert phase_every(0) == 1


def test_run_json_complete(train, tmp_path: Path) -> None:
    prof = train(steps=6, out_dir=tmp_path, run_name="ok")
    meta = orjson.loads((tmp_path / "ok" / "meta" / "run.json").read_bytes())
    assert meta["status"] == "complete"
    assert meta["steps"] == 6
    assert meta["trace_files"] == [p.name for p in prof.trace_files]
    assert meta["environment"]["torch"] == torch.__version__
    assert meta["environment"]["device"] == "cpu"
    assert meta["config"]["schedule"] == {
        "wait": 1,
        "warmup": 1,
        "active": 2,
        "repeat": 1,
        "skip_first": 0,
    }
    assert meta["error"] is None


def test_windows_export_through_the_scratch_dir_and_leave_nothing_there(
    train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from profiler.store import trace_store

    scratch = tmp_path / "shm"
    scratch.mkdir()
    monkeypatch.setattr(trace_store, "SCRATCH_DIR", scratch)
    monkeypatch.setattr(trace_store, "SCRATCH_MIN_FREE", 0)
    used: list[Path] = []
    scratch_path = trace_store.RunStore.scratch_path

    def spy(store: trace_store.RunStore, path: Path) -> Path:
        used.append(scratch_path(store, path))
        return used[-1]

    monkeypatch.setattr(trace_store.RunStore, "scratch_path", spy)
    schedule = profiler.schedule(wait=1, warmup=1, active=2, repeat=2)
    with pytest.raises(RuntimeError, match="^boom$"):  # the second window ends in a crash
        train(steps=9, fail_at=7, out_dir=tmp_path / "runs", run_name="shm", schedule=schedule)
    assert len(used) == 2 and all(p.parent == scratch for p in used)
    assert list(scratch.iterdir()) == []
    traces = sorted((tmp_path / "runs" / "shm").glob(f"*{TRACE_SUFFIX}"))
    assert len(traces) == 2 and all(read_trace(t)["traceEvents"] for t in traces)


def test_crash_leaves_readable_trace_marked_failed(train, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="^boom$"):
        train(steps=6, fail_at=3, out_dir=tmp_path, run_name="crash")
    run_dir = tmp_path / "crash"
    meta = orjson.loads((run_dir / "meta" / "run.json").read_bytes())
    assert meta["status"] == "failed"
    assert meta["error"] == {"type": "RuntimeError", "message": "boom"}
    (trace_path,) = run_dir.glob(f"*{TRACE_SUFFIX}")
    trace = read_trace(trace_path)  # the partial window is complete JSON
    names = {e["name"] for e in complete_events(trace, name_prefix="ProfilerStep#")}
    assert names == {"ProfilerStep#2", "ProfilerStep#3"}
    assert trace["trainprof"]["window"] == {"first_step": 2, "last_step": 3}
    steps = read_steps(run_dir / "meta" / "steps.0.jsonl")
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    assert steps[-1]["completed"] is False
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".partial")]


def test_light_metrics_only_without_schedule(train, tmp_path: Path) -> None:
    prof = train(steps=4, schedule=None, out_dir=tmp_path, run_name="light")
    assert prof.trace_files == []
    assert not list((tmp_path / "light").glob("*.gz"))
    steps = read_steps(prof.store.steps_path)
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    assert not any(s["deep"] for s in steps)


def test_repeated_windows_write_one_file_each(train, tmp_path: Path) -> None:
    prof = train(
        steps=10,
        schedule=profiler.schedule(wait=1, warmup=1, active=2, repeat=2),
        out_dir=tmp_path,
        run_name="rep",
    )
    assert len(prof.trace_files) == 2
    windows = [read_trace(p)["trainprof"]["window"] for p in prof.trace_files]
    assert windows == [{"first_step": 2, "last_step": 3}, {"first_step": 6, "last_step": 7}]
    second = read_trace(prof.trace_files[1])
    names = {e["name"] for e in complete_events(second, name_prefix="ProfilerStep#")}
    assert names == {"ProfilerStep#6", "ProfilerStep#7"}


def test_system_sampler_writes_counters(
    train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import profiler.capture.system as system

    # Each batch waits for the sampler's next sample (bounded), so every step, the window's
    # included, holds one however slowly the sampler's thread is scheduled on a busy machine.
    sampled = threading.Event()
    sample_once = system.SystemSampler.sample_once

    def sample_and_tell(self: system.SystemSampler) -> dict[str, float]:
        values = sample_once(self)
        sampled.set()
        return values

    monkeypatch.setattr(system.SystemSampler, "sample_once", sample_and_tell)

    def slow_data():
        for _ in range(6):
            sampled.clear()
            assert sampled.wait(30), "the sampler took no sample in 30 s"
            yield torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))

    prof = train(steps=6, loader=slow_data(), system_metrics=True, out_dir=tmp_path, run_name="sys")
    trace = read_trace(prof.trace_files[0])
    samples = [e for e in trace["traceEvents"] if e.get("name") == "trainprof.system"]
    assert samples, "no system samples in the window"
    assert all({"cpu_pct", "rss_bytes"} <= set(e["args"]) for e in samples)
    assert any("cpu_pct" in s for s in read_steps(prof.store.steps_path))


def test_model_list_names_roots(tmp_path: Path) -> None:
    from torch import nn

    a, b = nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 2))
    with profiler.profile(
        [a, b],
        out_dir=tmp_path,
        run_name="two",
        system_metrics=False,
        schedule=profiler.schedule(wait=0, warmup=1, active=1),
    ) as prof:
        for _ in range(3):
            b(a(torch.randn(2, 4))).sum().backward()
            prof.step()
    names = {
        e["name"]
        for e in complete_events(read_trace(prof.trace_files[0]), name_prefix="nn.Module: ")
    }
    assert {
        "nn.Module: model0 (Linear)",
        "nn.Module: model1 (Sequential)",
        "nn.Module: model1.0 (Linear)",
    } <= names


def test_step_outside_block_is_an_error(tmp_path: Path) -> None:
    prof = profiler.profile(None, out_dir=tmp_path, run_name="x", schedule=None)
    with pytest.raises(ProfilerStateError, match="outside the profiled block"):
        prof.step()
    with prof:
        prof.step()
    with pytest.raises(ProfilerStateError):
        prof.step()


def test_unwritable_out_dir_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    entered = False
    session = profiler.profile(None, out_dir=blocker, run_name="r", schedule=None)
    with pytest.raises(PermissionError, match="not writable"), session:
        entered = True
    assert not entered


def test_existing_run_name_is_refused(train, tmp_path: Path) -> None:
    train(steps=2, out_dir=tmp_path, run_name="same", schedule=None)
    with pytest.raises(FileExistsError, match="already exists"):
        train(steps=2, out_dir=tmp_path, run_name="same", schedule=None)


@pytest.mark.parametrize("kwargs", [{"active": 0}, {"wait": -1}, {"warmup": 1.5}])
def test_bad_schedule_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="schedule"):
        profiler.schedule(**kwargs)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="schedule"):
        profiler.profile(None, schedule={"active": 3})
    with pytest.raises(TypeError, match="nn.Module"):
        profiler.profile("model")
    with pytest.raises(ValueError, match="run_name"):
        profiler.profile(None, out_dir=tmp_path, run_name="../escape")


def test_hooks_are_removed_after_the_run(train, tmp_path: Path) -> None:
    prof = train(steps=6, out_dir=tmp_path, run_name="h")
    for model in prof.models:
        for module in model.modules():
            assert not module._forward_hooks and not module._forward_pre_hooks
            assert "forward" not in module.__dict__  # the timing wrapper is gone


def test_an_instance_forward_of_the_users_is_kept(every_step_timed, tmp_path: Path) -> None:
    from torch import nn

    model = nn.Linear(4, 2)
    calls = []

    def custom_forward(x):
        calls.append(1)
        return nn.functional.linear(x, model.weight, model.bias)

    model.forward = custom_forward
    with profiler.profile(model, out_dir=tmp_path, run_name="f", schedule=None) as prof:
        for _ in range(3):
            model(torch.randn(1, 4)).sum().backward()
            prof.step()
    assert model.forward is custom_forward and len(calls) == 3
    steps = read_steps(prof.store.steps_path)
    assert all(s["forward_us"] > 0 for s in steps)


def test_a_forward_that_raises_still_balances_the_timer(tmp_path: Path) -> None:
    from torch import nn

    model = nn.Linear(4, 2)
    with profiler.profile(model, out_dir=tmp_path, run_name="r", schedule=None) as prof:
        with pytest.raises(RuntimeError):
            model(torch.randn(1, 5))  # wrong width
        model(torch.randn(1, 4)).sum().backward()
        prof.step()
    (step,) = read_steps(prof.store.steps_path)
    assert step["forward_us"] > 0 and step["backward_us"] is None  # no optimizer.step seen


def overlapping_pairs(trace: dict) -> list[tuple[str, str]]:
    """Complete events on one thread that overlap without nesting.

    Perfetto drops such events. Times are compared in integer nanoseconds, as Perfetto reads
    them (ts and dur each rounded to ns), not as float microsecond sums.
    """
    lanes: dict[tuple, list[tuple[int, int, str]]] = {}
    for event in complete_events(trace):
        start = round(event["ts"] * 1000)
        lanes.setdefault((event["pid"], event["tid"]), []).append(
            (start, start + round(event["dur"] * 1000), event["name"])
        )
    bad = []
    for events in lanes.values():
        events.sort(key=lambda e: (e[0], -e[1]))
        stack: list[tuple[int, int, str]] = []
        for start, end, name in events:
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack and end > stack[-1][1]:
                bad.append((stack[-1][2], name))
            stack.append((start, end, name))
    return bad


def test_events_nest_on_every_thread(train, tmp_path: Path) -> None:
    dataset = torch.utils.data.TensorDataset(torch.randn(40, 3, 8, 8), torch.randint(0, 5, (40,)))
    prof = train(
        steps=10,
        loader=torch.utils.data.DataLoader(dataset, batch_size=4),
        schedule=profiler.schedule(wait=1, warmup=1, active=3, repeat=2),
        record_shapes=True,
        profile_memory=True,
        out_dir=tmp_path,
        run_name="nest",
    )
    assert len(prof.trace_files) == 2
    for path in prof.trace_files:
        assert overlapping_pairs(read_trace(path)) == []
