#!/usr/bin/env python3
"""Always-on overhead of trainprof: the same CPU training loop with and without profiling.

Run from the repository root::

    python bench/overhead.py --quick          # under a minute
    python bench/overhead.py                  # full run, 3-4 minutes
    python bench/overhead.py --json out.json  # also write every number as JSON

"Always-on" means ``profiler.profile(model, schedule=None, ...)``: the per-step metrics only, no
Kineto session. Two workloads (a small-op MLP and a small CNN, both on one CPU thread) run in one
process. Each repetition ("round") runs one block of steps per mode, in a shuffled order:

* ``baseline``     the bare loop;
* ``baseline_aa``  the bare loop again, compared with ``baseline`` (an A/A test: the noise floor);
* ``profiled``     the loop under ``profiler.profile(..., system_metrics=False)``;
* ``profiled_sys`` the loop under ``profiler.profile(..., system_metrics=True)`` (10 Hz sampler).

Every profiled block is a fresh session with its own run name in a temporary directory. A block's
figure is its mean step time (so costs that hit one step in many, such as the sampler thread or
the step log's periodic write, are counted); a mode's figure is the median of its blocks over the
rounds, and overhead is ``median(mode) / median(baseline) - 1``. The 95% interval comes from
resampling the rounds (bootstrap). See bench/README.md.

A second design, step-interleaved, runs inside one always-on session and alternates pairs of
steps with trainprof's hooks, loader wrapper and ``prof.step()`` on and off, timing each section
of the step (next, forward, loss+backward, optimizer, zero_grad, prof.step). Neighbouring steps
see the same machine, so it resolves a few microseconds even where the block design cannot; it
cannot see the sampler thread, which runs under both arms. An A/A run of it gives its noise floor.

The breakdown that follows (skip it with ``--no-breakdown``) takes the profiled MLP loop apart:
timers around each of trainprof's functions in the real loop, isolated micro-benchmarks of the
costs that no trainprof function holds (hook dispatch in torch, the sampler thread), and a
cProfile run restricted to trainprof's own functions.

The exit status is 0 whatever the figures are: this is a report, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # measure this checkout, whatever else is installed
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from torch import nn  # noqa: E402

import profiler  # noqa: E402
from bench.common import Ratio, loadavg, machine, write_ratios  # noqa: E402

TARGET_PCT = 0.5  # the issue's target: always-on overhead <= 0.5% (it was 1% before)
TRIM_SHARE = 0.05  # of each tail, for the trimmed mean of per-pair differences
MODES = ("baseline", "baseline_aa", "profiled", "profiled_sys")
MODE_LABELS = {
    "baseline_aa": "A/A (noise)",
    "profiled": "system_metrics=False",
    "profiled_sys": "system_metrics=True",
}
perf_ns = time.perf_counter_ns

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Settings:
    """How much to measure: ``--quick`` or the full run."""

    rounds: int  # block design: rounds of one block per mode
    block_s: float  # target wall time of one block of measured steps
    warmup_steps: int  # steps at the start of every block that are not measured
    pair_s: float  # step-interleaved design: target wall time of the measured pairs, per arm
    breakdown_steps: int  # steps of the profiled loop timed in place / under cProfile
    micro_calls: int  # calls per repeat of an isolated micro-benchmark


QUICK = Settings(
    rounds=12, block_s=0.1, warmup_steps=3, pair_s=1.5, breakdown_steps=300, micro_calls=2_000
)
FULL = Settings(
    rounds=60, block_s=0.15, warmup_steps=5, pair_s=20.0, breakdown_steps=1_500, micro_calls=10_000
)


# Workloads ---------------------------------------------------------------------------------------


@dataclass
class Workload:
    """A model, its optimizer and a pool of pre-generated batches in memory."""

    name: str
    description: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    pool: list[Batch]
    steps: int = 0  # measured steps per block, set by calibration
    step_us: float = 0.0  # bare step time found by calibration

    def data(self, count: int) -> list[Batch]:
        """``count`` batches cycling through the pool (references, no copies)."""
        return [self.pool[i % len(self.pool)] for i in range(count)]


def mlp_model() -> nn.Sequential:
    """The small-op MLP every CPU bench uses: 8 x (Linear(256, 256) + ReLU)."""
    layers: list[nn.Module] = []
    for _ in range(8):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    return nn.Sequential(*layers)


def cnn_model() -> nn.Sequential:
    """The small CNN every CPU bench uses: 2 x (Conv 3x3 + BatchNorm + ReLU + MaxPool) + Linear,
    for 3x32x32 inputs and 10 classes."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    )


def make_mlp() -> Workload:
    """Small-op MLP: 8 x (Linear(256, 256) + ReLU), batch 64."""
    torch.manual_seed(0)
    model = mlp_model()
    pool = [(torch.randn(64, 256), torch.randint(0, 256, (64,))) for _ in range(32)]
    return Workload(
        name="mlp",
        description="8x(Linear(256,256)+ReLU), batch 64, SGD",
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=1e-3),
        pool=pool,
    )


def make_cnn() -> Workload:
    """Small CNN: 2 x (Conv 3x3 + BatchNorm + ReLU + MaxPool) + Linear head, batch 32 of 3x32x32."""
    torch.manual_seed(0)
    model = cnn_model()
    pool = [(torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))) for _ in range(16)]
    return Workload(
        name="cnn",
        description="2x(Conv3x3+BN+ReLU+MaxPool)+Linear, batch 32 of 3x32x32, SGD+momentum",
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9),
        pool=pool,
    )


# The loops ----------------------------------------------------------------------------------------
# Both loops are written the same way: one clock reading per step, at its end; a step's time is
# the time since the previous reading, so it includes fetching the batch (and, when profiled,
# prof.step()).


def baseline_block(work: Workload, data: list[Batch], warmup: int) -> list[int]:
    """Run the bare loop over ``data``; nanoseconds per step, warm-up steps dropped."""
    model, opt = work.model, work.optimizer
    times: list[int] = []
    last = perf_ns()
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        now = perf_ns()
        times.append(now - last)
        last = now
    return times[warmup:]


def profiled_block(
    work: Workload, data: list[Batch], warmup: int, *, out_dir: Path, run_name: str, system: bool
) -> list[int]:
    """Run the same loop under a fresh always-on trainprof session."""
    model, opt = work.model, work.optimizer
    times: list[int] = []
    with profiler.profile(
        model, run_name=run_name, out_dir=out_dir, schedule=None, system_metrics=system
    ) as prof:
        last = perf_ns()
        for x, y in prof.loader(data):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            prof.step()
            now = perf_ns()
            times.append(now - last)
            last = now
    return times[warmup:]


