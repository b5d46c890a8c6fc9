#!/usr/bin/env python3
"""Light and deep capture on a GPU training loop, side by side with torch.profiler.

Run from the repository root on a machine with a CUDA GPU::

    python bench/gpu.py                 # 7 rounds of 30-step blocks
    python bench/gpu.py --quick         # 3 rounds of 10-step blocks
    python bench/gpu.py --device cpu --rounds 1 --steps 2 --width 32 --sequence 8  # a smoke test

The loop: a small transformer (token embedding, 2 encoder layers of d_model 256, 4 heads,
feed-forward 1024, a linear head over 1,000 classes), batch 32 of 128 tokens held in device
memory, AdamW (``--width`` and ``--sequence`` change its size). Every step ends with
``torch.cuda.synchronize()``, so a step's time is the GPU's too. Each round runs one block of
each mode, in an order rotated from round to round:

* ``bare``   the loop;
* ``light``  under ``profiler.profile(model, schedule=None)``: per-step metrics (phases from CUDA
  events, never a synchronisation), the system sampler (NVML with the `gpu` extra), no Kineto;
* ``deep``   under ``profiler.profile`` with a window over the block (Kineto with CUDA
  activities, module ranges projected onto the GPU, the backward lane, memory counters; no
  sampler, as in `bench/capture.py`);
* ``torch``  under ``torch.profiler.profile(activities=[CPU, CUDA])`` with the same schedule and
  options (``record_shapes``, ``profile_memory``), exported by ``export_chrome_trace``.

A block's figure is its median step (``light`` and ``bare`` time the whole iteration,
``prof.step()`` included; ``deep`` and ``torch`` the active steps as ``bench/capture.py`` does); a
mode's figure is the median over rounds. Ratios: the light overhead ``light / bare - 1`` (target
<= 1%, as on the CPU), deep against torch.profiler (<= 1.05) and stop-to-disk against
``export_chrome_trace`` (<= 1.5). Without a GPU (and no ``--device cpu``) it says so and exits 0
without writing ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch.profiler as tp
from rich.console import Console
from rich.table import Table
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/gpu.py`
    sys.path.insert(0, str(REPO))

import profiler  # noqa: E402
from bench.capture import (  # noqa: E402
    DISK_RATIO_TARGET,
    STEP_RATIO_TARGET,
    Loop,
    run_torch,
    run_trainprof,
)
from bench.common import Ratio, machine, write_ratios  # noqa: E402

LIGHT_TARGET_PCT = 1.0
VOCAB, BATCH = 1000, 32
WARMUP_STEPS = 3
MODES = ("bare", "light", "deep", "torch")


def transformer_loop(device: torch.device, width: int, sequence: int) -> Callable[[], Loop]:
    """A factory of fresh, identically seeded transformer training loops on ``device``."""

    def make() -> Loop:
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(width, 4, dim_feedforward=4 * width, batch_first=True)
        model = nn.Sequential(
            nn.Embedding(VOCAB, width),
            nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False),
            nn.Linear(width, VOCAB),
        ).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randint(0, VOCAB, (BATCH, sequence), device=device)
        y = torch.randint(0, VOCAB, (BATCH, sequence), device=device)
        synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def step() -> None:
            F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            synchronize()

        return model, step

    return make


def run_bare(make: Callable[[], Loop], steps: int) -> float:
    """The median iteration of the bare loop."""
    _, step = make()
    times = []
    for index in range(WARMUP_STEPS + steps):
        start = time.perf_counter()
        step()
        if index >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_light(out: Path, name: str, make: Callable[[], Loop], steps: int) -> float:
    """The median iteration, ``prof.step()`` included, under always-on metrics only."""
    model, step = make()
    times = []
    with profiler.profile(model, out_dir=out, run_name=name, schedule=None) as prof:
        for index in range(WARMUP_STEPS + steps):
            start = time.perf_counter()
            step()
            prof.step()
            if index >= WARMUP_STEPS:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    make: Callable[[], Loop], device: torch.device, rounds: int, steps: int, console: Console
) -> dict[str, Any]:
    """Every mode's block figures over ``rounds`` rotated rounds (the first round not counted)."""
    activities = [tp.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(tp.ProfilerActivity.CUDA)
    blocks: dict[str, list[float]] = {mode: [] for mode in MODES}
    writes: dict[str, list[float]] = {"deep": [], "torch": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for index in range(rounds + 1):  # round 0 warms every mode up
            order = MODES[index % len(MODES) :] + MODES[: index % len(MODES)]
            for mode in order:
                name = f"{mode}{index}"
                if mode == "bare":
                    figure = run_bare(make, steps)
                elif mode == "light":
                    figure = run_light(out, name, make, steps)
                else:
                    result = (
                        run_trainprof(out, name, steps, make)
                        if mode == "deep"
                        else run_torch(out, name, steps, make, activities)
                    )
                    figure = statistics.median(result["steps"])
                    if index:
                        writes[mode].append(result["write_s"])
                if index:
                    blocks[mode].append(figure)
            if index:
                console.print(f"  round {index}/{rounds}")
    medians = {mode: statistics.median(values) for mode, values in blocks.items()}
    medians.update({f"{mode}_write": statistics.median(v) for mode, v in writes.items()})
    return {"blocks": blocks, "writes": writes, "medians": medians}


def ratios(medians: dict[str, float], rounds: int, steps: int) -> list[Ratio]:
    note = f"{rounds} rounds of {steps} steps, median blocks"
    return [
        Ratio(
            "light (always-on) overhead, transformer",
            100 * (medians["light"] / medians["bare"] - 1),
            LIGHT_TARGET_PCT,
            "<=",
            "%",
            note,
        ),
        Ratio(
            "deep step time, trainprof / torch.profiler, transformer",
            medians["deep"] / medians["torch"],
            STEP_RATIO_TARGET,
            "<=",
            note=note,
        ),
        Ratio(
            "stop-to-disk, trainprof / torch.profiler, transformer",
            medians["deep_write"] / medians["torch_write"],
            DISK_RATIO_TARGET,
            "<=",
            note=note,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 10-step blocks")
    parser.add_argument("--rounds", type=int, help="rounds counted (default 7, quick 3)")
    parser.add_argument("--steps", type=int, help="measured steps a block (default 30, quick 10)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test)")
    parser.add_argument("--width", type=int, default=256, help="d_model (default 256)")
    parser.add_argument("--sequence", type=int, default=128, help="tokens a sample (default 128)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the ratios as JSON")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    steps = args.steps or (10 if args.quick else 30)
    console = Console()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        console.print("no CUDA GPU here: nothing measured (run it where there is one)")
        return 0
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    console.print(
        f"[bold]device[/]: {gpu or device}, torch {torch.__version__}; transformer d_model "
        f"{args.width}, {args.sequence} tokens x {BATCH}, {rounds} rounds of {steps} steps"
    )
    make = transformer_loop(device, args.width, args.sequence)
    found = measure(make, device, rounds, steps, console)
    medians = found["medians"]
    table = Table(title=f"Transformer training on {gpu or device}: median step, ms")
    for column in ("bare", "light", "deep", "torch.profiler", "deep write", "torch export"):
        table.add_column(column, justify="right")
    keys = ("bare", "light", "deep", "torch", "deep_write", "torch_write")
    table.add_row(*(f"{1e3 * medians[key]:.2f}" for key in keys))
    console.print(table)
    measured = ratios(medians, rounds, steps)
    for ratio in measured:
        verdict = "met" if ratio.met else "not met"
        console.print(
            f"{ratio.name}: {ratio.value:.3f}{ratio.unit} (target <= {ratio.target}) {verdict}"
        )
    if args.json:
        info = dict(machine(), gpu=gpu)
        sizes = {"width": args.width, "sequence": args.sequence, "batch": BATCH}
        write_ratios(args.json, measured, info, rounds=rounds, steps=steps, sizes=sizes, **found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
