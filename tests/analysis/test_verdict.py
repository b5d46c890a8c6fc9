"""The verdict: the finding with the largest saving per step, its share of the step, its action."""

from __future__ import annotations

from typing import Any

from profiler.analysis.rules import (
    RULES,
    AmpEligible,
    CommHeavy,
    DataloaderBound,
    LowGpuUtilization,
    MemoryNearCapacity,
    TraceFacts,
)
from profiler.analysis.summary import STEP_LOG_METHOD, summary_verdict
from profiler.analysis.verdict import NOTHING_STANDS_OUT, _method, leading, verdict

STEP_US = 40_000.0


def finding(rule: Any, **figures: Any) -> dict[str, Any]:
    """What ``rule`` says, in the summary's form, of a step of :data:`STEP_US` with ``figures``."""
    breakdown = figures.pop("breakdown_pct", {})
    rec = rule.check(TraceFacts("cuda", STEP_US, breakdown, **figures))
    assert rec is not None, "the figures must make the rule fire"
    return rec.as_dict()


def data_wait(pct: float) -> dict[str, Any]:
    return finding(DataloaderBound(), breakdown_pct={"dataloader": pct})


def comm(pct: float) -> dict[str, Any]:
    return finding(CommHeavy(), breakdown_pct={"communication": pct}, exposed_comm_pct=pct)


def no_estimate() -> dict[str, Any]:
    return finding(AmpEligible(), compute_major=8, tensor_core_pct=0.0, tc_eligible_kernel_pct=60.0)


def test_the_largest_saving_wins_over_a_worse_severity() -> None:
    small_high, large_medium = data_wait(35.0), comm(12.0)  # 14 ms high vs 4.8 ms medium
    assert (small_high["severity"], large_medium["severity"]) == ("high", "medium")
    bigger = comm(40.0)  # 16 ms, high
    found = verdict([large_medium, small_high, bigger], STEP_US)
    assert found.rule == "comm_heavy"
    assert found.saving_us_per_step == bigger["saving_us_per_step"] == 16_000.0
    assert found.saving_pct == 40.0
    assert found.page == "/distributed"
    assert "16.00 ms per step (40.0% of the 40.00 ms step)" in found.text


def test_equal_savings_go_by_severity_then_order() -> None:
    medium = {**data_wait(20.0), "severity": "medium"}
    high = {**comm(20.0), "severity": "high"}
    assert medium["saving_us_per_step"] == high["saving_us_per_step"]
    assert leading([medium, high]) is high
    assert leading([data_wait(20.0), comm(20.0)])["id"] == "dataloader_bound"  # the first


def test_a_finding_without_an_estimate_comes_after_any_estimate() -> None:
    full = finding(MemoryNearCapacity(), peak_memory_bytes=99, memory_capacity_bytes=100)
    assert full["severity"] == "high" and full["saving_us_per_step"] is None
    assert verdict([full, data_wait(6.0)], STEP_US).rule == "dataloader_bound"

    alone = verdict([no_estimate()], STEP_US)
    assert alone.rule == "amp_eligible"
    assert alone.saving_us_per_step is None and alone.saving_pct is None
    assert "no honest estimate" in alone.text
    assert alone.action and alone.action.startswith("Enable torch.autocast")
    assert alone.method and "any number would be invented" in alone.method
    # Among findings with no estimate, the worse severity.
    assert verdict([no_estimate(), full], STEP_US).rule == "memory_near_capacity"


def test_the_verdict_names_the_bottleneck_its_method_and_its_action() -> None:
    found = verdict([data_wait(54.0)], STEP_US)
    assert found.bottleneck == DataloaderBound.description.rstrip(".")
    assert found.action == (
        "Use DataLoader(num_workers=N, pin_memory=True, persistent_workers=True) or move "
        "preprocessing off the loop"
    )
    assert found.method and found.method.startswith("the data wait per step")
    assert found.text.startswith("The step waits on the input pipeline. Fixing it saves up to ")
    assert found.to_dict()["saving_us_per_step"] == 0.54 * STEP_US


def test_every_rules_method_is_plain_words() -> None:
    """Each rule states how it estimates its saving, without docstring markup: the Overview
    shows this line as it is (it once read ``(:attr:`TraceFacts.gpu_idle_us_per_step`: ...``)."""
    for rule in RULES:
        method = _method(rule)
        assert method, f"{rule.id} states no saving method"
        assert "`" not in method and ":attr:" not in method, (rule.id, method)
    assert "(gpu_idle_us_per_step: " in str(_method(LowGpuUtilization()))


def test_no_finding_says_nothing_stands_out() -> None:
    found = verdict([], STEP_US)
    assert found.rule is None and found.saving_us_per_step is None and found.page is None
    assert found.text.startswith(f"{NOTHING_STANDS_OUT}: ")


def test_no_step_gives_the_saving_without_a_share() -> None:
    found = verdict([data_wait(30.0)], None)
    assert found.saving_us_per_step == 12_000.0 and found.saving_pct is None
    assert "12.00 ms per step." in found.text


def test_a_run_pools_each_rule_once_and_takes_the_share_of_its_worst_trace() -> None:
    def trace(path: str, step_us: float, recs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"path": path, "rank": 0, "steps": {"mean_us": step_us}, "recommendations": recs}

    # The data wait costs 12 ms a step in window a (of 40 ms) and 8 ms in window b (of 10 ms):
    # the worst finding is a's, and its share is of a's step, not b's.
    a = trace("a.json.gz", STEP_US, [data_wait(30.0)])
    b = trace("b.json.gz", 10_000.0, [{**data_wait(80.0), "saving_us_per_step": 8_000.0}])
    found = summary_verdict({"traces": [b, a]})
    assert found.saving_us_per_step == 12_000.0
    assert found.step_mean_us == STEP_US and found.saving_pct == 30.0
    assert summary_verdict({"traces": [trace("c.json.gz", STEP_US, [])]}).rule is None


def test_the_step_logs_speak_where_no_trace_has_a_finding() -> None:
    logged = {**data_wait(50.0), "saving_us_per_step": 15_000.0}
    logs = {"mean_us": 30_000.0, "recommendations": [logged]}
    quiet = {"path": "a.json.gz", "rank": 0, "steps": {"mean_us": STEP_US}, "recommendations": []}
    found = summary_verdict({"traces": [quiet], "step_logs": logs})
    assert found.rule == "dataloader_bound" and found.saving_pct == 50.0
    assert found.method == STEP_LOG_METHOD
    # A trace's finding comes first: the deep window's figures are the ones shown beside it.
    traced = {**quiet, "recommendations": [comm(11.0)]}
    assert summary_verdict({"traces": [traced], "step_logs": logs}).rule == "comm_heavy"