@dataclass
class Runner:
    """Runs blocks of any mode and names the profiled sessions uniquely."""

    out_dir: Path
    settings: Settings
    _count: int = 0

    def block(self, work: Workload, mode: str, steps: int) -> list[int]:
        data = work.data(self.settings.warmup_steps + steps)
        gc.collect()  # cheap after gc.freeze(): every block starts from the same heap state
        if mode.startswith("baseline"):
            return baseline_block(work, data, self.settings.warmup_steps)
        self._count += 1
        return profiled_block(
            work,
            data,
            self.settings.warmup_steps,
            out_dir=self.out_dir,
            run_name=f"{work.name}-{mode}-{self._count:04d}",
            system=mode == "profiled_sys",
        )


def calibrate(runner: Runner, work: Workload) -> None:
    """Warm up every mode, then size a block to about ``block_s`` seconds of baseline steps."""
    for mode in MODES:
        runner.block(work, mode, 20)
    gc.collect()
    gc.freeze()  # the heap so far (torch, the model) is never scanned again: gc.collect() is ~free
    probe = [statistics.fmean(runner.block(work, "baseline", 30)) for _ in range(3)]
    step_ns = statistics.median(probe)
    work.step_us = step_ns / 1000
    work.steps = max(10, round(runner.settings.block_s * 1e9 / step_ns))


# Statistics ---------------------------------------------------------------------------------------


def mad_pct(values: list[float]) -> float:
    """Median absolute deviation, as % of the median."""
    mid = statistics.median(values)
    return 100 * statistics.median(abs(v - mid) for v in values) / mid


def ratio_of_medians(base: list[float], other: list[float]) -> float:
    """The headline estimator, in %: median(other) / median(base) - 1."""
    return 100 * (statistics.median(other) / statistics.median(base) - 1)


def median_of_ratios(base: list[float], other: list[float]) -> float:
    """The paired estimator, in %: median over rounds of other / base - 1 (same round)."""
    return 100 * (statistics.median(o / b for o, b in zip(other, base, strict=True)) - 1)


