"""Deep capture against torch.profiler on the same loop, side by side in one process.

For every case (a setting a user picks, on a model), each repetition runs trainprof's
``profile`` and ``torch.profiler.profile`` with the same schedule and Kineto options, one right
after the other, the order alternating between repetitions (the same model and data):

- step time in active steps: trainprof (Kineto with the same options, plus module ranges and
  memory counters) against torch.profiler; target ratio <= 1.05;
- stop-to-disk: trainprof's window write (Kineto export, splice, gzip, rename) against torch's
  own ``export_chrome_trace`` of the same kind of window; target ratio <= 1.5;
- bytes per event on disk: trainprof's file against torch's gzip file (tensorboard_trace_handler).

The settings are the defaults (no Kineto option on: the first rows), then ``record_shapes``,
``profile_memory`` and ``with_stack``, each alone; the models are the small-op MLP and a small CNN.
Cases run in a rotated order within each repetition.

    python bench/capture.py [--quick | --reps N] [--active N] [--settings ...] [--models ...]
                            [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

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
from bench.overhead import cnn_model, mlp_model  # noqa: E402

# Where the session looks ``write_window`` up at each window (its module's global): the bench
# times the whole call there.
WRITER_MODULES = ("profiler.capture.captures", "profiler.capture.session")

STEP_RATIO_TARGET = 1.05
DISK_RATIO_TARGET = 1.5
QUICK_REPS, QUICK_ACTIVE = 3, 6  # --quick: every case in ~15 s; the full run has 7 reps of 10
DEFAULT_OPTIONS = {"record_shapes": False, "profile_memory": False, "with_stack": False}
# The settings a user picks: the defaults first, then each Kineto option alone.
SETTINGS: dict[str, dict[str, bool]] = {
    "defaults": DEFAULT_OPTIONS,
    **{option: {**DEFAULT_OPTIONS, option: True} for option in DEFAULT_OPTIONS},
}


Loop = tuple[nn.Module, Callable[[], None]]  # a model and one training step on it
Side = Literal["trainprof", "torch"]  # whose profiler
# wall: time.perf_counter. cpu: time.process_time, the CPU time of every thread of the process:
# on a machine whose other work keeps more threads runnable than it has cores, the time either
# profiler spends descheduled swamps a 5% difference; CPU time leaves that out (it still counts a
# parallel gzip's threads, so it never flatters trainprof's write).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
# Where trainprof's stop-to-disk goes, timed inside the write: (stage, where, attribute). "where"
# is the writer module (write_window's own globals) or a class it calls; a name that is gone
# leaves its stage out, and what no stage covers is "other" (the clock mapping, the scratch
# file's path and removal). "deflate start" is the deflate thread's start and the wait for it to
# take its job (trace_store.DeflateAhead). "our events" includes their encoding
# (window_events returns their JSON); "gzip + write" no longer rewrites run.json or the rank
# record (the session's ticker lists the trace in them within a second).
STAGES: tuple[tuple[str, str, str], ...] = (
    ("Kineto export", "torch", "export_chrome_trace"),
    ("read back", "writer", "read_text"),
    ("splice", "writer", "Splice"),
    ("backward lane", "writer", "backward_starts"),
    ("backward lane", "record", "backward_ranges"),
    ("our events", "writer", "window_events"),
    ("deflate start", "writer", "DeflateAhead"),
    ("gzip + write", "store", "write_trace"),
)


def make_loop(seed: int = 0) -> Loop:
    """The small-op MLP: 8 x (Linear(256, 256) + ReLU), batch 64, SGD."""
    torch.manual_seed(seed)
    model = mlp_model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 256), torch.randint(0, 256, (64,))
    return model, _training_step(model, opt, x, y)


def make_cnn_loop(seed: int = 0) -> Loop:
    """A small CNN: 2 x (Conv 3x3 + BatchNorm + ReLU + MaxPool) + Linear, batch 32 of 3x32x32."""
    torch.manual_seed(seed)
    model = cnn_model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    return model, _training_step(model, opt, x, y)


def _training_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], None]:
    def step() -> None:
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


MODELS: dict[str, Callable[[], Loop]] = {"mlp": make_loop, "cnn": make_cnn_loop}


def writer_module() -> Any:
    """The module whose ``write_window`` the session calls (it has moved between modules)."""
    for name in WRITER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "write_window"):
            return module
    raise RuntimeError(f"no write_window in any of {WRITER_MODULES}")


def open_profiler(
    side: Side,
    model: nn.Module,
    name: str,
    active: int,
    options: Mapping[str, bool],
    out: Path,
    *,
    activities: Sequence[tp.ProfilerActivity] = (tp.ProfilerActivity.CPU,),
    on_trace_ready: Callable[[tp.profile], None] | None = None,
) -> Any:
    """trainprof's or torch.profiler's session over wait=1, warmup=1, ``active``, with the same
    Kineto options, not entered. trainprof writes its run ``name`` under ``out``; torch's window
    goes to ``on_trace_ready``, by default exported to ``out / f"{name}.pt.trace.json"``."""
    if side == "trainprof":
        schedule = profiler.schedule(wait=1, warmup=1, active=active)
        return profiler.profile(
            model,
            out_dir=out,
            run_name=name,
            schedule=schedule,
            system_metrics=False,
            **cast(dict[str, Any], options),  # (Kineto's switches, all keyword arguments)
        )

    def export(prof: tp.profile) -> None:
        prof.export_chrome_trace(str(out / f"{name}.pt.trace.json"))

    return tp.profile(
        activities=list(activities),
        schedule=tp.schedule(wait=1, warmup=1, active=active),
        on_trace_ready=export if on_trace_ready is None else on_trace_ready,
        record_shapes=options["record_shapes"],
        profile_memory=options["profile_memory"],
        with_stack=options["with_stack"],
    )


def run_trainprof(
    out: Path,
    name: str,
    active: int,
    make: Callable[[], Loop] = make_loop,
    options: Mapping[str, bool] = DEFAULT_OPTIONS,
    clock: str = "wall",
) -> dict[str, Any]:
    """trainprof's deep window over ``active`` steps of a fresh ``make()`` loop."""
    model, step = make()
    writes: list[float] = []
    capture_session = writer_module()
    original = capture_session.write_window

    def timed_write(*args: Any, **kwargs: Any) -> Path:
        start = CLOCKS[clock]()
        path = original(*args, **kwargs)
        writes.append(CLOCKS[clock]() - start)
        return path

    capture_session.write_window = timed_write
    steps: list[float] = []
    stages: dict[str, float] = {}
    try:
        with (
            open_profiler("trainprof", model, name, active, options, out) as prof,
            stage_timers(original, stages, CLOCKS[clock]),
        ):
            for index in range(2 + active + 1):
                start = CLOCKS[clock]()
                step()
                if 2 <= index < 2 + active - 1:  # active, not the one whose step() writes
                    steps.append(CLOCKS[clock]() - start)
                prof.step()
    finally:
        capture_session.write_window = original
    (path,) = prof.trace_files
    return {"steps": steps, "write_s": writes[0], "path": path, "stages": stages}


