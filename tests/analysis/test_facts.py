"""The figures rules read, computed from real traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.analysis.facts import trace_facts
from profiler.analysis.gpu import gpu_metrics
from profiler.analysis.kernels import kernel_type_breakdown
from profiler.analysis.memory import memory_peak
from profiler.analysis.steps import average_breakdown_pct, step_table
from profiler.analysis.table import load_trace


def facts_of(path: Path):
    trace = load_trace(path)
    return trace, trace_facts(
        trace,
        steps=step_table(trace),
        breakdown_pct=average_breakdown_pct(trace),
        gpu=gpu_metrics(trace),
        peak=memory_peak(trace),
    )


@pytest.mark.parametrize(
    "name", ["alexnet.json.gz", "amd_mi250.json.gz", "nccl.json.gz", "two_ranks_rank-0.json.gz"]
)
def test_shares_are_percentages(reference_traces: Path, name: str) -> None:
    _, facts = facts_of(reference_traces / "hta" / name)
    for value in (
        facts.host_wait_pct,
        facts.sync_pct,
        facts.optimizer_pct,
        facts.tc_eligible_kernel_pct,
        facts.gpu_utilization_pct,
    ):
        assert value is None or 0.0 <= value <= 100.0
    assert 0.0 <= facts.short_kernel_share <= 1.0


def test_nccl_communication_counts_for_advice(reference_traces: Path) -> None:
    # The plugin's rule finds 0.02% communication on this NCCL job; HTA says 55% of GPU time is
    # communication kernels. The advice uses the kernels' share of step time.
    trace, facts = facts_of(reference_traces / "hta" / "two_ranks_rank-0.json.gz")
    assert average_breakdown_pct(trace)["communication"] < 0.1
    assert facts.pct("communication") > 10
    types = kernel_type_breakdown(trace).set_index("kernel_type")["percentage"]
    assert types["COMMUNICATION"] > 40


def test_rocm_never_gets_tensor_core_advice(reference_traces: Path) -> None:
    _, facts = facts_of(reference_traces / "hta" / "amd_mi250.json.gz")
    assert facts.compute_major is None  # NVIDIA's capability numbers do not apply


def test_tensor_core_eligibility_on_a100(reference_traces: Path) -> None:
    trace, facts = facts_of(reference_traces / "hta" / "alexnet.json.gz")
    assert facts.compute_major == 8  # A100
    # AlexNet's kernels come from convolutions and linear layers: mostly eligible.
    assert facts.tc_eligible_kernel_pct is not None and facts.tc_eligible_kernel_pct > 50
    _, two_ranks = facts_of(reference_traces / "hta" / "two_ranks_rank-0.json.gz")
    assert two_ranks.compute_major is None  # this trace carries no deviceProperties
    assert two_ranks.tc_eligible_kernel_pct is not None and two_ranks.tc_eligible_kernel_pct > 0


def test_alexnet_syncs_are_counted(reference_traces: Path) -> None:
    trace, facts = facts_of(reference_traces / "hta" / "alexnet.json.gz")
    syncs = trace.events[trace.events["name"].astype(str).str.endswith("Synchronize")]
    assert facts.sync_calls_per_step == len(syncs) > 0


def test_cpu_trace_has_no_gpu_facts(train, tmp_path: Path) -> None:
    prof = train(steps=5)
    _, facts = facts_of(prof.trace_files[0])
    assert facts.gpu_utilization_pct is None and facts.host_wait_pct is None
    assert facts.mean_op_self_us is not None and facts.mean_op_self_us > 0
    assert facts.optimizer_pct is not None and facts.optimizer_pct > 0  # Optimizer.step#SGD.step