def bootstrap_ci(
    estimator: Callable[[list[float], list[float]], float],
    base: list[float],
    other: list[float],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of ``estimator`` by resampling whole rounds."""
    rng = random.Random(seed)
    n = len(base)
    estimates = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        estimates.append(estimator([base[i] for i in idx], [other[i] for i in idx]))
    estimates.sort()
    return estimates[int(0.025 * resamples)], estimates[int(0.975 * resamples) - 1]


@dataclass
class Comparison:
    """One mode against the baseline on one workload."""

    workload: str
    mode: str
    steps_per_block: int
    rounds: int
    baseline_us: float
    profiled_us: float
    overhead_pct: float  # median(mode block means) / median(baseline block means) - 1
    ci_low_pct: float
    ci_high_pct: float
    paired_overhead_pct: float  # median over rounds of (mode block / same round's baseline) - 1
    paired_ci_low_pct: float
    paired_ci_high_pct: float
    median_step_overhead_pct: float  # the headline estimator on each block's median step
    baseline_mad_pct: float
    profiled_mad_pct: float
    baseline_range_us: tuple[float, float]
    profiled_range_us: tuple[float, float]
    baseline_blocks_us: list[float] = field(repr=False)
    profiled_blocks_us: list[float] = field(repr=False)

    @property
    def target(self) -> str:
        return "n/a" if self.mode == "baseline_aa" else f"<= {TARGET_PCT:g}%"

    @property
    def met(self) -> str:
        if self.mode == "baseline_aa":
            return "n/a"
        verdict = "yes" if self.overhead_pct <= TARGET_PCT else "no"
        if self.ci_low_pct <= TARGET_PCT < self.ci_high_pct:
            verdict += " (CI spans target)"
        return verdict

    def as_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["target_pct"] = None if self.mode == "baseline_aa" else TARGET_PCT
        data["met"] = self.met
        return data


def ratios(results: list[Comparison], steps: list[Interleaved]) -> list[Ratio]:
    """The headline figures for bench/run.py: overhead % per design; A/A runs without target."""
    found = [
        Ratio(
            name=f"always-on overhead, {r.workload}, {MODE_LABELS[r.mode]}",
            value=r.overhead_pct,
            target=None if r.mode == "baseline_aa" else TARGET_PCT,
            comparison=None if r.mode == "baseline_aa" else "<=",
            unit="%",
            note=f"95% CI {r.ci_low_pct:+.2f}..{r.ci_high_pct:+.2f}, {r.rounds} rounds",
        )
        for r in results
    ]
    for r in steps:
        run = "A/A (noise)" if r.aa else "on vs off"
        name = f"always-on overhead, {r.workload}, step-interleaved {run}"
        target = None if r.aa else TARGET_PCT
        comparison: Literal["<="] | None = None if r.aa else "<="
        for stat, value, (low, high) in (
            ("median", r.delta_pct, r.ci_pct),
            ("trimmed mean", r.mean_pct, r.mean_ci_pct),
            *((("whole", r.whole_pct, r.whole_ci_pct),) if r.rare_us else ()),
        ):
            note = f"95% CI {low:+.2f}..{high:+.2f}, {r.pairs} pairs"
            found.append(Ratio(f"{name}, {stat}", value, target, comparison, "%", note))
    return found


def compare(
    work: Workload, mode: str, blocks: dict[str, list[list[int]]], rounds: int
) -> Comparison:
    base = [statistics.fmean(b) / 1000 for b in blocks["baseline"]]
    other = [statistics.fmean(b) / 1000 for b in blocks[mode]]
    base_med = [statistics.median(b) / 1000 for b in blocks["baseline"]]
    other_med = [statistics.median(b) / 1000 for b in blocks[mode]]
    low, high = bootstrap_ci(ratio_of_medians, base, other)
    paired_low, paired_high = bootstrap_ci(median_of_ratios, base, other)
    return Comparison(
        workload=work.name,
        mode=mode,
        steps_per_block=work.steps,
        rounds=rounds,
        baseline_us=statistics.median(base),
        profiled_us=statistics.median(other),
        overhead_pct=ratio_of_medians(base, other),
        ci_low_pct=low,
        ci_high_pct=high,
        paired_overhead_pct=median_of_ratios(base, other),
        paired_ci_low_pct=paired_low,
        paired_ci_high_pct=paired_high,
        median_step_overhead_pct=ratio_of_medians(base_med, other_med),
        baseline_mad_pct=mad_pct(base),
        profiled_mad_pct=mad_pct(other),
        baseline_range_us=(min(base), max(base)),
        profiled_range_us=(min(other), max(other)),
        baseline_blocks_us=base,
        profiled_blocks_us=other,
    )


def measure(runner: Runner, work: Workload, console: Console) -> list[Comparison]:
    """Interleaved rounds of every mode on one workload."""
    calibrate(runner, work)
    rounds = runner.settings.rounds
    console.print(
        f"[bold]{work.name}[/]: {work.description}; {rounds} rounds x {len(MODES)} blocks of "
        f"{work.steps} steps (+{runner.settings.warmup_steps} warm-up), order shuffled per round"
    )
    rng = random.Random(f"{work.name}-order")
    blocks: dict[str, list[list[int]]] = {mode: [] for mode in MODES}
    started = time.monotonic()
    for index in range(rounds):
        order = list(MODES)
        rng.shuffle(order)
        for mode in order:
            blocks[mode].append(runner.block(work, mode, work.steps))
        if (index + 1) % max(1, rounds // 4) == 0:
            console.print(f"  round {index + 1}/{rounds}  ({time.monotonic() - started:.0f} s)")
    return [compare(work, mode, blocks, rounds) for mode in MODES if mode != "baseline"]


# Step-interleaved design -------------------------------------------------------------------------
# Within one always-on session, steps alternate in pairs: two "on" steps (batch from prof.loader(),
# trainprof's hooks attached, prof.step() called) then two "off" steps (batch from the bare list,
# hooks detached, no prof.step()). Only the second step of each pair is measured, so each measured
# step follows one of its own kind, and the hooks are switched outside the measured steps. An "on"
# step and the "off" step measured next are ~2 steps apart, so slow drifts in machine speed
# cancel in their difference, and each step is also timed by section (next, forward,
# loss+backward, optimizer step, zero_grad, prof.step) to show where the difference lands. The
# sampler thread (system_metrics=True) runs under both arms alike, so it is not measured here.

SECTIONS = ("next", "forward", "loss+backward", "opt.step", "zero_grad", "prof.step")


@dataclass
class Interleaved:
    """Step-interleaved on/off comparison on one workload (on - off, per measured pair)."""

    workload: str
    aa: bool  # A/A: both arms "off", the noise floor and bias of the design
    pairs: int
    off_us: float  # median bare step
    on_us: float
    delta_us: float  # median over pairs of (on step - off step)
    delta_ci_us: tuple[float, float]
    # The trimmed mean over pairs also counts the phase-timed steps (one in phase_every), but the
    # step log's write once a second lands in the trimmed tail with the preempted steps.
    mean_delta_us: float
    mean_ci_us: tuple[float, float]
    sections_off_us: dict[str, float]
    sections_delta_us: dict[str, float]
    # The whole cost per step, rare steps included at their real rate: the median over the
    # ordinary pairs plus what each rare kind of step costs more than an ordinary "on" step,
    # times how often it comes (see ``rare_costs``).
    whole_us: float = 0.0
    whole_ci_us: tuple[float, float] = (0.0, 0.0)
    rare_us: dict[str, float] = field(default_factory=dict)  # each rare kind's share, µs/step

    @property
    def delta_pct(self) -> float:
        return self._pct(self.delta_us)

    @property
    def ci_pct(self) -> tuple[float, float]:
        return self._pcts(self.delta_ci_us)

    @property
    def mean_pct(self) -> float:
        return self._pct(self.mean_delta_us)

    @property
    def mean_ci_pct(self) -> tuple[float, float]:
        return self._pcts(self.mean_ci_us)

    @property
    def whole_pct(self) -> float:
        return self._pct(self.whole_us)

    @property
    def whole_ci_pct(self) -> tuple[float, float]:
        return self._pcts(self.whole_ci_us)

    def _pct(self, us: float) -> float:
        return 100 * us / self.off_us

    def _pcts(self, interval: tuple[float, float]) -> tuple[float, float]:
        return self._pct(interval[0]), self._pct(interval[1])


def trimmed_mean(values: list[float], share: float = TRIM_SHARE) -> float:
    """The mean without the lowest and highest ``share`` of the values (preempted steps)."""
    ordered = sorted(values)
    cut = int(len(ordered) * share)
    return statistics.fmean(ordered[cut : len(ordered) - cut])


def _bootstrap(
    values: list[float],
    stat: Callable[[list[float]], float] = statistics.median,
    resamples: int = 400,
    seed: int = 0,
) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(values)
    found = sorted(stat(rng.choices(values, k=n)) for _ in range(resamples))
    return found[int(0.025 * resamples)], found[int(0.975 * resamples) - 1]


# What an "on" step did besides the ordinary light path, read from the session around its
# prof.step(): INSTALLS puts the phase split's wrapper and hooks in place for the next step, TIMED
# is timed (its prof.step() takes them off), FLUSHES hands the rows over (once a second).
ORDINARY, INSTALLS, TIMED, FLUSHES = "ordinary", "installs", "timed", "flushes"


# Where each rare kind's own work lands: prof.step() puts the split in place, takes it off and
# flushes; a timed step also runs the forward wrapper and the optimizer hooks.
RARE_SECTIONS = {
    INSTALLS: ("prof.step",),
    TIMED: ("forward", "opt.step", "prof.step"),
    FLUSHES: ("prof.step",),
}


def rare_costs(
    sections: list[dict[str, float]], kinds: list[str], rates: dict[str, float]
) -> dict[str, float]:
    """Each rare kind's cost per step of the run, in µs, from the "on" steps alone.

    A kind's extra is the median over its steps of the sections its work lands in
    (``RARE_SECTIONS``) less the same over the ordinary steps: short sections, which a preempted
    step rarely hits, where the whole step's difference is noisy on few steps. It is charged at
    its rate in a real run. A kind no measured step saw counts 0.

    Args:
        sections: each measured "on" step's sections, in µs.
        kinds: each step's kind (``ORDINARY``, ``INSTALLS``, ``TIMED`` or ``FLUSHES``).
        rates: how often each rare kind comes in a real run, per step: ``1 / phase_every`` for
            the phase split's two, step time / flush interval for the flush (once a second
            whatever the step: the interleaved run, which steps the session half as often,
            flushes half as many rows each time).
    """
    ordinary = [step for step, kind in zip(sections, kinds, strict=True) if kind == ORDINARY]
    costs: dict[str, float] = {}
    for kind, names in RARE_SECTIONS.items():
        base = statistics.median(sum(step[name] for name in names) for step in ordinary)
        found = [
            sum(step[name] for name in names)
            for step, k in zip(sections, kinds, strict=True)
            if k == kind
        ]
        costs[kind] = (statistics.median(found) - base) * rates[kind] if found else 0.0
    return costs


def hooks_off(metrics: Any) -> None:
    """Take the phase split's wrapper and hooks off for the "off" arm, as ``detach()`` does, but
    keep them registered. ``detach()`` forgets them (a run detaches only at its end), so the
    ``attach()`` after it would build and register them anew, a cost no real run pays between
    its timed steps; it is the fallback where the private parts have gone."""
    if hasattr(metrics, "_uninstall") and hasattr(metrics, "_enabled"):
        metrics._enabled = False
        metrics._uninstall()
    else:
        metrics.detach()


def interleaved(work: Workload, out_dir: Path, pairs: int, *, aa: bool) -> Interleaved | None:
    """Run the step-interleaved comparison; None where the session has no attach()/detach()."""
    from profiler.capture import step_metrics

    model, opt = work.model, work.optimizer
    data = work.data(4 * pairs + 4)
    # Which pair of each four steps is "on", drawn per cycle: a cost that comes every 4th or 8th
    # step (a gc generation, a periodic thread) would otherwise land in one arm every time.
    rng = random.Random(1)
    on_first = [rng.random() < 0.5 for _ in range(pairs)]
    on_steps: list[tuple[int, ...]] = []
    off_steps: list[tuple[int, ...]] = []
    kinds: list[str] = []  # of each measured "on" step
    gc.collect()
    with profiler.profile(
        model,
        run_name=f"interleaved-{work.name}-{'aa' if aa else 'ab'}",
        out_dir=out_dir,
        schedule=None,
        system_metrics=False,
    ) as prof:
        metrics = getattr(prof, "_metrics", None)
        if not (hasattr(metrics, "attach") and hasattr(metrics, "detach")):
            return None
        wrapped, bare = iter(prof.loader(data)), iter(data)
        attached = True
        for index in range(4 * pairs):
            slot = ((index // 2) % 2 == 0) == on_first[index // 4]  # the "on" arm's pair
            on = slot and not aa
            if on != attached:
                metrics.attach() if on else hooks_off(metrics)  # type: ignore[union-attr]
                attached = on
            timed, pending = getattr(metrics, "_timed", False), len(getattr(metrics, "_rows", ()))
            t0 = perf_ns()
            x, y = next(wrapped) if on else next(bare)
            t1 = perf_ns()
            out = model(x)
            t2 = perf_ns()
            F.cross_entropy(out, y).backward()
            t3 = perf_ns()
            opt.step()
            t4 = perf_ns()
            opt.zero_grad(set_to_none=True)
            t5 = perf_ns()
            if on:
                prof.step()
            t6 = perf_ns()
            handed = pending + 1 - len(getattr(metrics, "_rows", ())) if on else 0
            if index % 2 == 1:
                arm = on_steps if slot else off_steps
                arm.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t6 - t0))
                if arm is on_steps:
                    installs = getattr(metrics, "_timed", False) and not timed
                    kind = FLUSHES if handed > 1 else TIMED if timed else ORDINARY
                    kinds.append(INSTALLS if installs and kind == ORDINARY else kind)
        if not attached:
            metrics.attach()  # type: ignore[union-attr]
    deltas = [(a[-1] - b[-1]) / 1000 for a, b in zip(on_steps, off_steps, strict=True)]
    off_us = statistics.median(b[-1] for b in off_steps) / 1000
    result = Interleaved(
        workload=work.name,
        aa=aa,
        pairs=pairs,
        off_us=off_us,
        on_us=statistics.median(a[-1] for a in on_steps) / 1000,
        delta_us=statistics.median(deltas),
        delta_ci_us=_bootstrap(deltas),
        mean_delta_us=trimmed_mean(deltas),
        mean_ci_us=_bootstrap(deltas, trimmed_mean),
        sections_off_us={
            name: statistics.median(b[i] for b in off_steps) / 1000
            for i, name in enumerate(SECTIONS)
        },
        sections_delta_us={
            name: statistics.median(a[i] - b[i] for a, b in zip(on_steps, off_steps, strict=True))
            / 1000
            for i, name in enumerate(SECTIONS)
        },
    )
    if not aa and ORDINARY in kinds:
        every = step_metrics.phase_every(round(off_us * 1000))
        on_sections = [{name: a[i] / 1000 for i, name in enumerate(SECTIONS)} for a in on_steps]
        flush_rate = off_us * 1000 / step_metrics.FLUSH_INTERVAL_NS
        rates = {INSTALLS: 1 / every, TIMED: 1 / every, FLUSHES: flush_rate}
        rare = rare_costs(on_sections, kinds, rates)
        ordinary = [d for d, k in zip(deltas, kinds, strict=True) if k == ORDINARY]
        extra = sum(rare.values())
        low, high = _bootstrap(ordinary)
        result.whole_us = statistics.median(ordinary) + extra
        result.whole_ci_us = (low + extra, high + extra)
        result.rare_us = rare
    return result


def measure_interleaved(
    work: Workload, out_dir: Path, settings: Settings, console: Console
) -> list[Interleaved]:
    pairs = max(50, round(settings.pair_s * 1e6 / (2 * (work.step_us or 5000.0))))
    console.print(f"  step-interleaved: {pairs} on/off pairs, then an A/A run of as many")
    results = [interleaved(work, out_dir, pairs, aa=aa) for aa in (False, True)]
    return [r for r in results if r is not None]


# Machine (cpu_model, loadavg and machine are in bench/common.py) ----------------------------------


def cpu_busy_counter() -> Callable[[], dict[str, float]]:
    """Start counting; the function returned gives each CPU's busy % (all processes) since."""

    def read() -> dict[str, list[int]]:
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return {}
        return {
            parts[0]: [int(v) for v in parts[1:]]
            for parts in (line.split() for line in lines)
            if parts and parts[0].startswith("cpu") and parts[0] != "cpu"
        }

    before = read()

    def done() -> dict[str, float]:
        result = {}
        for cpu, values in read().items():
            delta = [a - b for a, b in zip(values, before.get(cpu, values), strict=False)]
            total = sum(delta) or 1
            result[cpu] = round(100 * (total - delta[3] - delta[4]) / total, 1)  # idle, iowait
        return result

    return done


