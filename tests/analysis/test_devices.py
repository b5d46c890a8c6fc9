"""profiler.analysis.devices: one device model for CUDA, ROCm, MTIA, XPU and CPU-only traces.

The reference traces are real (tests/data/hta: MTIA inference, an AMD MI250 run, CUDA ones, a
CPU-only one); HTA 0.5.0 runs live on copies of them for the idle share. XPU and device-side
collectives have no public trace here, so small traces in the categories Kineto writes for them
(libkineto's ``ActivityType`` names) stand in.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from profiler.analysis.devices import (
    DEVICE_KINDS,
    DEVICES,
    KIND_BY_CATEGORY,
    LAUNCH_CALLS,
    device_model,
)
from profiler.analysis.kernels import kernel_type_breakdown, launch_stats
from profiler.analysis.steps import average_breakdown_pct
from profiler.analysis.summary import summarize, trace_summary
from profiler.analysis.table import load_trace
from profiler.analysis.temporal import idle_time_breakdown, temporal_breakdown
from profiler.analysis.timeline import prepare_timeline
from profiler.export.terminal import render_summary
from tests.peers import hta_temporal_breakdown

HTA_POINTS = 2.0  # the bound on our idle share against HTA's
FAST_REFERENCES = {
    "mtia_inference.json.gz": "mtia",
    "amd_mi250.json.gz": "rocm",
    "triton.json.gz": "cuda",
    "alexnet.json.gz": "cuda",
    "two_ranks_rank-0.json.gz": "cuda",
    "cpu_only.json.gz": "cpu",
}


def _hta_idle_pct(reference: Path, tmp_path: Path) -> float:
    """HTA's idle share of the trace, run on a copy alone in a directory (HTA loads them all)."""
    run_dir = tmp_path / "hta"
    run_dir.mkdir()
    shutil.copy(reference, run_dir / reference.name)
    (row,) = hta_temporal_breakdown(run_dir).to_dict("records")
    return float(row["idle_time_pctg"])


def _recorded_idle_pct(reference_traces: Path, name: str) -> float:
    expected = json.loads((reference_traces / "hta" / "HTA_EXPECTED.json").read_text())
    (row,) = expected[name]["temporal_breakdown"]
    return float(row["idle_time_pctg"])


def _rendered(summary: dict[str, Any]) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    for part in render_summary(summary):
        console.print(part)
    text = console.file.getvalue()
    assert isinstance(text, str)
    return text


def _event(cat: str, name: str, ts: float, dur: float, pid: int, tid: int, **args: Any) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur,
            "args": args}  # fmt: skip


def _write(directory: Path, events: list[dict[str, Any]], **meta: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "w.1.pt.trace.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"schemaVersion": 1, **meta,
                                               "traceEvents": events}).encode()))  # fmt: skip
    return path


def _device_trace(runtime_cat: str, launch: str, kernel_cat: str = "kernel") -> list[dict]:
    """One step on the host launching two kernels 40 us apart on stream 1: 50% idle."""
    return [
        _event("user_annotation", "ProfilerStep#1", 0, 200, 1, 1),
        _event("cpu_op", "aten::mm", 5, 150, 1, 1),
        _event(runtime_cat, launch, 10, 5, 1, 1, correlation=1),
        _event(runtime_cat, launch, 60, 5, 1, 1, correlation=2),
        _event(kernel_cat, "gemm", 20, 40, 0, 1, stream=1, device=0, correlation=1),
        _event(kernel_cat, "gemm", 100, 40, 0, 1, stream=1, device=0, correlation=2),
    ]


# ------------------------------------------------------------------ the model itself