@contextlib.contextmanager
def stage_timers(
    writer: Callable[..., Any], into: dict[str, float], clock: Callable[[], float]
) -> Iterator[None]:
    """Time each of :data:`STAGES` into ``into`` (seconds, summed per stage) while inside.

    A wrapper costs ~1 us a call, a dozen calls a window: noise beside a write of milliseconds.
    ``writer`` is the real ``write_window``, whose module globals hold the helpers it calls.
    """
    owners: dict[str, Any] = {
        "torch": tp.profile,
        "writer": _Namespace(writer.__globals__),
        "record": writer.__globals__.get("WindowRecord"),  # the type of its ``record``
        "store": profiler.store.RunStore,
    }
    patched: list[tuple[Any, str, Any]] = []
    for stage, where, attribute in STAGES:
        owner = owners[where]
        real = None if owner is None else getattr(owner, attribute, None)
        if real is not None:
            patched.append((owner, attribute, real))
            setattr(owner, attribute, _timed(real, stage, into, clock))
    try:
        yield
    finally:
        for owner, attribute, real in reversed(patched):
            setattr(owner, attribute, real)


class _Namespace:
    """A module's globals as attributes (the writer looks its helpers up there at each call)."""

    def __init__(self, names: dict[str, Any]) -> None:
        object.__setattr__(self, "_names", names)

    def __getattr__(self, name: str) -> Any:
        return self._names.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._names[name] = value


def _timed(
    real: Callable[..., Any], stage: str, into: dict[str, float], clock: Callable[[], float]
) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return real(*args, **kwargs)
        finally:
            into[stage] = into.get(stage, 0.0) + clock() - start

    return timed