# Breakdown: timers around trainprof's functions, in the real loop ---------------------------------


class FunctionTimers:
    """Wrap functions so that each call's inclusive and own (exclusive) time is added up.

    The wrappers are set on the classes for the duration of a ``with`` block only, in this
    process; trainprof's code is not changed. Hooks and the step-log sink are bound when a session
    starts, so the session must start inside the block.
    """

    def __init__(self, targets: Iterable[tuple[Any, str]]) -> None:
        # Anything renamed or gone in trainprof is skipped rather than failing the benchmark.
        self.targets = [
            (owner, name)
            for owner, name in targets
            if owner is not None and name in getattr(owner, "__dict__", {})
        ]
        self.inclusive: dict[str, int] = defaultdict(int)
        self.own: dict[str, int] = defaultdict(int)
        self.calls: Counter[str] = Counter()
        self._stack: list[int] = []
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        stack, inclusive, own, calls = self._stack, self.inclusive, self.own, self.calls

        def timed(*args: Any, **kwargs: Any) -> Any:
            stack.append(0)
            start = perf_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = perf_ns() - start
                children = stack.pop()
                inclusive[label] += spent
                own[label] += spent - children
                calls[label] += 1
                if stack:
                    stack[-1] += spent

        return timed

    def __enter__(self) -> FunctionTimers:
        for owner, name in self.targets:
            raw = inspect.getattr_static(owner, name)
            label = f"{getattr(owner, '__name__', owner)}.{name}"
            if isinstance(raw, staticmethod):
                replacement: Any = staticmethod(self._wrap(label, raw.__func__))
            else:
                replacement = self._wrap(label, raw)
            self._saved.append((owner, name, raw))
            setattr(owner, name, replacement)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, raw in reversed(self._saved):
            setattr(owner, name, raw)
        self._saved.clear()

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        """Running totals (calls, own ns, inclusive ns) per function: take one after each step."""
        return {
            label: (n, self.own[label], self.inclusive[label]) for label, n in self.calls.items()
        }


