"""profiler.analysis.steps: step spans and the step-time breakdown, checked by hand and live
against PyTorch's TensorBoard profiler plugin (torch-tb-profiler 0.4.3) on the same files.

Two runs of the plugin per trace: on the file as it is, and on a copy rewritten into the
categories the plugin reads (:func:`plugin_readable`). Ours must equal the second outright: that
shows the only differences from the first are the documented ones (module doc of steps.py).
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from profiler.analysis.steps import (
    CATEGORIES,
    WHOLE_TRACE_NAME,
    average_breakdown_pct,
    event_categories,
    step_breakdown,
    step_table,
)
from profiler.analysis.table import load_trace
from tests.peers import tb_plugin_overview

#: Our names for the plugin's Overview categories.
PLUGIN_NAMES = dict(zip(CATEGORIES, ("Kernel", "Memcpy", "Memset", "Communication", "Runtime",
                                     "DataLoader", "CPU Exec", "Other"), strict=True))  # fmt: skip
#: The issue's target: ours within this many percentage points of the plugin.
TOLERANCE_PCT = 3.0
#: Ours vs the plugin on a copy it reads fully: only its rounding to 2 decimals apart.
ROUNDING_PCT = 0.006
FAST_REFERENCES = (
    "two_ranks_rank-0.json.gz",
    "two_ranks_rank-1.json.gz",
    "alexnet.json.gz",
    "amd_mi250.json.gz",
    "triton.json.gz",
    "cpu_only.json.gz",
)
SLOW_REFERENCES = ("nccl.json.gz", "diff_control.json.gz", "diff_test.json.gz")
REFERENCES = [*FAST_REFERENCES, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW_REFERENCES)]
DATALOADER = "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__"
BASE_US = 1_000_000  # synthetic traces start here, so times in them read as offsets


# ------------------------------------------------------------------ helpers shared with test_gpu


def host(
    name: str, ts: float, end: float, cat: str = "cpu_op", *, ext: int | None = None
) -> dict[str, Any]:
    """A host-side complete event on thread 100."""
    return _event(cat, name, 100, 100, ts, end, {} if ext is None else {"External id": ext})


def launch(ts: float, end: float, corr: int, ext: int, name: str = "cudaLaunchKernel") -> dict:
    """A runtime call as current Kineto writes it (``cuda_runtime``)."""
    return _event(
        "cuda_runtime", name, 100, 100, ts, end, {"correlation": corr, "External id": ext}
    )


def gpu(
    cat: str,
    name: str,
    ts: float,
    end: float,
    corr: int,
    *,
    device: int = 0,
    stream: int = 7,
    blocks_per_sm: float | None = None,
    occupancy_pct: float | None = None,
) -> dict[str, Any]:
    """A GPU event as Kineto writes it; kernel launch metrics only when given."""
    args: dict[str, Any] = {"device": device, "stream": stream, "correlation": corr}
    if blocks_per_sm is not None:
        args["blocks per SM"] = blocks_per_sm
    if occupancy_pct is not None:
        args["est. achieved occupancy %"] = occupancy_pct
    return _event(cat, name, device, stream, ts, end, args)


def _event(cat: str, name: str, pid: int, tid: int, ts: float, end: float, args: dict) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": BASE_US + ts,
            "dur": end - ts, "args": args}  # fmt: skip


def write_trace(directory: Path, events: list[dict[str, Any]]) -> Path:
    """A trace file named as the plugin wants (``<worker>.<n>.pt.trace.json.gz``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "w.1.pt.trace.json.gz"
    trace = {"schemaVersion": 1, "traceEvents": events}
    path.write_bytes(gzip.compress(json.dumps(trace).encode()))
    return path


def two_step_events() -> list[dict[str, Any]]:
    """Two steps whose breakdown is worked out by hand in :func:`test_hand_computed_breakdown`.

    Offsets in microseconds. Step 1 [0, 100]: DataLoader wait, aten::mm launching two
    concurrent kernels. Step 2 [100, 200] on the host: aten::add doing a memcpy, a memset and a
    kernel that runs until 230, and a collective.
    """
    return [
        host("ProfilerStep#1", 0, 100, "user_annotation", ext=1),
        host(DATALOADER, 0, 10, "user_annotation", ext=2),
        host("aten::mm", 20, 60, ext=3),
        launch(30, 40, corr=11, ext=3),
        launch(42, 44, corr=12, ext=3),
        gpu("kernel", "volta_sgemm_128x64_nn", 50, 90, 11, blocks_per_sm=0.5, occupancy_pct=40),
        gpu("kernel", "elementwise_kernel", 60, 80, 12, stream=8, blocks_per_sm=0.75,
            occupancy_pct=20),
        host("ProfilerStep#2", 100, 200, "user_annotation", ext=4),
        host("aten::add", 105, 175, ext=5),
        launch(110, 120, corr=13, ext=5, name="cudaMemcpyAsync"),
        gpu("gpu_memcpy", "Memcpy HtoD (Pageable -> Device)", 120, 140, 13),
        launch(125, 126, corr=14, ext=5, name="cudaMemsetAsync"),
        gpu("gpu_memset", "Memset (Device)", 140, 145, 14),
        launch(150, 155, corr=15, ext=5),
        gpu("kernel", "sm80_xmma_gemm_f16f16_f16f32", 180, 230, 15, blocks_per_sm=2.0,
            occupancy_pct=60),
        host("nccl:all_reduce", 160, 170, "user_annotation", ext=6),
    ]  # fmt: skip


def plugin_readable(trace: dict[str, Any]) -> dict[str, Any]:
    """The trace in the categories plugin 0.4.3 reads, to show our differences are only these:
    runtime/driver calls as ``Runtime`` (it knows no ``cuda_runtime``), DataLoader waits as
    ``cpu_op`` (it drops them as ``user_annotation``), and no GPU-timeline copy of a step (it
    takes that for one more step)."""
    events = []
    for event in trace["traceEvents"]:
        cat, name = event.get("cat", ""), event.get("name", "")
        if cat in ("cuda_runtime", "cuda_driver"):
            event = {**event, "cat": "Runtime"}
        elif cat == "user_annotation" and name.startswith("enumerate(DataLoader)#"):
            event = {**event, "cat": "cpu_op"}
        elif cat == "gpu_user_annotation" and name.startswith("ProfilerStep#"):
            continue
        events.append(event)
    return {**trace, "traceEvents": events}


@functools.lru_cache(maxsize=32)
def plugin_overview(path: Path, readable: bool = False) -> dict[str, Any]:
    """The plugin's Overview for one trace file, as it is or rewritten by `plugin_readable`.

    The file as it is goes to the plugin as a copy; a rewritten one as plain JSON (the plugin
    reads both): json and gzip at level 9 took 2.6 of a diff_control overview's 7.3 s.
    """
    logging.getLogger("torch_tb_profiler").setLevel(logging.ERROR)  # its per-event warnings
    with tempfile.TemporaryDirectory(prefix="tb_run_") as run_dir:
        if readable:
            trace = plugin_readable(orjson.loads(gzip.decompress(path.read_bytes())))
            (Path(run_dir) / "w.1.pt.trace.json").write_bytes(orjson.dumps(trace))
        else:
            shutil.copyfile(path, Path(run_dir) / "w.1.pt.trace.json.gz")
        return tb_plugin_overview(Path(run_dir), "w")


def plugin_pct(overview: dict[str, Any]) -> dict[str, float]:
    """The plugin's breakdown with every category (it leaves out the ones it does not show)."""
    return {name: overview["breakdown_pct"].get(name, 0.0) for name in PLUGIN_NAMES.values()}


def ours_in_plugin_names(path: Path) -> dict[str, float]:
    return {PLUGIN_NAMES[c]: pct for c, pct in average_breakdown_pct(load_trace(path)).items()}


# ------------------------------------------------------------------ by hand


def test_hand_computed_step_table(tmp_path: Path) -> None:
    steps = step_table(load_trace(write_trace(tmp_path, two_step_events())))

    assert steps["step"].tolist() == [1, 2]
    assert steps["name"].tolist() == ["ProfilerStep#1", "ProfilerStep#2"]
    assert (steps["ts_us"] - BASE_US).tolist() == [0, 100]
    # Step 2 launched a kernel that runs to 230: the step lasts until it ends.
    assert (steps["end_us"] - BASE_US).tolist() == [100, 230]
    assert steps["dur_us"].tolist() == [100, 130]
    assert (steps["host_end_us"] - BASE_US).tolist() == [100, 200]


def test_hand_computed_breakdown(tmp_path: Path) -> None:
    breakdown = step_breakdown(load_trace(write_trace(tmp_path, two_step_events())))

    us = breakdown[[f"{c}_us" for c in CATEGORIES]].round(6).to_numpy().tolist()
    # Step 1: kernels [50,90] (two overlap: counted once); runtime [30,40]+[42,44];
    # DataLoader [0,10]; aten::mm [20,60] less what those claim = [20,30]+[40,42]+[44,50];
    # other [10,20]+[90,100].
    assert us[0] == [40, 0, 0, 0, 12, 10, 18, 20]
    # Step 2 [100,230]: kernel [180,230]; memcpy [120,140]; memset [140,145]; collective
    # [160,170]; runtime [110,120]+[150,155] (the memset call at [125,126] is under the memcpy,
    # which ranks first); aten::add [105,175] less all that; other [100,105]+[175,180].
    assert us[1] == [50, 20, 5, 10, 15, 0, 20, 10]
    assert breakdown["kernel_pct"].tolist() == [40.0, pytest.approx(100 * 50 / 130)]
    assert breakdown[[f"{c}_pct" for c in CATEGORIES]].sum(axis=1).tolist() == pytest.approx(
        [100, 100]
    )


def test_average_weighs_steps_by_their_time(tmp_path: Path) -> None:
    average = average_breakdown_pct(load_trace(write_trace(tmp_path, two_step_events())))

    # Summed over both steps, over their 230 us (the plugin divides average by average).
    expected_us = dict(zip(CATEGORIES, (90, 20, 5, 10, 27, 10, 38, 30), strict=True))
    assert average == pytest.approx({c: 100 * us / 230 for c, us in expected_us.items()})


def test_roles_of_events(tmp_path: Path) -> None:
    trace = load_trace(write_trace(tmp_path, two_step_events()))
    names = trace.events["name"].astype(str)
    claims = dict(zip(names, event_categories(trace).astype(object), strict=True))

    assert pd.isna(claims["ProfilerStep#1"])
    assert claims[DATALOADER] == "dataloader"  # a user_annotation: ours counts it
    assert claims["cudaLaunchKernel"] == "runtime"  # cuda_runtime: ours counts it
    assert claims["nccl:all_reduce"] == "communication"
    assert claims["aten::mm"] == "cpu_exec"
    assert claims["Memcpy HtoD (Pageable -> Device)"] == "memcpy"
    assert claims["sm80_xmma_gemm_f16f16_f16f32"] == "kernel"


def test_synthetic_against_plugin(tmp_path: Path) -> None:
    path = write_trace(tmp_path, two_step_events())
    ours = ours_in_plugin_names(path)
    as_is = plugin_overview(path)
    readable = plugin_overview(path, readable=True)

    # The plugin reads no cuda_runtime call: no Runtime, and no way to see that step 2 launched
    # a kernel running past its host end, so its steps are [0,100] and [100,200]. It drops the
    # user_annotation DataLoader wait. Ours is right on all three (steps.py module doc).
    assert as_is["breakdown_pct"]["Runtime"] == 0.0
    assert as_is["breakdown_pct"]["DataLoader"] == 0.0
    assert as_is["avg_step_time_us"] == 100
    assert ours["Runtime"] == pytest.approx(100 * 27 / 230)
    assert ours["DataLoader"] == pytest.approx(100 * 10 / 230)
    # Given the same facts in categories it reads, it agrees with ours everywhere.
    assert readable["avg_step_time_us"] == 115
    assert plugin_pct(readable) == pytest.approx(ours, abs=ROUNDING_PCT)


#: The 2021 generation's categories (torch 1.8-1.10) for the current ones.
LEGACY_CATEGORIES = {
    "cpu_op": "Operator",
    "user_annotation": "Operator",
    "cuda_runtime": "Runtime",
    "kernel": "Kernel",
    "gpu_memcpy": "Memcpy",
    "gpu_memset": "Memset",
}


def test_2021_generation_reads_the_same(tmp_path: Path) -> None:
    legacy = [
        {**e, "cat": LEGACY_CATEGORIES[e["cat"]], "tid": f"stream {e['tid']}"}
        if e["pid"] == 0
        else {**e, "cat": LEGACY_CATEGORIES[e["cat"]]}
        for e in two_step_events()
    ]
    path = write_trace(tmp_path / "legacy", legacy)
    ours = ours_in_plugin_names(path)

    assert ours == ours_in_plugin_names(write_trace(tmp_path / "current", two_step_events()))
    # The plugin reads everything in this generation: it agrees with ours as it is.
    assert plugin_pct(plugin_overview(path)) == pytest.approx(ours, abs=ROUNDING_PCT)


# ------------------------------------------------------------------ step spans


def test_trace_without_steps_is_one_step(tmp_path: Path) -> None:
    path = write_trace(tmp_path, [
        host("aten::linear", 0, 50, ext=1),
        launch(10, 20, corr=1, ext=1),
        host("aten::relu", 60, 100, ext=2),
        gpu("kernel", "relu_kernel", 90, 130, 1),
    ])  # fmt: skip
    trace = load_trace(path)
    steps = step_table(trace)

    # The host operators' span [0,100], stretched over the kernel launched in it.
    assert steps[["step", "name"]].values.tolist() == [[0, WHOLE_TRACE_NAME]]
    assert (steps[["ts_us", "end_us"]].to_numpy() - BASE_US).tolist() == [[0, 130]]
    us = step_breakdown(trace)[[f"{c}_us" for c in CATEGORIES]].to_numpy().tolist()
    assert us == [[40, 0, 0, 0, 10, 0, 70, 10]]
    readable = plugin_overview(path, readable=True)
    assert readable["steps"] == ["0"]
    assert plugin_pct(readable) == pytest.approx(ours_in_plugin_names(path), abs=ROUNDING_PCT)


def test_cpu_trace_without_steps(tmp_path: Path) -> None:
    path = write_trace(tmp_path, [
        host("aten::linear", 0, 50), host("aten::relu", 60, 100),
        host("my_range", 0, 120, "user_annotation"),  # neither the plugin nor we count it
    ])  # fmt: skip
    ours = ours_in_plugin_names(path)

    assert step_table(load_trace(path))["dur_us"].tolist() == [100]
    assert ours["CPU Exec"] == 90.0 and ours["Other"] == 10.0
    assert plugin_pct(plugin_overview(path)) == pytest.approx(ours)


def _steps_launching(counts: tuple[int, ...]) -> list[dict[str, Any]]:
    """Steps of 100 us on the host, step i launching ``counts[i]`` 1-us kernels."""
    events: list[dict[str, Any]] = []
    corr = 0
    for index, count in enumerate(counts):
        start = 100 * index
        events.append(host(f"ProfilerStep#{index + 1}", start, start + 100, "user_annotation"))
        for k in range(count):
            corr += 1
            events.append(launch(start + 2 * k, start + 2 * k + 1, corr=corr, ext=corr))
            events.append(gpu("kernel", "k", start + 50 + k, start + 51 + k, corr))
    return events


@pytest.mark.parametrize(
    ("counts", "kept"),
    [
        ((5, 4, 0), [1, 2]),  # trailing steps that launched nothing go
        ((5, 3), [1]),  # the last one goes too when it launched < 80% of its predecessor's
        ((5, 4), [1, 2]),
        ((0, 5, 0, 0), [1, 2]),
    ],
)
def test_tail_steps_the_plugin_drops(tmp_path: Path, counts: tuple[int, ...], kept: list) -> None:
    path = write_trace(tmp_path, _steps_launching(counts))

    assert step_table(load_trace(path))["step"].tolist() == kept
    assert plugin_overview(path, readable=True)["steps"] == [str(s) for s in kept]


def test_first_step_starts_after_earlier_gpu_work(tmp_path: Path) -> None:
    path = write_trace(tmp_path, [
        launch(-20, -15, corr=1, ext=1),  # before any step; its kernel runs into step 1
        gpu("kernel", "early", 5, 25, 1),
        host("ProfilerStep#1", 0, 100, "user_annotation"),
        launch(30, 31, corr=2, ext=2),
        gpu("kernel", "own", 50, 90, 2),
    ])  # fmt: skip
    steps = step_table(load_trace(path))

    # The early kernel ends (25) before step 1's own GPU work starts (50): step 1 starts at 25.
    assert (steps[["ts_us", "end_us"]].to_numpy() - BASE_US).tolist() == [[25, 100]]
    assert plugin_overview(path, readable=True)["avg_step_time_us"] == 75


def test_repeated_step_numbers_stay_separate(tmp_path: Path) -> None:
    path = write_trace(tmp_path, [
        host("ProfilerStep#1", 0, 100, "user_annotation"), host("aten::mm", 10, 90),
        host("ProfilerStep#1", 100, 150, "user_annotation"), host("aten::mm", 110, 150),
    ])  # fmt: skip
    breakdown = step_breakdown(load_trace(path))

    assert breakdown["step"].tolist() == [1, 1]
    assert breakdown["cpu_exec_us"].tolist() == [80, 40]
    assert plugin_overview(path)["steps"] == ["1", "1"]


def test_gpu_timeline_copy_of_a_step_is_no_step(reference_traces: Path) -> None:
    path = reference_traces / "hta" / "amd_mi250.json.gz"

    # ROCm copies ProfilerStep#1 onto the GPU timeline. The plugin counts it as a step of its
    # own (steps 1, 1, 2); it is the same step seen from the GPU, so ours has one step 1. Step
    # 2 launched no GPU work, so the plugin's tail rule drops it once it can see launches.
    assert plugin_overview(path)["steps"] == ["1", "1", "2"]
    assert step_table(load_trace(path))["step"].tolist() == [1]
    assert plugin_overview(path, readable=True)["steps"] == ["1"]


def test_no_events_no_steps(tmp_path: Path) -> None:
    trace = load_trace(write_trace(tmp_path, []))

    assert step_table(trace).empty
    assert step_breakdown(trace).empty
    assert average_breakdown_pct(trace) == dict.fromkeys(CATEGORIES, 0.0)


# ------------------------------------------------------------------ reference traces, live


def _runtime_claim_us(path: Path) -> float:
    """Runtime's share computed with the plugin's own range code, independently of ours: the
    runtime/driver calls' union inside the steps, less kernel, memcpy, memset and
    communication time (which rank before Runtime)."""
    from torch_tb_profiler.profiler.range_utils import (
        get_ranges_sum,
        intersection_ranges_lists,
        merge_ranges,
        subtract_ranges_lists,
    )

    def spans(rows: Any) -> list[tuple[float, float]]:
        return list(zip(rows["ts_us"], rows["end_us"], strict=True))

    trace = load_trace(path)
    events = trace.events
    runtime = merge_ranges(spans(events[events["kind"].isin(("runtime", "driver"))]))
    ranked_before = ("kernel", "memcpy", "memset", "communication")
    before = merge_ranges(spans(events[event_categories(trace).isin(ranked_before)]))
    steps = step_table(trace)
    inside = intersection_ranges_lists(merge_ranges(spans(steps)), runtime)
    return float(get_ranges_sum(subtract_ranges_lists(inside, before)))


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_against_plugin(reference_traces: Path, name: str) -> None:
    path = reference_traces / "hta" / name
    ours = ours_in_plugin_names(path)
    theirs = plugin_pct(plugin_overview(path))

    # (a) The plugin reads no cuda_runtime/cuda_driver call: Runtime 0. Ours has that time,
    # which the plugin files under CPU Exec (the calls sit inside operators): ours is right.
    assert theirs["Runtime"] == 0.0
    steps_us = step_breakdown(load_trace(path))["dur_us"].sum()
    assert ours["Runtime"] == pytest.approx(100 * _runtime_claim_us(path) / steps_us, abs=1e-6)
    assert ours["Runtime"] + ours["CPU Exec"] == pytest.approx(
        theirs["CPU Exec"], abs=TOLERANCE_PCT
    )
    # (b) It drops user_annotation DataLoader waits (diff_*'s): ours counts them, and is right.
    assert theirs["DataLoader"] == 0.0
    for category in ("Kernel", "Memcpy", "Memset", "Communication", "DataLoader", "Other"):
        assert ours[category] == pytest.approx(theirs[category], abs=TOLERANCE_PCT)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_against_plugin_reading_everything(reference_traces: Path, name: str) -> None:
    path = reference_traces / "hta" / name
    readable = plugin_overview(path, readable=True)

    assert readable["steps"] == [str(s) for s in step_table(load_trace(path))["step"]]
    assert ours_in_plugin_names(path) == pytest.approx(plugin_pct(readable), abs=ROUNDING_PCT)


@pytest.mark.slow
def test_dataloader_waits_of_torch_2(reference_traces: Path) -> None:
    path = reference_traces / "hta" / "diff_control.json.gz"

    # enumerate(DataLoader)#_MultiProcessingDataLoaderIter.__next__ as user_annotation.
    assert plugin_overview(path)["breakdown_pct"]["DataLoader"] == 0.0
    assert ours_in_plugin_names(path)["DataLoader"] == pytest.approx(0.09, abs=0.005)


def test_reference_numbers(reference_traces: Path) -> None:
    """Pinned values on one reference trace, so a change shows even if the plugin changes too."""
    breakdown = step_breakdown(load_trace(reference_traces / "hta" / "nccl.json.gz"))

    assert breakdown["step"].tolist() == [4, 5, 6]
    assert breakdown["dur_us"].round(3).tolist() == [222442.191, 219726.905, 224936.243]
    average = average_breakdown_pct(load_trace(reference_traces / "hta" / "nccl.json.gz"))
    assert {c: round(v, 2) for c, v in average.items()} == {
        "kernel": 23.27, "memcpy": 0.29, "memset": 0.05, "communication": 0.16,
        "runtime": 4.52, "dataloader": 0.0, "cpu_exec": 60.48, "other": 11.24,
    }  # fmt: skip


def test_own_cpu_capture_against_plugin(train: Any, tmp_path: Path) -> None:
    prof = train(out_dir=tmp_path, run_name="cpu")
    (path,) = prof.trace_files
    ours = ours_in_plugin_names(Path(path))
    theirs = tb_plugin_overview(Path(prof.run_dir))

    # Our capture writes its data waits as cpu_op, which the plugin reads: no differences.
    assert theirs["steps"] == [str(s) for s in step_table(load_trace(path))["step"]]
    assert ours["DataLoader"] > 0
    assert ours == pytest.approx(plugin_pct(theirs), abs=ROUNDING_PCT)
    assert sum(ours[c] for c in ("Kernel", "Memcpy", "Memset", "Runtime")) == 0.0
