"""Smoke tests for ``tests/peers.py``: open real traces in HTA and the TB plugin.

Two sources of traces:

* the GPU reference traces in ``tests/data/hta/`` (with HTA's expected numbers in
  ``HTA_EXPECTED.json``), found by conftest's ``reference_traces`` fixture. They are
  copied into ``tmp_path`` under the names the tools need;
* a small CPU-only ``torch.profiler`` trace generated in ``tmp_path`` by
  ``tensorboard_trace_handler``, from a tiny model fed by a ``DataLoader``.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests import peers

TWO_RANK_FILES = {
    # worker name for the TB plugin -> reference file (holds "rank": N with a space)
    "rank0": "two_ranks_rank-0.json.gz",
    "rank1": "two_ranks_rank-1.json.gz",
}
TWO_RANK_EXPECTED_KEY = "two_ranks_rank-0.json.gz + two_ranks_rank-1.json.gz (one directory)"
# Any fixed number works as the span part of "<worker>.<span>.pt.trace.json.gz".
# This one is the traces' own start time in ms.
SPAN = "1682725898236"

# Name the plugin needs before a user_annotation/cpu_op counts as DataLoader time.
DATALOADER_NEXT = "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__"


@pytest.fixture
def hta_reference(reference_traces: Path) -> Path:
    """The folder of GPU reference traces (conftest's fixture skips when it is absent)."""
    return reference_traces / "hta"


@pytest.fixture
def hta_expected(hta_reference: Path) -> dict[str, Any]:
    """HTA_EXPECTED.json: the HTA results recorded for the reference traces."""
    return json.loads((hta_reference / "HTA_EXPECTED.json").read_text())


def _assert_pct_sums_to_100(breakdown_pct: dict[str, float]) -> None:
    # Each category is rounded to 2 decimals, so allow 0.005 of error per category.
    tolerance = 0.005 * len(breakdown_pct) + 1e-9
    assert math.isclose(sum(breakdown_pct.values()), 100.0, abs_tol=tolerance)


@pytest.fixture
def two_rank_run(tmp_path: Path, hta_reference: Path) -> Path:
    """Put the two-rank reference traces in one directory that both tools can open.

    Files are named ``<worker>.<span>.pt.trace.json.gz`` for the TB plugin.
    HTA loads any ``*.gz`` in the directory and reads each file's rank from its
    ``"rank": N`` entry.
    """
    run = tmp_path / "logdir" / "two_ranks"
    run.mkdir(parents=True)
    for worker, name in TWO_RANK_FILES.items():
        shutil.copyfile(hta_reference / name, run / f"{worker}.{SPAN}.pt.trace.json.gz")
    return run


@pytest.fixture
def cpu_run(tmp_path: Path) -> Path:
    """Profile a few CPU training steps with torch.profiler and return the run dir.

    Schedule wait=1, warmup=1, active=3 records ProfilerStep#2..#4 into one
    file, ``cpu0.<timestamp>.pt.trace.json.gz``. Each step starts with a
    ``DataLoader`` ``__next__``, which torch records as ``user_annotation``.
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    run = tmp_path / "logdir" / "cpu_run"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dataset = TensorDataset(torch.randn(128, 32), torch.randint(0, 4, (128,)))
    loader = DataLoader(dataset, batch_size=16)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU],
        schedule=torch.profiler.schedule(wait=1, warmup=1, active=3, repeat=1),
        # Fixed worker name: the default "<hostname>_<pid>" would make the expected names vary.
        on_trace_ready=torch.profiler.tensorboard_trace_handler(
            str(run), worker_name="cpu0", use_gzip=True
        ),
    ) as prof:
        for step, (x, y) in enumerate(loader):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            prof.step()
            if step == 4:  # this 5th prof.step() closed the active window and wrote the trace
                break
    traces = list(run.glob("cpu0.*.pt.trace.json.gz"))
    assert len(traces) == 1, traces
    return run


# --------------------------------------------------------------------------
# HTA
# --------------------------------------------------------------------------


def test_hta_ranks_two_rank_reference(two_rank_run: Path) -> None:
    assert peers.hta_ranks(two_rank_run) == [0, 1]


def test_hta_temporal_breakdown_two_rank_reference(
    two_rank_run: Path, hta_expected: dict[str, Any]
) -> None:
    df = peers.hta_temporal_breakdown(two_rank_run)
    expected = hta_expected[TWO_RANK_EXPECTED_KEY]["temporal_breakdown"]
    assert df.to_dict("records") == expected
    # e.g. rank 0: idle 53.56 %, compute 17.71 %, non-compute 28.74 % of 600058 us
    pct = df[["idle_time_pctg", "compute_time_pctg", "non_compute_time_pctg"]].sum(axis=1)
    assert all(math.isclose(total, 100.0, abs_tol=0.02) for total in pct)


def test_hta_temporal_breakdown_cpu_only_reference_raises(
    tmp_path: Path, hta_reference: Path
) -> None:
    # Known HTA 0.5.0 bug: no GPU kernels -> IndexError. The helper must not hide it.
    shutil.copyfile(hta_reference / "cpu_only.json.gz", tmp_path / "cpu_only.json.gz")
    analysis = peers.hta_load(tmp_path)
    assert peers.hta_ranks(analysis) == [34]
    with pytest.raises(IndexError):
        peers.hta_temporal_breakdown(analysis)


@pytest.mark.parametrize(
    "name",
    [
        "alexnet.json.gz",
        "amd_mi250.json.gz",
        "triton.json.gz",
        "nccl.json.gz",
        # Each of these two takes about 5 s in HTA plus about 3 s in the plugin.
        pytest.param("diff_control.json.gz", marks=pytest.mark.slow),
        pytest.param("diff_test.json.gz", marks=pytest.mark.slow),
    ],
)
def test_single_rank_references_open_in_both_tools(
    tmp_path: Path, hta_reference: Path, hta_expected: dict[str, Any], name: str
) -> None:
    expected = hta_expected[name]["temporal_breakdown"]
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(hta_reference / name, run / "worker.1.pt.trace.json.gz")

    analysis = peers.hta_load(run)  # parsed once for both questions
    assert peers.hta_ranks(analysis) == [row["rank"] for row in expected]
    assert peers.hta_temporal_breakdown(analysis).to_dict("records") == expected

    overview = peers.tb_plugin_overview(run, "worker")
    assert overview["device_type"] == "GPU"
    assert overview["avg_step_time_us"] > 0
    _assert_pct_sums_to_100(overview["breakdown_pct"])


# --------------------------------------------------------------------------
# TensorBoard plugin
# --------------------------------------------------------------------------


def test_tb_plugin_runs_two_rank_reference(two_rank_run: Path) -> None:
    logdir = two_rank_run.parent
    (logdir / "notes.txt").write_text("not a trace")  # ignored: does not match WORKER_PATTERN
    # "All" is the plugin's distributed view: both workers have the same nccl collectives.
    assert peers.tb_plugin_runs(logdir) == {"two_ranks": ["All", "rank0", "rank1"]}
    # logdir itself being the run gives the run its basename.
    assert peers.tb_plugin_runs(two_rank_run) == {"two_ranks": ["All", "rank0", "rank1"]}


@pytest.mark.parametrize(
    ("worker", "gpu", "avg_us", "pct"),
    [
        (
            "rank0",
            0,
            615120,
            {
                "Kernel": 44.49,
                "Memcpy": 0.03,
                "Memset": 0.0,
                "Communication": 0.02,
                "Runtime": 0.0,
                "DataLoader": 0.0,
                "CPU Exec": 19.1,
                "Other": 36.36,
            },
        ),
        (
            "rank1",
            1,
            619272,
            {
                "Kernel": 46.47,
                "Memcpy": 0.37,
                "Memset": 0.0,
                "Communication": 0.01,
                "Runtime": 0.0,
                "DataLoader": 0.0,
                "CPU Exec": 20.92,
                "Other": 32.23,
            },
        ),
    ],
)
def test_tb_plugin_overview_two_rank_reference(
    two_rank_run: Path, worker: str, gpu: int, avg_us: int, pct: dict[str, float]
) -> None:
    overview = peers.tb_plugin_overview(two_rank_run, worker)
    assert overview["worker"] == worker
    assert overview["span"] == "1"
    assert overview["device_type"] == "GPU"
    assert overview["steps"] == ["551", "552"]
    assert overview["avg_step_time_us"] == avg_us
    assert list(overview["breakdown_pct"]) == list(peers.TB_OVERVIEW_CATEGORIES)
    assert overview["breakdown_pct"] == pct
    _assert_pct_sums_to_100(overview["breakdown_pct"])
    # The per-category microseconds add up to the average step (each rounded to 1 us).
    assert abs(sum(overview["breakdown_us"].values()) - avg_us) <= len(pct)
    assert list(overview["gpu_utilization"]) == [gpu]
    assert overview["gpu_utilization"][gpu] == pytest.approx(pct["Kernel"], abs=0.02)


def test_tb_plugin_overview_needs_worker_when_several(two_rank_run: Path) -> None:
    with pytest.raises(ValueError, match="pick a worker"):
        peers.tb_plugin_overview(two_rank_run)


# --------------------------------------------------------------------------
# A plain CPU torch.profiler trace
# --------------------------------------------------------------------------


def test_cpu_trace_opens_in_tb_plugin(cpu_run: Path) -> None:
    assert peers.tb_plugin_runs(cpu_run.parent) == {"cpu_run": ["cpu0"]}

    overview = peers.tb_plugin_overview(cpu_run)
    assert overview["worker"] == "cpu0"
    assert overview["device_type"] == "CPU"
    assert overview["steps"] == ["2", "3", "4"]
    # The CPU-only page has no GPU or Communication categories.
    assert list(overview["breakdown_pct"]) == ["DataLoader", "CPU Exec", "Other"]
    _assert_pct_sums_to_100(overview["breakdown_pct"])
    assert overview["breakdown_pct"]["CPU Exec"] > 0
    # torch records DataLoader.__next__ as user_annotation, and plugin 0.4.3
    # drops those, so DataLoader stays 0 (see the rule test below).
    assert overview["breakdown_pct"]["DataLoader"] == 0.0
    assert overview["gpu_utilization"] == {}


def test_cpu_trace_opens_in_hta(cpu_run: Path) -> None:
    # No distributedInfo in a non-distributed trace: HTA warns and uses rank 0.
    analysis = peers.hta_load(cpu_run)
    assert peers.hta_ranks(analysis) == [0]
    with pytest.raises(IndexError):  # HTA 0.5.0 cannot break down a trace with no GPU kernels
        peers.hta_temporal_breakdown(analysis)


@pytest.mark.parametrize(
    ("cat", "name", "counted"),
    [
        ("user_annotation", DATALOADER_NEXT, False),  # what torch writes: dropped by the plugin
        ("cpu_op", DATALOADER_NEXT, True),
        ("Operator", DATALOADER_NEXT, True),  # categories are compared lower-cased
        ("python_function", DATALOADER_NEXT, False),
        # The DataLoader name must end with .__next__:
        ("cpu_op", "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__iter__", False),
        ("cpu_op", "DataLoader.__next__", False),  # must start with enumerate(DataLoader)#
        ("cpu_op", "enumerate(DataPipe)#anything", True),  # DataPipe: prefix alone is enough
    ],
)
def test_tb_plugin_dataloader_rule(cpu_run: Path, cat: str, name: str, counted: bool) -> None:
    (trace,) = cpu_run.glob("*.pt.trace.json.gz")
    data = json.loads(gzip.decompress(trace.read_bytes()))
    rewritten = 0
    for event in data["traceEvents"]:
        if event.get("ph") == "X" and event.get("name") == DATALOADER_NEXT:
            event["cat"], event["name"] = cat, name
            rewritten += 1
    assert rewritten >= 3  # one per recorded step
    trace.write_bytes(gzip.compress(json.dumps(data).encode()))

    dataloader_pct = peers.tb_plugin_overview(cpu_run)["breakdown_pct"]["DataLoader"]
    assert (dataloader_pct > 0) is counted, dataloader_pct
