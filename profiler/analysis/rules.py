"""Bottleneck rules: one class per recommendation, one registry.

Each rule reads :class:`TraceFacts` (figures the analyses computed for one trace) and returns a
:class:`Recommendation` or None. A new recommendation is one new class added to ``RULES``.
Thresholds are named constants; each says where its number comes from.

Each rule also estimates what fixing its cause would save per step (``saving_us_per_step``): the
time per step the cause visibly costs in the trace, so an upper bound on what the advice can win.
Its docstring says how; rules where the trace shows the cost but not what the fix would leave
of it estimate None and say why. tests/analysis/test_rules_real.py checks each estimate on a
real trace against a figure computed there independently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Severity = Literal["high", "medium", "low"]
#: Every severity, worst first: the one order that rules, the summary's merged findings, the
#: terminal report and the dashboard sort by.
SEVERITIES: tuple[Severity, ...] = ("high", "medium", "low")

# TensorBoard's PyTorch profiler plugin (torch_tb_profiler/profiler/data.py, RunProfileData.analyze
# and _analyze_distributed_metrics / _analyze_gpu_metrics) fires on these:
DATALOADER_PCT = 5.0  # "high time cost on input data loading": DataLoader > 5% of step time
LOW_GPU_UTIL_PCT = 50.0  # "GPU ... has low utilization": utilization < 50%
COMM_PCT = 10.0  # "high time cost on communication": communication > 10% of step time
MEMORY_CAPACITY_SHARE = 0.9  # "memory usage is at the limit": peak > 90% of totalGlobalMem
TENSOR_CORE_MIN_MAJOR = 7  # tensor cores exist from compute capability 7.0 (Volta)
# Ours, with the reasoning beside each:
HIGH_SEVERITY_PCT = 30.0  # a third of the step lost to one cause is the first thing to fix
SHORT_KERNEL_US = 10.0  # a CUDA launch costs ~5-10 us of host time, so shorter kernels starve
LAUNCH_BOUND_SHORT_SHARE = 0.5  # ...and when most kernels are that short, the host sets the pace
LAUNCH_BOUND_HOST_WAIT_PCT = 30.0  # device idle waiting for the host a third of the span
SYNC_PCT = 5.0  # device idle after syncs; 5% of the step, as the DataLoader bar above
MEMCPY_PCT = 10.0  # host<->device copies worth a tenth of the step
PAGEABLE_SHARE = 0.5  # most copied bytes from pageable memory: pin_memory=True would help
OPTIMIZER_PCT = 25.0  # a quarter of the step in optimizer.step: fused/foreach optimizers help
SMALL_BATCH_OP_US = 20.0  # ops averaging under 20 us of self time are dominated by overhead


@dataclass(frozen=True)
class TraceFacts:
    """Figures about one trace that rules read. Percentages are of the mean step time.

    None means "not known for this trace" (e.g. GPU figures on a CPU-only trace); rules that
    need a missing figure do not fire. Among them:

    Attributes:
        host_wait_pct: device idle waiting for the host (the next work not yet being launched),
            as a share of the device work's span in HTA's window (not of the step).
        sync_pct: the host's time inside blocking sync calls.
        sync_idle_pct: device idle time following host syncs, until the next device work.
        exposed_comm_pct: communication with no kernel running beside it (what overlap hides).
        gpu_idle_us_per_step: time with no kernel running over the steps' span (where
            ``gpu_utilization_pct`` is measured), divided by the number of steps.
    """

    device: str
    step_us: float
    breakdown_pct: dict[str, float]
    gpu_utilization_pct: float | None = None
    gpu_idle_us_per_step: float | None = None
    tensor_core_pct: float | None = None
    compute_major: int | None = None
    tc_eligible_kernel_pct: float | None = None
    short_kernel_share: float | None = None
    kernels_per_step: float | None = None
    host_wait_pct: float | None = None
    sync_pct: float | None = None
    sync_calls_per_step: float | None = None
    sync_idle_pct: float | None = None
    exposed_comm_pct: float | None = None
    pageable_copy_share: float | None = None
    peak_memory_bytes: int | None = None
    memory_capacity_bytes: int | None = None
    optimizer_pct: float | None = None
    mean_op_self_us: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def pct(self, category: str) -> float:
        """The step-breakdown share of ``category`` (0 when absent)."""
        return float(self.breakdown_pct.get(category, 0.0))

    def per_step_us(self, pct: float) -> float:
        """A share of the step as microseconds per step."""
        return round(self.step_us * pct / 100.0, 1)


@dataclass(frozen=True)
class Recommendation:
    """A finding a person can act on, with the figures that support it."""

    id: str
    severity: Severity
    message: str
    evidence: dict[str, Any]
    saving_us_per_step: float | None = None
    page: str = "/"

    def as_dict(self) -> dict[str, Any]:
        """The ``trainprof.summary/1`` form."""
        return {
            "id": self.id,
            "severity": self.severity,
            "message": self.message,
            "evidence": self.evidence,
            "saving_us_per_step": self.saving_us_per_step,
            "page": self.page,
        }


def _severity(pct: float) -> Severity:
    return "high" if pct >= HIGH_SEVERITY_PCT else "medium"


class Rule(ABC):
    """One bottleneck pattern."""

    id: ClassVar[str]
    description: ClassVar[str]
    page: ClassVar[str] = "/"

    @abstractmethod
    def check(self, facts: TraceFacts) -> Recommendation | None:
        """The recommendation, if the pattern is in ``facts``."""

    def make(
        self, severity: Severity, message: str, evidence: dict[str, Any], saving: float | None
    ) -> Recommendation:
        return Recommendation(self.id, severity, message, evidence, saving, self.page)


class DataloaderBound(Rule):
    """Fires when the DataLoader share of the step passes :data:`DATALOADER_PCT`.

    Saving: the data wait per step, the step breakdown's ``dataloader`` time (only what no
    kernel, copy or runtime call overlaps) averaged over the steps.
    """

    id = "dataloader_bound"
    description = "The step waits on the input pipeline."
    page = "/timeline"

    def check(self, facts: TraceFacts) -> Recommendation | None:
        pct = facts.pct("dataloader")
        if pct <= DATALOADER_PCT:
            return None
        saving = facts.per_step_us(pct)
        message = (
            f"{pct:.1f}% of each step waits for the next batch: use DataLoader(num_workers=N, "
            "pin_memory=True, persistent_workers=True) or move preprocessing off the loop"
        )
        return self.make(_severity(pct), message, {"dataloader_pct": round(pct, 2)}, saving)


class LowGpuUtilization(Rule):
    """Fires when the plugin's GPU utilization is under :data:`LOW_GPU_UTIL_PCT`.

    Saving: the time per step with no kernel running (:attr:`TraceFacts.gpu_idle_us_per_step`:
    the utilization's complement over the steps' span, divided by the number of steps).
    """

    id = "low_gpu_utilization"
    description = "The GPU is idle for much of each step."
    page = "/kernels"

    def check(self, facts: TraceFacts) -> Recommendation | None:
        util = facts.gpu_utilization_pct
        if util is None or util >= LOW_GPU_UTIL_PCT:
            return None
        message = (
            f"The GPU is busy only {util:.1f}% of the step: look at what the host does between "
            "kernels (data loading, syncs, launches) or raise the batch size"
        )
        idle = facts.gpu_idle_us_per_step
        return self.make("high", message, {"gpu_utilization_pct": round(util, 2)}, idle)


class LaunchBound(Rule):
    """Fires when most kernels are short and the compute stream waits on the host.

    Saving: the host-wait idle per step: the time no device work runs and the next work's launch
    call had not yet begun (HTA's host-wait test, over the whole device:
    :attr:`TraceFacts.host_wait_pct` of the device work's span), applied to the mean step.
    """

    id = "launch_bound"
    description = "Many tiny kernels: the GPU waits for the host to launch them."
    page = "/kernels"

    def check(self, facts: TraceFacts) -> Recommendation | None:
        short, host_wait = facts.short_kernel_share, facts.host_wait_pct
        if short is None or host_wait is None:
            return None
        if short < LAUNCH_BOUND_SHORT_SHARE or host_wait < LAUNCH_BOUND_HOST_WAIT_PCT:
            return None
        message = (
            f"{short:.0%} of kernels run under {SHORT_KERNEL_US:.0f} us and the GPU waits on the "
            f"host {host_wait:.1f}% of the time: fuse ops (torch.compile), use CUDA graphs, "
            "or give each kernel more work"
        )
        evidence = {
            "short_kernel_share": round(short, 3),
            "host_wait_pct": round(host_wait, 2),
            "kernels_per_step": facts.kernels_per_step,
        }
        return self.make(_severity(host_wait), message, evidence, facts.per_step_us(host_wait))


class SyncHeavy(Rule):
    """Fires when the device idles after host syncs for more than :data:`SYNC_PCT` of the step.

    A sync costs what the device idles while the host drains it and then enqueues new work;
    time the host spends blocked while the device computes costs nothing (an inference loop
    synchronises for 94% of the step on a 94%-busy MTIA: no finding). Saving: that idle time
    per step (:attr:`TraceFacts.sync_idle_pct` of the mean step).
    """

    id = "sync_heavy"
    description = "Explicit synchronisations (.item(), cudaDeviceSynchronize) stall the host."
    page = "/timeline"

    def check(self, facts: TraceFacts) -> Recommendation | None:
        pct = facts.sync_idle_pct
        if pct is None or pct <= SYNC_PCT:
            return None
        message = (
            f"The device idles {pct:.1f}% of each step after synchronisation calls "
            f"({facts.sync_calls_per_step or 0:.0f} per step): avoid .item()/.cpu()/print of "
            "tensors in the loop, and log metrics every N steps"
        )
        evidence = {
            "sync_idle_pct": round(pct, 2),
            "sync_pct": None if facts.sync_pct is None else round(facts.sync_pct, 2),
            "sync_calls_per_step": facts.sync_calls_per_step,
        }
        return self.make(_severity(pct), message, evidence, facts.per_step_us(pct))


class MemcpyHeavy(Rule):
    """Fires when copies take more than :data:`MEMCPY_PCT` of the step (or mostly pageable
    copies take any real share).

    Saving: the memcpy time not overlapped by compute per step, the step breakdown's
    ``memcpy`` time (kernels take precedence there) averaged over the steps: what pinned,
    asynchronous copies overlapping compute could hide.
    """

    id = "memcpy_heavy"
    description = "Host-device copies take a large share of the step."
    page = "/timeline"

    def check(self, facts: TraceFacts) -> Recommendation | None:
        pct = facts.pct("memcpy")
        pageable = facts.pageable_copy_share
        if pct <= MEMCPY_PCT and not (
            pageable is not None and pct > 1 and pageable > PAGEABLE_SHARE
        ):
            return None
        hint = "pin host memory (pin_memory=True) and copy with non_blocking=True"
        if pageable is not None and pageable > PAGEABLE_SHARE:
            hint = f"{pageable:.0%} of copied bytes come from pageable memory: " + hint
        message = f"{pct:.1f}% of each step is host<->device copies: {hint}"
        evidence = {"memcpy_pct": round(pct, 2), "pageable_copy_share": pageable}
        return self.make(_severity(pct), message, evidence, facts.per_step_us(pct))


class AmpEligible(Rule):
    """Fires on tensor-core hardware that runs eligible work without tensor cores.

    Saving: None. The trace shows the eligible kernels' time, not what they would take in
    bf16/fp16/TF32: that speed-up depends on the shapes, the dtype and the card (from nothing to
    several times), so any number would be invented.
    """

    id = "amp_eligible"
    description = "Tensor-core-eligible work runs without tensor cores."
    page = "/kernels"

    def check(self, facts: TraceFacts) -> Recommendation | None:
        major, used, eligible = (
            facts.compute_major,
            facts.tensor_core_pct,
            facts.tc_eligible_kernel_pct,
        )
        if major is None or used is None or eligible is None:
            return None
        if major < TENSOR_CORE_MIN_MAJOR or used > 0 or eligible <= 0:
            return None
        message = (
            f"{eligible:.0f}% of kernel time comes from ops that tensor cores could run, yet none "
            "do: enable torch.autocast (bf16/fp16) or TF32 (torch.backends.cuda.matmul.allow_tf32)"
        )
        evidence = {"tc_eligible_kernel_pct": round(eligible, 2), "tensor_core_pct": used}
        return self.make("medium", message, evidence, None)


class CommHeavy(Rule):
    """Fires when communication passes :data:`COMM_PCT` of the step.

    Saving: the communication not overlapped by compute per step
    (:attr:`TraceFacts.exposed_comm_pct` of the mean step): the larger of the step breakdown's
    communication time (kernels take precedence there) and the time communication kernels run
    with no other kernel. Overlapping (bucketing, prefetch) can hide at most that.
    """

    id = "comm_heavy"
    description = "Collective communication takes a large share of the step."
    page = "/distributed"

    def check(self, facts: TraceFacts) -> Recommendation | None:
        pct = facts.pct("communication")
        if pct <= COMM_PCT:
            return None
        message = (
            f"{pct:.1f}% of each step is communication: overlap it with compute (DDP buckets, "
            "FSDP prefetch), compress gradients, or accumulate gradients over more steps"
        )
        exposed = facts.exposed_comm_pct
        evidence = {
            "communication_pct": round(pct, 2),
            "exposed_communication_pct": None if exposed is None else round(exposed, 2),
        }
        saving = None if exposed is None else facts.per_step_us(exposed)
        return self.make(_severity(pct), message, evidence, saving)


class MemoryNearCapacity(Rule):
    """Fires when peak device memory passes :data:`MEMORY_CAPACITY_SHARE` of the capacity.

    Saving: None. Memory near the limit costs no time in the trace (it risks an out-of-memory
    error and caps the batch); checkpointing even adds recompute time. What it buys is room.
    """

    id = "memory_near_capacity"
    description = "Peak device memory is close to the device's capacity."
    page = "/memory"

    def check(self, facts: TraceFacts) -> Recommendation | None:
        peak, capacity = facts.peak_memory_bytes, facts.memory_capacity_bytes
        if not peak or not capacity or peak <= MEMORY_CAPACITY_SHARE * capacity:
            return None
        share = peak / capacity
        message = (
            f"Peak memory is {share:.0%} of the device's {capacity / 1024**3:.1f} GiB: activation "
            "checkpointing or mixed precision would leave room (and allow larger batches)"
        )
        evidence = {"peak_memory_bytes": peak, "capacity_bytes": capacity}
        return self.make("high" if share > 0.97 else "medium", message, evidence, None)


class OptimizerHeavy(Rule):
    """Fires when ``optimizer.step()`` passes :data:`OPTIMIZER_PCT` of the step.

    Saving: None. The trace shows the time in ``optimizer.step``, not the part a fused or
    foreach implementation removes (per-parameter launches and Python, not the arithmetic);
    that part depends on the parameter count and the device, so claiming all of it would
    overstate the gain.
    """

    id = "optimizer_heavy"
    description = "optimizer.step() takes a large share of the step."
    page = "/operators"

    def check(self, facts: TraceFacts) -> Recommendation | None:
        pct = facts.optimizer_pct
        if pct is None or pct <= OPTIMIZER_PCT:
            return None
        message = (
            f"{pct:.1f}% of each step is optimizer.step(): use the fused or foreach "
            "implementation (e.g. torch.optim.AdamW(..., fused=True))"
        )
        return self.make(_severity(pct), message, {"optimizer_pct": round(pct, 2)}, None)


class SmallBatch(Rule):
    """Fires when CPU ops average under :data:`SMALL_BATCH_OP_US` of self time on a trace with
    device work (a GPU utilisation) and the device is not busy. A CPU-only trace has no device
    to starve: short ops there are the work itself (a tiny model, an optimizer's per-parameter
    loop), and a larger batch is no remedy the trace can argue for.

    Saving: None. A larger batch does more work per step, so the step gets longer, not shorter;
    the gain is per sample, which a trace without the batch size cannot measure.
    """

    id = "small_batch"
    description = "Each op does so little work that fixed per-op overhead dominates."
    page = "/operators"

    def check(self, facts: TraceFacts) -> Recommendation | None:
        mean_op = facts.mean_op_self_us
        util = facts.gpu_utilization_pct
        if mean_op is None or mean_op >= SMALL_BATCH_OP_US:
            return None
        if util is None or util >= LOW_GPU_UTIL_PCT:
            return None  # no device to starve, or a busy one
        message = (
            f"CPU ops average {mean_op:.1f} us of their own time: per-op overhead dominates; "
            "a larger batch (or fewer, larger ops) would use the hardware better"
        )
        evidence = {"mean_op_self_us": round(mean_op, 2), "gpu_utilization_pct": util}
        return self.make("low", message, evidence, None)


RULES: tuple[Rule, ...] = (
    DataloaderBound(),
    LowGpuUtilization(),
    LaunchBound(),
    SyncHeavy(),
    MemcpyHeavy(),
    AmpEligible(),
    CommHeavy(),
    MemoryNearCapacity(),
    OptimizerHeavy(),
    SmallBatch(),
)


def severity_rank(severity: object) -> int:
    """How bad a severity is: 0 for the worst of :data:`SEVERITIES`; past the last for an
    unknown value, so it sorts after every known one."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def recommend(facts: TraceFacts, rules: tuple[Rule, ...] = RULES) -> list[Recommendation]:
    """Every rule that fires on ``facts``, most severe first, then by estimated saving."""
    found = [rec for rule in rules if (rec := rule.check(facts)) is not None]
    return sorted(found, key=lambda r: (severity_rank(r.severity), -(r.saving_us_per_step or 0.0)))