def run_torch(
    out: Path,
    name: str,
    active: int,
    make: Callable[[], Loop] = make_loop,
    activities: Sequence[tp.ProfilerActivity] = (tp.ProfilerActivity.CPU,),
    options: Mapping[str, bool] = DEFAULT_OPTIONS,
    clock: str = "wall",
) -> dict[str, Any]:
    """torch.profiler over the same schedule and options, exported by ``export_chrome_trace``."""
    model, step = make()
    writes: list[float] = []
    files: list[Path] = []

    def export(prof: tp.profile) -> None:
        path = out / f"{name}.pt.trace.json"
        start = CLOCKS[clock]()
        prof.export_chrome_trace(str(path))
        writes.append(CLOCKS[clock]() - start)
        files.append(path)

    steps: list[float] = []
    torch_profiler = open_profiler(
        "torch", model, name, active, options, out, activities=activities, on_trace_ready=export
    )
    with torch_profiler as prof:
        for index in range(2 + active + 1):
            start = CLOCKS[clock]()
            step()
            if 2 <= index < 2 + active - 1:
                steps.append(CLOCKS[clock]() - start)
            prof.step()
    return {"steps": steps, "write_s": writes[0], "path": files[0]}


def events_in(path: Path) -> int:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return len(orjson.loads(data)["traceEvents"])


KEYS = ("step", "write", "bytes_per_event")


@dataclass
class Case:
    """One setting on one model, and what each repetition measured for either side."""

    setting: str
    model: str
    ours: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KEYS})
    theirs: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KEYS})
    stages: list[dict[str, float]] = field(default_factory=list)  # trainprof's, per repetition

    def stage_medians(self) -> dict[str, float]:
        """Each stage's median over repetitions (seconds), then "other": the rest of the write."""
        names = list(dict.fromkeys(stage for stage, _, _ in STAGES))
        found = [name for name in names if any(name in rep for rep in self.stages)]
        medians = {
            name: statistics.median(rep.get(name, 0.0) for rep in self.stages) for name in found
        }
        rest = [
            write - sum(rep.values())
            for write, rep in zip(self.ours["write"], self.stages, strict=True)
        ]
        medians["other"] = statistics.median(rest) if rest else 0.0
        return medians

    @property
    def label(self) -> str:
        return f"{self.setting}, {self.model}"

    def median(self, key: str) -> tuple[float, float]:
        """The medians over repetitions, trainprof's and torch.profiler's."""
        return statistics.median(self.ours[key]), statistics.median(self.theirs[key])

    def ratio(self, key: str) -> float:
        """The ratio of the two medians."""
        ours, theirs = self.median(key)
        return ours / theirs

    def per_rep(self, key: str) -> tuple[float, float]:
        """The lowest and highest ratio taken within one repetition: how far one run moves."""
        paired = [a / b for a, b in zip(self.ours[key], self.theirs[key], strict=True)]
        return min(paired), max(paired)


def measure_once(
    case: Case, out: Path, rep: int, active: int, *, keep: bool, clock: str = "wall"
) -> None:
    """One repetition of ``case``: both profilers, the order alternating with ``rep``."""
    make, options = MODELS[case.model], SETTINGS[case.setting]
    name = f"{case.setting}-{case.model}-{rep}"
    runs = [
        lambda: run_trainprof(out, f"t-{name}", active, make, options, clock),
        lambda: run_torch(out, f"p-{name}", active, make, options=options, clock=clock),
    ]
    if rep % 2 == 0:
        runs.reverse()
    results = [run() for run in runs]
    a, b = results if rep % 2 else results[::-1]
    if not keep:
        return
    torch_gz = b["path"].with_suffix(".json.gz")
    torch_gz.write_bytes(gzip.compress(b["path"].read_bytes()))  # as use_gzip=True would
    for result, into, file in ((a, case.ours, a["path"]), (b, case.theirs, torch_gz)):
        into["step"].append(statistics.median(result["steps"]))
        into["write"].append(result["write_s"])
        into["bytes_per_event"].append(file.stat().st_size / events_in(file))
    case.stages.append(a["stages"])


