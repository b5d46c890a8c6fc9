#!/usr/bin/env python3
"""What an idle ``schedule=profiler.on_anomaly()`` costs a step, beside ``schedule=None``.

Run from the repository root::

    python bench/anomaly_idle.py            # about a minute
    python bench/anomaly_idle.py --rounds 40

The MLP and CNN loops of bench/overhead.py, one CPU thread, in one process. Each round runs one
block of steps per mode, in a shuffled order: the bare loop, ``schedule=None`` (always-on
metrics only) and ``schedule=on_anomaly(factor=50)`` (the detector watches every step, no
window opens: the factor keeps machine noise from opening one; a block that opened one anyway
is reported). Two figures per mode, medians over the rounds:

* the block's mean step time: the honest end-to-end figure, but on a busy machine its noise
  (see ``None / bare``, whose true value is ~1.005) swamps a cost of a microsecond;
* the mean time of ``prof.step()`` itself, timed call by call (two clock reads around each,
  the same in both modes): everything trainprof does between steps, where the detector runs.

The ratio that matters is ``on_anomaly / None``; the second figure gives it as
``(step + added) / step`` with ``added`` the difference of the ``prof.step()`` means.
The exit status is 0 whatever the figures are: a report, not a test.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import profiler  # noqa: E402
from bench.overhead import Workload, make_cnn, make_mlp  # noqa: E402

MODES = ("bare", "none", "on_anomaly")


def block(work: Workload, mode: str, steps: int, out: Path, name: str) -> tuple[float, float, int]:
    """Mean ns per step of one block, mean ns of its ``prof.step()`` calls, trace files."""
    model, opt = work.model, work.optimizer
    data = work.data(steps + 5)
    gc.collect()
    now = time.perf_counter_ns
    if mode == "bare":
        start = now()
        for x, y in data:
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return (now() - start) / len(data), 0.0, 0
    schedule: Any = None if mode == "none" else profiler.on_anomaly(factor=50.0)
    inside = 0
    with profiler.profile(
        model, out_dir=out, run_name=name, schedule=schedule, system_metrics=False
    ) as prof:
        start = now()
        for x, y in prof.loader(data):
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            before = now()
            prof.step()
            inside += now() - before
        mean = (now() - start) / len(data)
    return mean, inside / len(data), len(prof.trace_files)


def measure(work: Workload, rounds: int, steps: int, out: Path) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {key: [] for key in (*MODES, "step_none", "step_anomaly")}
    windows = 0
    for index in range(rounds + 1):  # the first round warms up and is dropped
        order = list(MODES)
        random.shuffle(order)
        for mode in order:
            mean, inside, traces = block(work, mode, steps, out, f"{work.name}-{mode}-{index}")
            windows += traces
            if index:
                figures[mode].append(mean)
                if mode != "bare":
                    figures["step_none" if mode == "none" else "step_anomaly"].append(inside)
    if windows:
        print(f"  ({work.name}: {windows} window(s) opened by noise; their blocks are counted)")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200, help="steps per block")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gc.freeze()
    with tempfile.TemporaryDirectory() as tmp:
        for work in (make_mlp(), make_cnn()):
            figures = measure(work, args.rounds, args.steps, Path(tmp))
            med = {key: statistics.median(values) / 1000 for key, values in figures.items()}
            added = med["step_anomaly"] - med["step_none"]
            print(
                f"{work.name}: step bare {med['bare']:.1f} us, None {med['none']:.1f} us, "
                f"on_anomaly {med['on_anomaly']:.1f} us; on_anomaly / None = "
                f"{med['on_anomaly'] / med['none']:.4f} (None / bare = "
                f"{med['none'] / med['bare']:.4f})\n"
                f"  prof.step(): None {med['step_none']:.2f} us, on_anomaly "
                f"{med['step_anomaly']:.2f} us, added {added:.2f} us: "
                f"(step + added) / step = {(med['none'] + added) / med['none']:.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
