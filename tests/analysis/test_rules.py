"""Every recommendation fires on the facts that call for it, and stays quiet otherwise."""

from __future__ import annotations

from dataclasses import replace

import pytest

from profiler.analysis import rules
from profiler.analysis.rules import RULES, TraceFacts, recommend

QUIET = TraceFacts(
    device="cuda",
    step_us=10_000.0,
    breakdown_pct={"kernel": 90.0, "memcpy": 1.0, "dataloader": 1.0, "communication": 2.0},
    gpu_utilization_pct=92.0,
    tensor_core_pct=40.0,
    compute_major=8,
    tc_eligible_kernel_pct=60.0,
    short_kernel_share=0.1,
    kernels_per_step=200.0,
    host_wait_pct=2.0,
    sync_pct=0.5,
    sync_calls_per_step=1.0,
    sync_idle_pct=0.2,
    exposed_comm_pct=1.0,
    gpu_idle_us_per_step=800.0,
    pageable_copy_share=0.0,
    peak_memory_bytes=10 * 1024**3,
    memory_capacity_bytes=80 * 1024**3,
    optimizer_pct=5.0,
    mean_op_self_us=150.0,
)

# (rule id, change that makes it fire, change just short of the threshold)
CASES = [
    (
        "dataloader_bound",
        {"breakdown_pct": {"kernel": 60.0, "dataloader": 35.0}},
        {"breakdown_pct": {"kernel": 90.0, "dataloader": rules.DATALOADER_PCT}},
    ),
    (
        "low_gpu_utilization",
        {"gpu_utilization_pct": 20.0},
        {"gpu_utilization_pct": rules.LOW_GPU_UTIL_PCT},
    ),
    (
        "launch_bound",
        {"short_kernel_share": 0.8, "host_wait_pct": 45.0},
        {"short_kernel_share": 0.8, "host_wait_pct": 29.0},
    ),
    (
        "sync_heavy",
        {"sync_idle_pct": 12.0, "sync_calls_per_step": 30.0},
        {"sync_idle_pct": rules.SYNC_PCT, "sync_pct": 90.0},  # blocked while the device works
    ),
    (
        "memcpy_heavy",
        {"breakdown_pct": {"kernel": 70.0, "memcpy": 25.0}},
        {"breakdown_pct": {"kernel": 90.0, "memcpy": rules.MEMCPY_PCT}},
    ),
    ("amp_eligible", {"tensor_core_pct": 0.0}, {"tensor_core_pct": 0.0, "compute_major": 6}),
    (
        "comm_heavy",
        {"breakdown_pct": {"kernel": 60.0, "communication": 35.0}},
        {"breakdown_pct": {"kernel": 90.0, "communication": rules.COMM_PCT}},
    ),
    (
        "memory_near_capacity",
        {"peak_memory_bytes": 79 * 1024**3},
        {"peak_memory_bytes": int(0.9 * 80 * 1024**3)},
    ),
    ("optimizer_heavy", {"optimizer_pct": 40.0}, {"optimizer_pct": rules.OPTIMIZER_PCT}),
    (
        "small_batch",
        {"mean_op_self_us": 6.0, "gpu_utilization_pct": 30.0},
        {"mean_op_self_us": 6.0, "gpu_utilization_pct": 70.0},
    ),
    (  # a CPU-only trace: no device for short ops to starve
        "small_batch",
        {"mean_op_self_us": 6.0, "gpu_utilization_pct": 30.0},
        {"mean_op_self_us": 6.0, "gpu_utilization_pct": None, "device": "cpu"},
    ),
]


def ids(facts: TraceFacts) -> set[str]:
    return {r.id for r in recommend(facts)}


def test_every_rule_is_covered_and_ids_are_unique() -> None:
    registered = [rule.id for rule in RULES]
    assert len(registered) == len(set(registered))
    assert {case[0] for case in CASES} == set(registered)


def test_a_healthy_trace_gets_no_recommendation() -> None:
    assert recommend(QUIET) == []


@pytest.mark.parametrize(("rule_id", "fire", "quiet"), CASES, ids=[c[0] for c in CASES])
def test_fires_and_stays_quiet(rule_id: str, fire: dict, quiet: dict) -> None:
    fired = recommend(replace(QUIET, **fire))
    assert rule_id in {r.id for r in fired}
    rec = next(r for r in fired if r.id == rule_id)
    assert rec.severity in ("high", "medium", "low")
    assert rec.message and rec.evidence and rec.page.startswith("/")
    assert rule_id not in ids(replace(QUIET, **quiet))


def test_missing_figures_never_fire() -> None:
    unknown = TraceFacts(device="cpu", step_us=1000.0, breakdown_pct={"cpu_exec": 100.0})
    assert recommend(unknown) == []


def test_dataloader_saving_is_the_wait_per_step() -> None:
    facts = replace(QUIET, breakdown_pct={"kernel": 50.0, "dataloader": 40.0})
    (rec,) = [r for r in recommend(facts) if r.id == "dataloader_bound"]
    assert rec.saving_us_per_step == 4000.0
    assert rec.severity == "high"
    assert rec.as_dict()["evidence"] == {"dataloader_pct": 40.0}


def test_most_severe_first() -> None:
    facts = replace(QUIET, gpu_utilization_pct=20.0, mean_op_self_us=5.0, optimizer_pct=26.0)
    severities = [r.severity for r in recommend(facts)]
    assert severities == sorted(severities, key={"high": 0, "medium": 1, "low": 2}.get)


# Saving per step: how each rule's estimate is made from the facts (on real traces:
# test_rules_real.py).
SAVINGS = [
    ("dataloader_bound", {"breakdown_pct": {"dataloader": 40.0}}, 4000.0),
    ("low_gpu_utilization", {"gpu_utilization_pct": 20.0, "gpu_idle_us_per_step": 8000.0}, 8000.0),
    ("launch_bound", {"short_kernel_share": 0.8, "host_wait_pct": 45.0}, 4500.0),
    ("sync_heavy", {"sync_idle_pct": 12.0}, 1200.0),
    ("memcpy_heavy", {"breakdown_pct": {"memcpy": 25.0}}, 2500.0),
    ("comm_heavy", {"breakdown_pct": {"communication": 35.0}, "exposed_comm_pct": 20.0}, 2000.0),
    ("amp_eligible", {"tensor_core_pct": 0.0}, None),
    ("memory_near_capacity", {"peak_memory_bytes": 79 * 1024**3}, None),
    ("optimizer_heavy", {"optimizer_pct": 40.0}, None),
    ("small_batch", {"mean_op_self_us": 6.0, "gpu_utilization_pct": 30.0}, None),
]


def test_every_rule_states_its_saving() -> None:
    assert {case[0] for case in SAVINGS} == {rule.id for rule in RULES}
    for rule in RULES:
        assert "Saving:" in (type(rule).__doc__ or ""), rule.id


@pytest.mark.parametrize(("rule_id", "fire", "saving"), SAVINGS, ids=[c[0] for c in SAVINGS])
def test_saving_per_step(rule_id: str, fire: dict, saving: float | None) -> None:
    (rec,) = [r for r in recommend(replace(QUIET, **fire)) if r.id == rule_id]
    assert rec.saving_us_per_step == saving
    assert rec.as_dict()["saving_us_per_step"] == saving