def per_step_medians(
    snapshots: list[dict[str, tuple[int, int, int]]],
) -> dict[str, dict[str, float]]:
    """Median over steps of each function's calls, own and inclusive time within the step.

    Medians, not means: on a busy machine a step in which the process was preempted would
    otherwise charge a whole time slice to whichever function was running.
    """
    labels = {label for snap in snapshots for label in snap}
    result = {}
    for label in labels:
        totals = [snap.get(label, (0, 0, 0)) for snap in snapshots]
        steps = list(zip(totals, totals[1:], strict=False))
        result[label] = {
            "calls_per_step": statistics.fmean(b[0] - a[0] for a, b in steps),
            "own_us_per_step": statistics.median(b[1] - a[1] for a, b in steps) / 1000,
            "inclusive_us_per_step": statistics.median(b[2] - a[2] for a, b in steps) / 1000,
        }
    return result


def timer_targets() -> list[tuple[Any, str]]:
    from profiler.capture import session, step_metrics
    from profiler.capture.clock import Clock
    from profiler.capture.memory import MemoryProbe
    from profiler.store import StepLog

    metrics = getattr(step_metrics, "StepMetrics", None)
    names = [
        "roll", "begin", "_begin_state", "_set_timed", "end", "_close", "_phases", "_drain",
        "_read_memory", "_install", "_uninstall", "_forward_pre", "_forward_post",
        "_optimizer_pre", "_optimizer_post",
    ]  # fmt: skip
    return [
        (session.Profile, "step"),
        *[(metrics, name) for name in names],
        (step_metrics, "_record"),  # a module-level function: the flush looks it up per call
        (MemoryProbe, "current_bytes"),
        (MemoryProbe, "peak_bytes"),
        (MemoryProbe, "rss_bytes"),
        (MemoryProbe, "reset_peak"),
        (Clock, "unix_us"),
        (StepLog, "write"),
    ]


def in_loop_run(
    work: Workload, out_dir: Path, settings: Settings, name: str, *, timers: bool
) -> dict[str, Any]:
    """The profiled MLP loop with clock readings around next() and prof.step().

    With ``timers``, trainprof's functions are wrapped by :class:`FunctionTimers` as well.
    """
    model, opt = work.model, work.optimizer
    data = work.data(settings.breakdown_steps + settings.warmup_steps)
    fetch, steps = [], []
    snapshots: list[dict[str, tuple[int, int, int]]] = []
    ft = FunctionTimers(timer_targets() if timers else [])
    gc.collect()
    with (
        ft,
        profiler.profile(
            model, run_name=name, out_dir=out_dir, schedule=None, system_metrics=False
        ) as prof,
    ):
        it = iter(prof.loader(data))
        for _ in data:
            t0 = perf_ns()
            x, y = next(it)
            t1 = perf_ns()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t2 = perf_ns()
            prof.step()
            t3 = perf_ns()
            fetch.append(t1 - t0)
            steps.append(t3 - t2)
            if timers:
                snapshots.append(ft.snapshot())
    w = settings.warmup_steps
    return {
        "prof_step_ns": statistics.median(steps[w:]),
        "prof_step_mean_ns": statistics.fmean(steps[w:]),
        "next_ns": statistics.median(fetch[w:]),
        "functions": per_step_medians(snapshots[w:]) if timers else {},
    }


def bare_next_ns(work: Workload, settings: Settings) -> float:
    """Median time of next() on the bare list's iterator, in the same loop shape."""
    model, opt = work.model, work.optimizer
    data = work.data(settings.breakdown_steps + settings.warmup_steps)
    fetch = []
    it = iter(data)
    for _ in data:
        t0 = perf_ns()
        x, y = next(it)
        t1 = perf_ns()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        fetch.append(t1 - t0)
    return statistics.median(fetch[settings.warmup_steps :])


# Breakdown: isolated micro-benchmarks -------------------------------------------------------------


def per_call_ns(fn: Callable[[], Any], calls: int, repeats: int = 7) -> float:
    """Median over ``repeats`` of the mean time of one ``fn()`` call, loop overhead removed."""
    empty, timed = [], []
    for _ in range(repeats):
        start = perf_ns()
        for _ in range(calls):
            pass
        empty.append(perf_ns() - start)
        start = perf_ns()
        for _ in range(calls):
            fn()
        timed.append(perf_ns() - start)
    return (statistics.median(timed) - statistics.median(empty)) / calls


@dataclass
class Piece:
    """One isolated micro-benchmark."""

    name: str
    us_per_call: float
    calls_per_step: float

    @property
    def us_per_step(self) -> float:
        return self.us_per_call * self.calls_per_step