def test_every_device_is_modelled_once_and_its_categories_kinded() -> None:
    assert list(DEVICES) == ["cuda", "rocm", "mtia", "xpu", "cpu"]
    for device in DEVICES.values():
        for category, kind in device.categories.items():
            assert category == category.lower() and KIND_BY_CATEGORY[category] == kind
        assert device.launch_calls <= LAUNCH_CALLS
        assert device.has_timeline == (device.name != "cpu")
    assert DEVICES["mtia"].categories_of("kernel") == ("mtia_ccp_events",)
    assert DEVICES["mtia"].categories_of("runtime") == ("mtia_runtime",)
    assert DEVICES["xpu"].categories_of("runtime") == ("xpu_runtime",)
    assert set(DEVICES["cuda"].categories_of("memcpy")) == {"gpu_memcpy", "memcpy"}
    assert "communication" in DEVICE_KINDS and KIND_BY_CATEGORY["collective_comm"] in DEVICE_KINDS
    # Figures only NVIDIA's CUPTI kernels carry.
    assert [d.name for d in DEVICES.values() if d.kernel_metrics] == ["cuda"]
    assert [d.name for d in DEVICES.values() if d.tensor_core_names] == ["cuda"]
    assert device_model("unknown") is DEVICES["cuda"]


@pytest.mark.parametrize(("name", "device"), FAST_REFERENCES.items())
def test_reference_traces_are_recognised(reference_traces: Path, name: str, device: str) -> None:
    trace = load_trace(reference_traces / "hta" / name)
    assert trace.device == device
    assert (temporal_breakdown(trace) is None) == (device == "cpu")


@pytest.mark.parametrize(
    ("events", "meta", "device"),
    [
        (_device_trace("cuda_runtime", "cudaLaunchKernel"), {}, "cuda"),
        (_device_trace("cuda_runtime", "hipLaunchKernel"), {}, "rocm"),
        (_device_trace("cuda_runtime", "cudaLaunchKernel"), {"roctracer_version": 4}, "rocm"),
        (
            _device_trace("cuda_runtime", "cudaLaunchKernel"),
            {"deviceProperties": [{"id": 0, "name": "AMD Instinct MI300X"}]},
            "rocm",
        ),
        (_device_trace("mtia_runtime", "runFunction", "mtia_ccp_events"), {}, "mtia"),
        (_device_trace("xpu_runtime", "urEnqueueKernelLaunch"), {}, "xpu"),
        ([_event("cpu_op", "aten::mm", 0, 10, 1, 1)], {}, "cpu"),
        # A GPU machine that ran nothing on its GPU in the window: still CUDA, as before.
        ([_event("cpu_op", "aten::mm", 0, 10, 1, 1)], {"deviceProperties": [{"id": 0}]}, "cuda"),
    ],
    ids=["nvidia", "hip-names", "roctracer", "amd-props", "mtia", "xpu", "cpu", "nvidia-idle"],
)
def test_each_device_kind_is_recognised(
    tmp_path: Path, events: list[dict], meta: dict[str, Any], device: str
) -> None:
    assert load_trace(_write(tmp_path, events, **meta)).device == device


# ------------------------------------------------------------------ MTIA, live against HTA


def test_mtia_reference_has_an_idle_share_within_two_points_of_htas(
    reference_traces: Path, tmp_path: Path
) -> None:
    reference = reference_traces / "hta" / "mtia_inference.json.gz"
    trace = load_trace(reference)
    ours = temporal_breakdown(trace)

    assert trace.device == "mtia"
    assert ours is not None
    theirs = _hta_idle_pct(reference, tmp_path)  # 4.34% with HTA 0.5.0
    assert ours.idle_pct == pytest.approx(theirs, abs=HTA_POINTS)
    assert theirs == pytest.approx(_recorded_idle_pct(reference_traces, reference.name), abs=0.01)
    # The accelerator is busy: its streams' idle time is broken down too.
    assert not idle_time_breakdown(trace).empty


