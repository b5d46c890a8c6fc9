"""Deep capture against torch.profiler on the same loop, side by side in one process.

For each repetition (interleaved, the order alternating: trainprof first in odd repetitions,
torch.profiler first in even ones; the same model and data):

- step time in active steps: trainprof's ``profile`` (Kineto with the same options, plus module
  ranges and memory counters) against ``torch.profiler.profile``; target ratio <= 1.05;
- stop-to-disk: trainprof's window write (Kineto export, splice, gzip, rename) against torch's
  own ``export_chrome_trace`` of the same kind of window; target ratio <= 1.5;
- bytes per event on disk: trainprof's file against torch's gzip file (tensorboard_trace_handler).

    python bench/capture.py [--quick | --reps N] [--active N] [--json OUT]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import torch
import torch.profiler as tp
from rich.console import Console
from rich.table import Table
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/capture.py`
    sys.path.insert(0, str(REPO))

import profiler  # noqa: E402
from bench.common import Ratio, machine, write_ratios  # noqa: E402
from profiler.capture import session as capture_session  # noqa: E402

STEP_RATIO_TARGET = 1.05
DISK_RATIO_TARGET = 1.5
QUICK_REPS, QUICK_ACTIVE = 5, 10  # --quick: a few seconds; the full run has 7 reps
OPTIONS = {"record_shapes": True, "profile_memory": True, "with_stack": False}


Loop = tuple[nn.Module, Callable[[], None]]  # a model and one training step on it


def make_loop(seed: int = 0) -> Loop:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(8):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 256), torch.randint(0, 256, (64,))

    def step() -> None:
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, step


def run_trainprof(
    out: Path, name: str, active: int, make: Callable[[], Loop] = make_loop
) -> dict[str, Any]:
    """trainprof's deep window over ``active`` steps of a fresh ``make()`` loop."""
    model, step = make()
    writes: list[float] = []
    original = capture_session.write_window

    def timed_write(*args: Any, **kwargs: Any) -> Path:
        start = time.perf_counter()
        path = original(*args, **kwargs)
        writes.append(time.perf_counter() - start)
        return path

    capture_session.write_window = timed_write  # type: ignore[assignment]
    steps: list[float] = []
    schedule = profiler.schedule(wait=1, warmup=1, active=active)
    try:
        with profiler.profile(
            model, out_dir=out, run_name=name, schedule=schedule, system_metrics=False, **OPTIONS
        ) as prof:
            for index in range(2 + active + 1):
                start = time.perf_counter()
                step()
                if 2 <= index < 2 + active - 1:  # active, not the one whose step() writes
                    steps.append(time.perf_counter() - start)
                prof.step()
    finally:
        capture_session.write_window = original  # type: ignore[assignment]
    (path,) = prof.trace_files
    return {"steps": steps, "write_s": writes[0], "path": path}


def run_torch(
    out: Path,
    name: str,
    active: int,
    make: Callable[[], Loop] = make_loop,
    activities: Sequence[tp.ProfilerActivity] = (tp.ProfilerActivity.CPU,),
) -> dict[str, Any]:
    """torch.profiler over the same schedule and options, exported by ``export_chrome_trace``."""
    model, step = make()
    writes: list[float] = []
    files: list[Path] = []

    def export(prof: tp.profile) -> None:
        path = out / f"{name}.pt.trace.json"
        start = time.perf_counter()
        prof.export_chrome_trace(str(path))
        writes.append(time.perf_counter() - start)
        files.append(path)

    steps: list[float] = []
    schedule = tp.schedule(wait=1, warmup=1, active=active)
    with tp.profile(
        activities=list(activities), schedule=schedule, on_trace_ready=export, **OPTIONS
    ) as prof:
        for index in range(2 + active + 1):
            start = time.perf_counter()
            step()
            if 2 <= index < 2 + active - 1:
                steps.append(time.perf_counter() - start)
            prof.step()
    return {"steps": steps, "write_s": writes[0], "path": files[0]}


def events_in(path: Path) -> int:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return len(orjson.loads(data)["traceEvents"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--active", type=int, default=10)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_REPS} reps, {QUICK_ACTIVE} active"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.reps, args.active = QUICK_REPS, QUICK_ACTIVE
    torch.set_num_threads(1)
    ours: dict[str, list[float]] = {"step": [], "write": [], "bytes_per_event": []}
    theirs: dict[str, list[float]] = {"step": [], "write": [], "bytes_per_event": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for rep in range(args.reps + 1):  # the first repetition warms both up, not counted
            if rep % 2:
                a = run_trainprof(out, f"t{rep}", args.active)
                b = run_torch(out, f"p{rep}", args.active)
            else:
                b = run_torch(out, f"p{rep}", args.active)
                a = run_trainprof(out, f"t{rep}", args.active)
            if rep == 0:
                continue
            torch_gz = b["path"].with_suffix(".json.gz")
            torch_gz.write_bytes(gzip.compress(b["path"].read_bytes()))  # as use_gzip=True would
            for result, into, file in ((a, ours, a["path"]), (b, theirs, torch_gz)):
                into["step"].append(statistics.median(result["steps"]))
                into["write"].append(result["write_s"])
                into["bytes_per_event"].append(file.stat().st_size / events_in(file))
    med = {k: (statistics.median(ours[k]), statistics.median(theirs[k])) for k in ours}
    ratios = {k: a / b for k, (a, b) in med.items()}
    # The spread of the same ratio taken within each repetition: how far one run's figure moves.
    paired = {k: sorted(a / b for a, b in zip(ours[k], theirs[k], strict=True)) for k in ours}
    table = Table(
        title=f"Deep capture vs torch.profiler, {args.reps} interleaved reps, "
        f"{args.active} active steps, record_shapes + profile_memory"
    )
    for column in ("what", "trainprof", "torch.profiler", "ratio", "per rep", "target", "met"):
        table.add_column(column, justify="left" if column == "what" else "right")
    rows = [
        ("step time in active steps (ms)", "step", 1e3, STEP_RATIO_TARGET),
        ("stop-to-disk (ms)", "write", 1e3, DISK_RATIO_TARGET),
        ("bytes per event on disk (gzip)", "bytes_per_event", 1.0, None),
    ]
    for label, key, scale, target in rows:
        a, b = med[key]
        met = "-" if target is None else ("yes" if ratios[key] <= target else "no")
        table.add_row(
            label,
            f"{a * scale:.2f}",
            f"{b * scale:.2f}",
            f"{ratios[key]:.3f}",
            f"{paired[key][0]:.2f}..{paired[key][-1]:.2f}",
            "-" if target is None else f"<= {target}",
            met,
        )
    Console().print(table)
    if args.json:
        found = [
            Ratio(
                f"{label.rsplit(' (', 1)[0]}, trainprof / torch.profiler",
                ratios[key],
                target,
                None if target is None else "<=",
                note=f"{args.reps} reps ({paired[key][0]:.2f}..{paired[key][-1]:.2f} per rep), "
                f"{args.active} active steps",
            )
            for label, key, _, target in rows
        ]
        write_ratios(args.json, found, machine(), medians=med, reps=args.reps, active=args.active)


if __name__ == "__main__":
    main()