def measure(cases: Sequence[Case], reps: int, active: int, clock: str = "wall") -> None:
    """Every case over ``reps`` repetitions, after one that warms everything up."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for rep in range(reps + 1):  # the first repetition is not counted
            shift = rep % len(cases)
            for case in [*cases[shift:], *cases[:shift]]:
                measure_once(case, out, rep, active, keep=rep > 0, clock=clock)


ROWS = (  # (what, key, target)
    ("step time in active steps", "step", STEP_RATIO_TARGET),
    ("stop-to-disk", "write", DISK_RATIO_TARGET),
)


def print_table(cases: Sequence[Case], reps: int, active: int, clock: str = "wall") -> None:
    table = Table(
        title=f"Deep capture vs torch.profiler, {reps} interleaved reps, {active} active steps, "
        f"{clock} clock"
    )
    columns: tuple[str, ...] = ("setting", "model", "step ms", "step ratio", "per rep", "met")
    columns += ("write ms", "disk ratio", "per rep", "met", "B/event")
    for column in columns:
        table.add_column(column, justify="left" if column in {"setting", "model"} else "right")
    for case in cases:
        cells = [case.setting, case.model]
        for _, key, target in ROWS:
            ours, theirs = case.median(key)
            low, high = case.per_rep(key)
            ratio = case.ratio(key)
            cells += [
                f"{ours * 1e3:.2f} / {theirs * 1e3:.2f}",
                f"{ratio:.3f}",
                f"{low:.2f}..{high:.2f}",
                f"{'yes' if ratio <= target else 'no'} (<= {target})",
            ]
        ours, theirs = case.median("bytes_per_event")
        cells.append(f"{ours:.1f} / {theirs:.1f}")
        table.add_row(*cells)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print("step ms, write ms, B/event: trainprof / torch.profiler (medians over repetitions)")
    print_stages(cases, clock)


def print_stages(cases: Sequence[Case], clock: str = "wall") -> None:
    """Where trainprof's stop-to-disk went, stage by stage, beside torch's export."""
    if not any(case.stages for case in cases):
        return
    medians = [case.stage_medians() for case in cases]
    names = list(dict.fromkeys(name for found in medians for name in found))
    table = Table(title=f"trainprof's stop-to-disk by stage, ms ({clock} clock, medians)")
    for column in ("setting", "model", *names, "write", "torch's export"):
        table.add_column(column, justify="left" if column in {"setting", "model"} else "right")
    for case, found in zip(cases, medians, strict=True):
        ours, theirs = case.median("write")
        cells = [f"{found[name] * 1e3:.2f}" if name in found else "-" for name in names]
        table.add_row(case.setting, case.model, *cells, f"{ours * 1e3:.2f}", f"{theirs * 1e3:.2f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print(
        "gzip + write: Kineto's events are deflated on a second CPU while our events are worked "
        "out; this is what is left of it, with the atomic write (run.json is the ticker's)"
    )


def ratios(cases: Sequence[Case], reps: int, active: int, clock: str = "wall") -> list[Ratio]:
    """Step and stop-to-disk ratios of every case with their targets, then bytes per event."""
    found = []
    for case in cases:
        for what, key, target in ROWS:
            low, high = case.per_rep(key)
            note = f"{reps} reps ({low:.2f}..{high:.2f} per rep), {active} active steps"
            note += "" if clock == "wall" else f", {clock} time"
            name = f"{what}, trainprof / torch.profiler, {case.label}"
            found.append(Ratio(name, case.ratio(key), target, "<=", note=note))
    for case in cases:
        if case.setting == "defaults":
            name = f"bytes per event on disk (gzip), trainprof / torch.profiler, {case.label}"
            found.append(Ratio(name, case.ratio("bytes_per_event")))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--active", type=int, default=10)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_REPS} reps, {QUICK_ACTIVE} active"
    )
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall", help="see CLOCKS")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.reps, args.active = QUICK_REPS, QUICK_ACTIVE
    torch.set_num_threads(1)
    cases = [Case(setting, model) for setting in args.settings for model in args.models]
    measure(cases, args.reps, args.active, args.clock)
    print_table(cases, args.reps, args.active, args.clock)
    if args.json:
        medians = {case.label: {key: case.median(key) for key in KEYS} for case in cases}
        stages = {case.label: case.stage_medians() for case in cases if case.stages}
        found = ratios(cases, args.reps, args.active, args.clock)
        write_ratios(
            args.json,
            found,
            machine(),
            medians=medians,
            stages=stages,
            reps=args.reps,
            active=args.active,
            clock=args.clock,
        )


if __name__ == "__main__":
    main()