def hook_dispatch_pieces(out_dir: Path, calls: int) -> list[Piece]:
    """Hooks on vs off around a tiny model: trainprof's hook functions plus torch's dispatch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    x = torch.randn(2, 4, requires_grad=True)
    prof = profiler.profile(
        model, run_name="micro-hooks", out_dir=out_dir, schedule=None, system_metrics=False
    )
    prof.start()
    metrics = prof._metrics
    assert metrics is not None
    state = {"on": True}

    def switch(on: bool) -> None:
        if on != state["on"]:
            metrics.attach() if on else metrics.detach()
            state["on"] = on

    def delta(fn: Callable[[], Any], n: int) -> float:
        on, off = [], []
        for _ in range(7):
            switch(False)
            off.append(per_call_ns(fn, n, repeats=1))
            switch(True)
            on.append(per_call_ns(fn, n, repeats=1))
        return (statistics.median(on) - statistics.median(off)) / 1000

    try:
        forward = delta(lambda: model(x), calls)
        forward_backward = delta(lambda: model(x).sum().backward(), calls // 4)
        optimizer = delta(opt.step, calls)
    finally:
        switch(True)
        prof.stop()
    return [
        Piece("forward: root pre/post hooks incl. nn.Module's slow path", forward, 1),
        Piece(
            "backward: no hook of its own (timed from forward end to optimizer start)",
            forward_backward - forward,
            1,
        ),
        Piece("optimizer: global step pre/post hooks", optimizer, 1),
    ]


def syscall_pieces(out_dir: Path, calls: int, step_s: float) -> list[Piece]:
    """The system calls and serialisation a step makes, and the sampler, hot."""
    from profiler.capture.memory import MemoryProbe
    from profiler.capture.system import SystemSampler
    from profiler.store import StepLog

    memory = MemoryProbe("cpu")
    log = StepLog(out_dir / "micro-steps.jsonl")
    record = {
        "step": 12345, "start_unix_us": 1795000000000000.1, "dur_us": 4321.123,
        "data_wait_us": 0.812, "memory_bytes": 512_000_000, "peak_memory_bytes": 600_000_000,
        "deep": False, "forward_us": 1234.5, "backward_us": 2345.6, "optimizer_us": 345.6,
    }  # fmt: skip
    sampler = SystemSampler()  # not started: sample_once() below runs on this thread
    sampler.sample_once()
    try:
        append = _ns(lambda: log.write([record]), calls)
        rss = _ns(memory.rss_bytes, calls)
        return [
            Piece("MemoryProbe.rss_bytes(): pread /proc/self/statm", rss, 1),
            Piece("MemoryProbe.peak_bytes()", _ns(memory.peak_bytes, calls), 1),
            Piece("StepLog.write(): one record (capture batches ~1 s of them)", append, 1),
            Piece(
                "system sampler: sample_once(), on its own thread at 10 Hz",
                _ns(sampler.sample_once, max(200, calls // 20)),
                10 * step_s,
            ),
        ]
    finally:
        log.close()
        memory.close()
        sampler.stop()


def _ns(fn: Callable[[], Any], calls: int) -> float:
    return per_call_ns(fn, calls) / 1000


# Breakdown: the light path's own cost, directly -------------------------------------------------


def direct_cost(
    out_dir: Path, settings: Settings, step_us: float, hooks_us: float
) -> dict[str, float]:
    """What trainprof's light path costs per step of ``step_us``, measured without the model.

    ``next()`` on ``prof.loader()`` plus ``prof.step()`` run in chunks of ``DIRECT_CHUNK`` steps,
    each after a chunk of the same loop without trainprof (``next()`` on the bare iterator); the
    difference of the fastest chunks is the per-step cost with hot caches (a floor: in the loop
    it comes after milliseconds of tensor work). Every other chunk the rows are flushed by hand
    (~480 rows, about a second of the MLP's steps) and timed per row. The phase split's wrapper
    and hooks stay off in the chunks; installing and removing them is timed on its own and,
    with ``hooks_us`` (their dispatch, from the micro-benchmarks), charged to one step in
    ``phase_every(step)``.
    """
    from profiler.capture import step_metrics

    model = nn.Linear(2, 2)
    data = range(10**12)
    on, off, flush, swap = [], [], [], []
    flush_interval = step_metrics.FLUSH_INTERVAL_NS
    step_metrics.FLUSH_INTERVAL_NS = 10**18  # flushed by hand below
    try:
        with profiler.profile(
            model, run_name="direct", out_dir=out_dir, schedule=None, system_metrics=False
        ) as prof:
            metrics = prof._metrics
            assert metrics is not None
            metrics.detach()
            wrapped, bare = iter(prof.loader(data)), iter(data)
            for index in range(max(20, settings.micro_calls // 100)):
                off.append(_chunk(bare, lambda: None))
                on.append(_chunk(wrapped, prof.step))
                if index % 2:
                    rows = len(metrics._rows)
                    start = perf_ns()
                    metrics.flush()
                    flush.append((perf_ns() - start) / rows)
                start = perf_ns()
                metrics._install()
                metrics._uninstall()
                swap.append(perf_ns() - start)
            metrics.attach()
    finally:
        step_metrics.FLUSH_INTERVAL_NS = flush_interval
    every = step_metrics.phase_every(round(step_us * 1000))
    result = {
        "step_and_next_us": (min(on) - min(off)) / DIRECT_CHUNK / 1000,
        "step_and_next_median_us": (statistics.median(on) - statistics.median(off))
        / DIRECT_CHUNK
        / 1000,
        "flush_per_row_us": statistics.median(flush) / 1000,
        "install_remove_us": min(swap) / 1000,
        "timed_hooks_us": hooks_us,
        "phase_every": every,
    }
    result["per_step_us"] = (
        result["step_and_next_us"]
        + result["flush_per_row_us"]
        + (result["install_remove_us"] + hooks_us) / every
    )
    result["per_step_pct"] = 100 * result["per_step_us"] / step_us
    return result


DIRECT_CHUNK = 240


def _chunk(iterator: Any, step: Callable[[], None]) -> int:
    start = perf_ns()
    for _ in range(DIRECT_CHUNK):
        next(iterator)
        step()
    return perf_ns() - start


# Breakdown: cProfile ------------------------------------------------------------------------------


def cprofile_loop(work: Workload, out_dir: Path, settings: Settings) -> list[dict[str, Any]]:
    """cProfile the profiled loop; trainprof's functions, per step (inflated by cProfile)."""
    model, opt = work.model, work.optimizer
    steps = settings.breakdown_steps
    data = work.data(steps)
    gc.collect()
    pr = cProfile.Profile()
    with profiler.profile(
        model, run_name="breakdown-cprofile", out_dir=out_dir, schedule=None, system_metrics=False
    ) as prof:
        pr.enable()
        for x, y in prof.loader(data):
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            prof.step()
        pr.disable()
    package = Path(profiler.__file__).resolve().parent
    rows = []
    total = 0.0
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in pstats.Stats(
        pr
    ).stats.items():  # type: ignore[attr-defined]
        total += tottime
        path = Path(filename).resolve() if not filename.startswith("~") else Path(filename)
        if package not in path.parents:
            continue
        rows.append(
            {
                "function": f"{path.relative_to(package.parent)}:{line}({func})",
                "calls_per_step": ncalls / steps,
                "own_us_per_step": 1e6 * tottime / steps,
                "inclusive_us_per_step": 1e6 * cumtime / steps,
            }
        )
    rows.sort(key=lambda r: -r["own_us_per_step"])
    rows.append(
        {
            "function": "(the whole loop, everything, under cProfile)",
            "calls_per_step": 1.0,
            "own_us_per_step": 1e6 * total / steps,
            "inclusive_us_per_step": 1e6 * total / steps,
        }
    )
    return rows


# Breakdown: report --------------------------------------------------------------------------------


def breakdown(
    mlp: Workload, out_dir: Path, settings: Settings, console: Console, mlp_step_s: float
) -> dict[str, Any]:
    console.rule("[bold]Where the per-step time goes (profiled MLP loop, system_metrics=False)")
    plain_next = bare_next_ns(mlp, settings)
    bare = in_loop_run(mlp, out_dir, settings, "breakdown-bare", timers=False)
    timed = in_loop_run(mlp, out_dir, settings, "breakdown-timed", timers=True)
    clock_ns = per_call_ns(perf_ns, 10_000)
    step_us = (bare["prof_step_ns"] - clock_ns) / 1000
    loader_us = (bare["next_ns"] - plain_next) / 1000
    functions = timed["functions"]
    wrapped_step = functions.get("Profile.step", {}).get("inclusive_us_per_step", float("nan"))

    table = Table(
        title=f"In the real loop: timers around trainprof's functions ({settings.breakdown_steps}"
        " steps; medians over steps)"
    )
    for name, justify in [("function", "left"), ("calls/step", "right"), ("own µs/step", "right"),
                          ("incl. µs/step", "right")]:  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for label, row in sorted(functions.items(), key=lambda kv: -kv[1]["own_us_per_step"]):
        table.add_row(
            label,
            f"{row['calls_per_step']:.2f}",
            f"{row['own_us_per_step']:.2f}",
            f"{row['inclusive_us_per_step']:.2f}",
        )
    console.print(table)
    console.print(
        f"Without the timers, in the same loop: prof.step() takes [bold]{step_us:.1f} µs[/] "
        f"(median; mean {(bare['prof_step_mean_ns'] - clock_ns) / 1000:.1f} µs), against a median "
        f"of {wrapped_step:.1f} µs with them (the difference is the timers' own cost); next() on "
        f"prof.loader() costs [bold]{loader_us:.2f} µs[/] more than on the bare list."
    )

    pieces = hook_dispatch_pieces(out_dir, settings.micro_calls) + syscall_pieces(
        out_dir, settings.micro_calls, mlp_step_s
    )
    mtable = Table(
        title="Isolated micro-benchmarks (hot caches: in the loop each costs several times more)"
    )
    for name, justify in [("piece", "left"), ("µs/call", "right"), ("calls/step", "right"),
                          ("µs/step", "right")]:  # fmt: skip
        mtable.add_column(name, justify=justify)  # type: ignore[arg-type]
    for piece in pieces:
        mtable.add_row(
            piece.name,
            f"{piece.us_per_call:.2f}",
            f"{piece.calls_per_step:.3g}",
            f"{piece.us_per_step:.2f}",
        )
    console.print(mtable)

    hooks_us = sum(p.us_per_call for p in pieces if p.name.startswith(("forward", "optimizer")))
    direct = direct_cost(out_dir, settings, mlp.step_us, hooks_us)
    console.print(
        f"The light path directly (hot caches, a floor): loader next() + prof.step() "
        f"[bold]{direct['step_and_next_us']:.2f} µs[/] a step (median chunk "
        f"{direct['step_and_next_median_us']:.2f}); the flush {direct['flush_per_row_us']:.2f} µs "
        f"a row; one step in {direct['phase_every']} installs and removes the phase split "
        f"({direct['install_remove_us']:.2f} µs) and runs its hooks ({hooks_us:.2f} µs): "
        f"[bold]{direct['per_step_us']:.2f} µs a step, {direct['per_step_pct']:.3f}%[/] of the "
        f"MLP's {mlp.step_us:,.0f} µs step."
    )

    rows = cprofile_loop(mlp, out_dir, settings)
    ctable = Table(
        title="cProfile, trainprof's functions (cProfile's own cost per call inflates these)"
    )
    for name, justify in [("function", "left"), ("calls/step", "right"), ("own µs/step", "right"),
                          ("incl. µs/step", "right")]:  # fmt: skip
        ctable.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows[:12] + rows[-1:]:
        ctable.add_row(
            row["function"],
            f"{row['calls_per_step']:.2f}",
            f"{row['own_us_per_step']:.2f}",
            f"{row['inclusive_us_per_step']:.2f}",
        )
    console.print(ctable)
    return {
        "in_loop": {
            "prof_step_us": step_us,
            "prof_step_mean_us": (bare["prof_step_mean_ns"] - clock_ns) / 1000,
            "loader_next_extra_us": loader_us,
            "prof_step_with_timers_us": wrapped_step,
            "functions": functions,
        },
        "micro": [dict(p.__dict__, us_per_step=p.us_per_step) for p in pieces],
        "direct": direct,
        "cprofile": rows,
    }


# Report -------------------------------------------------------------------------------------------


def results_table(results: list[Comparison]) -> Table:
    table = Table(title="trainprof always-on overhead (schedule=None), CPU, 1 torch thread")
    for name, justify in [
        ("workload", "left"),
        ("mode", "left"),
        ("baseline µs/step", "right"),
        ("profiled µs/step", "right"),
        ("overhead %", "right"),
        ("95% CI", "right"),
        ("paired % [95% CI]", "right"),
        ("MAD % base/prof", "right"),
        ("target", "left"),
        ("met", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in results:
        table.add_row(
            r.workload,
            MODE_LABELS[r.mode],
            f"{r.baseline_us:,.1f}",
            f"{r.profiled_us:,.1f}",
            f"{r.overhead_pct:+.2f}",
            f"{r.ci_low_pct:+.2f}..{r.ci_high_pct:+.2f}",
            f"{r.paired_overhead_pct:+.2f} "
            f"[{r.paired_ci_low_pct:+.2f}..{r.paired_ci_high_pct:+.2f}]",
            f"{r.baseline_mad_pct:.1f}/{r.profiled_mad_pct:.1f}",
            r.target,
            r.met,
        )
    return table


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--no-breakdown", dest="breakdown", action="store_false", help="skip the breakdown"
    )
    parser.add_argument("--workloads", default="mlp,cnn", help="a subset of: mlp,cnn")
    return parser.parse_args(None if argv is None else list(argv))


def interleaved_table(results: list[Interleaved]) -> Table:
    table = Table(
        title="Step-interleaved on/off within one session (system_metrics=False): per-pair "
        "differences in µs/step (sections: medians); whole = ordinary pairs' median + the rare "
        "steps at their rate; met: the median, the trimmed mean and the whole"
    )
    columns = ["workload", "run", "pairs", "bare µs/step", *(f"Δ {n}" for n in SECTIONS)]
    columns += ["median Δ µs", "median Δ % [95% CI]", "trimmed mean Δ % [95% CI]"]
    columns += ["whole Δ µs", "whole Δ % [95% CI]", "met"]
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index < 2 else "right")
    for r in results:
        estimates = [(r.delta_pct, r.ci_pct), (r.mean_pct, r.mean_ci_pct)]
        if r.rare_us:
            estimates.append((r.whole_pct, r.whole_ci_pct))
        if r.aa:
            met = "n/a"
        else:
            met = "yes" if all(value <= TARGET_PCT for value, _ in estimates) else "no"
            spans = any(low <= TARGET_PCT < high for _, (low, high) in estimates)
            met += " (CI spans target)" if spans else ""
        table.add_row(
            r.workload,
            "A/A (noise)" if r.aa else "on vs off",
            str(r.pairs),
            f"{r.off_us:,.1f}",
            *(f"{r.sections_delta_us[name]:+.1f}" for name in SECTIONS),
            f"{r.delta_us:+.1f}",
            _pct_ci(*estimates[0]),
            _pct_ci(*estimates[1]),
            f"{r.whole_us:+.1f}" if r.rare_us else "",
            _pct_ci(*estimates[2]) if r.rare_us else "",
            met,
        )
    return table


def rare_note(results: list[Interleaved]) -> str:
    """What the rare steps add to each on-vs-off run's whole figure, in µs per step."""
    notes = []
    for r in results:
        if r.rare_us:
            rare = r.rare_us
            notes.append(
                f"{r.workload}: phase split {rare[INSTALLS]:+.2f} (putting it in place) "
                f"{rare[TIMED]:+.2f} (the timed step), step log {rare[FLUSHES]:+.2f} (its write "
                "once a second)"
            )
    return "rare steps, µs per step of the run: " + "; ".join(notes) if notes else ""


def _pct_ci(value: float, ci: tuple[float, float]) -> str:
    return f"{value:+.2f} [{ci[0]:+.2f}..{ci[1]:+.2f}]"


def run_all(
    names: list[str], settings: Settings, out_dir: Path, console: Console
) -> tuple[list[Comparison], list[Interleaved], dict[str, Workload]]:
    makers = {"mlp": make_mlp, "cnn": make_cnn}
    runner = Runner(out_dir=out_dir, settings=settings)
    blocks: list[Comparison] = []
    steps: list[Interleaved] = []
    workloads: dict[str, Workload] = {}
    for name in names:
        work = workloads[name] = makers[name]()
        blocks += measure(runner, work, console)
        steps += measure_interleaved(work, out_dir, settings, console)
    return blocks, steps, workloads


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = Settings(**{**settings.__dict__, "rounds": args.rounds})
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    info = machine()
    console.print(
        f"[bold]machine[/]: {info['cpu_model']}, {info['cpu_count']} cores "
        f"({info['cpus_usable']} usable), torch {info['torch']} ({info['torch_threads']} thread), "
        f"Python {info['python']}, trainprof {info['trainprof']}, {info['date']}, "
        f"load average {info['loadavg_start']}"
    )
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    started = time.monotonic()
    busy = cpu_busy_counter()
    out_dir = Path(tempfile.mkdtemp(prefix="trainprof-bench-"))
    try:
        results, steps, workloads = run_all(names, settings, out_dir, console)
        info["cpu_busy_pct"] = busy()
        info["loadavg_end"] = loadavg()
        console.print(results_table(results))
        console.print(
            "overhead % = median over rounds of the mode's block mean step time / the same for "
            "the baseline - 1, with a bootstrap 95% CI over rounds; paired % = median over rounds "
            "of mode block / same round's baseline block - 1; MAD = median absolute deviation of "
            "the block means. The A/A row is the noise floor: the baseline against itself."
        )
        if steps:
            console.print(interleaved_table(steps))
            console.print(rare_note(steps))
        console.print(
            f"CPU busy during the measurement, all processes (/proc/stat): {info['cpu_busy_pct']}"
            f" (this process keeps one CPU busy); load average now {info['loadavg_end']}"
        )
        extra: dict[str, Any] = {}
        if args.breakdown:
            mlp = workloads.get("mlp") or make_mlp()
            if not mlp.steps:
                calibrate(Runner(out_dir=out_dir, settings=settings), mlp)
            extra = breakdown(mlp, out_dir, settings, console, mlp.step_us / 1e6)
        elapsed = time.monotonic() - started
        console.print(f"total time {elapsed:.0f} s")
        if args.json:
            payload: dict[str, Any] = {
                "machine": info,
                "settings": settings.__dict__,
                "target_pct": TARGET_PCT,
                "results": [r.as_json() for r in results],
                "interleaved": [
                    dict(
                        r.__dict__,
                        delta_pct=r.delta_pct,
                        ci_pct=r.ci_pct,
                        mean_pct=r.mean_pct,
                        mean_ci_pct=r.mean_ci_pct,
                        whole_pct=r.whole_pct,
                        whole_ci_pct=r.whole_ci_pct,
                    )
                    for r in steps
                ],
                "breakdown": extra,
                "elapsed_s": round(elapsed, 1),
            }
            write_ratios(args.json, ratios(results, steps), **payload)
            console.print(f"wrote {args.json}")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