def test_mtia_summary_has_its_device_figures_and_nulls_for_the_rest(
    reference_traces: Path,
) -> None:
    summary = trace_summary(load_trace(reference_traces / "hta" / "mtia_inference.json.gz"))

    assert summary["device"] == "mtia"
    assert summary["temporal_breakdown_pct"]["idle"] is not None
    gpu = summary["gpu"]
    assert gpu["utilization_pct"] > 50  # inference keeps it busy (HTA: 94.66% compute)
    assert (gpu["sm_efficiency_pct"], gpu["achieved_occupancy_pct"]) == (None, None)
    assert gpu["tensor_core_pct"] is None
    assert '"sm_efficiency_pct": null' in json.dumps(summary)
    # mtia_ccp_events are kernels and mtia_runtime calls are runtime in the step breakdown.
    assert summary["step_breakdown_pct"]["kernel"] > 50
    assert summary["step_breakdown_pct"]["runtime"] > 0


# ------------------------------------------------------------------ AMD


def test_amd_reference_is_rocm_with_htas_idle_share_and_no_none_printed(
    reference_traces: Path, tmp_path: Path
) -> None:
    reference = reference_traces / "hta" / "amd_mi250.json.gz"
    summary = summarize(reference)
    (entry,) = summary["traces"]
    temporal = entry["temporal_breakdown_pct"]

    assert entry["device"] == "rocm"
    assert temporal is not None
    assert temporal["idle"] == pytest.approx(_hta_idle_pct(reference, tmp_path), abs=HTA_POINTS)
    assert entry["gpu"]["sm_efficiency_pct"] is None  # ROCm kernels carry no blocks per SM
    assert entry["gpu"]["tensor_core_pct"] is None
    text = _rendered(summary)
    assert "None" not in text
    assert "SM efficiency n/a" in text and "tensor cores n/a" in text
    assert "GPU time (HTA): idle" in text


@pytest.mark.parametrize("name", FAST_REFERENCES)
def test_no_reference_prints_none(reference_traces: Path, name: str) -> None:
    assert "None" not in _rendered(summarize(reference_traces / "hta" / name))


def test_mtia_is_named_as_such_in_the_report_and_the_timeline(reference_traces: Path) -> None:
    reference = reference_traces / "hta" / "mtia_inference.json.gz"
    text = _rendered(summarize(reference))
    assert "MTIA time (HTA): idle" in text and "MTIA: utilization" in text
    lanes = prepare_timeline(load_trace(reference)).lanes
    assert any(lane.gpu and lane.label.startswith("MTIA 17 stream ") for lane in lanes)


# ------------------------------------------------------------------ CPU-only and XPU


def test_cpu_only_stays_cpu_without_a_temporal_breakdown(reference_traces: Path) -> None:
    (entry,) = summarize(reference_traces / "hta" / "cpu_only.json.gz")["traces"]
    assert entry["device"] == "cpu"
    assert entry["temporal_breakdown_pct"] is None and entry["gpu"] is None


def test_xpu_trace_gets_every_device_analysis(tmp_path: Path) -> None:
    trace = load_trace(_write(tmp_path, _device_trace("xpu_runtime", "urEnqueueKernelLaunch")))
    temporal = temporal_breakdown(trace)

    assert trace.device == "xpu"
    # Kernels [20, 60) and [100, 140): 40 us idle of the 120 us span.
    assert temporal is not None and temporal.idle_pct == pytest.approx(100 * 40 / 120)
    assert list(launch_stats(trace)["launch_name"]) == ["urEnqueueKernelLaunch"] * 2
    breakdown = average_breakdown_pct(trace)
    assert breakdown["kernel"] > 0 and breakdown["runtime"] > 0
    assert trace_summary(trace)["gpu"]["sm_efficiency_pct"] is None


def test_device_side_collectives_are_communication(tmp_path: Path) -> None:
    events = _device_trace("xpu_runtime", "urEnqueueKernelLaunch")
    events.append(_event("collective_comm", "allreduce", 140, 20, 0, 2, stream=2, device=0))
    trace = load_trace(_write(tmp_path, events))
    temporal = temporal_breakdown(trace)

    assert temporal is not None
    assert temporal.non_compute_us == pytest.approx(20.0)  # not compute, whatever its name
    types = kernel_type_breakdown(trace).set_index("kernel_type")["sum_us"]
    assert types["COMMUNICATION"] == pytest.approx(20.0)
    assert average_breakdown_pct(trace)["communication"] > 0
