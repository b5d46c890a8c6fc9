"""Synthetic Kineto traces of any size, for benchmarks and tests of the analysis and the dashboard.

The files have the layout torch.profiler 2.x writes for a CUDA training run of an MLP:
``ProfilerStep#N`` ranges; a DataLoader range; nested ``cpu_op`` events (``aten::linear`` ->
``aten::addmm`` ...) with ``Input Dims``, ``External id`` and ``Sequence number``; backward on its
own thread; ``cudaLaunchKernel``/``cudaMemcpyAsync``/``cudaMemsetAsync`` calls linked by
``correlation`` (and ``ac2g`` flows) to kernels, copies and memsets on three streams (compute,
copy, NCCL all-reduces); ``[memory]`` instant events; process/thread metadata. The GPU idles
while the DataLoader works (slowly every tenth step); ``loss.item()`` ends each step.

Output is deterministic for a seed (the gzip bytes too) and written step by step, so a 5M-event
file never holds more than one step's events in memory. ``--events`` is per file; ``--ranks R``
writes R files into a directory, named as the trace store names them.

    python bench/synth.py OUT_PATH --events N [--seed S] [--ranks R] [--steps K]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from profiler.events import (
    PHASE_COMPLETE,
    PHASE_INSTANT,
    PHASE_METADATA,
    TRACE_SUFFIX,
    Category,
)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/synth.py`
    sys.path.insert(0, str(REPO))

from bench.synth_model import (  # noqa: E402
    A100_SMS,
    BASE_PID,
    MIB,
    START_NS,
    Builder,
    training_step,
)

HOST = "synth"
BASE_TIME_NS = 1_766_225_600_000_000_000  # Kineto: unix time = baseTimeNanoseconds + ts
GPU_MEMORY_BYTES = 42_297_524_224  # an A100 40GB, as Kineto reports it
EVENTS_PER_STEP = 10_000  # the default step count: one per 10k events, 3 to 100


# The file: header, metadata, steps written one by one, the profiler's span, footer.


def _meta(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": PHASE_METADATA, "ts": START_NS / 1000, "pid": pid, "tid": tid,
            "args": args}  # fmt: skip


def _metadata(b: Builder) -> list[dict[str, Any]]:
    """Process and thread names and sort order, for the host process and the GPU's streams."""
    events = [
        _meta("process_name", b.pid, 0, {"name": "python3.11"}),
        _meta("process_labels", b.pid, 0, {"labels": "CPU"}),
        _meta("process_sort_index", b.pid, 0, {"sort_index": b.pid}),
        _meta("process_name", b.device, 0, {"name": "python3.11"}),
        _meta("process_labels", b.device, 0, {"labels": f"GPU {b.device}"}),
        _meta("process_sort_index", b.device, 0, {"sort_index": 5_000_000 + b.device}),
    ]
    for tid, thread in ((b.main, "python3.11"), (b.bwd, "pt_autograd_0")):
        events.append(_meta("thread_name", b.pid, tid, {"name": f"thread {tid} ({thread})"}))
        events.append(_meta("thread_sort_index", b.pid, tid, {"sort_index": tid}))
    for stream in b.stream_end:
        events.append(_meta("thread_name", b.device, stream, {"name": f"stream {stream} "}))
        events.append(_meta("thread_sort_index", b.device, stream, {"sort_index": stream}))
    return events


def _profiler_span(end_ns: int) -> list[dict[str, Any]]:
    """The ``Trace`` range over the whole window and its start marker, as Kineto ends a file."""
    start = START_NS / 1000
    return [
        {"ph": PHASE_COMPLETE, "cat": Category.TRACE.value, "name": "PyTorch Profiler (0)",
         "pid": "Spans", "tid": "PyTorch Profiler", "ts": start, "dur": end_ns / 1000 - start,
         "args": {"Op count": 0}},
        {"ph": PHASE_INSTANT, "s": "g", "name": "Iteration Start: PyTorch Profiler",
         "pid": "Traces", "tid": "Trace PyTorch Profiler", "ts": start},
    ]  # fmt: skip


def _device_properties(world_size: int) -> list[dict[str, Any]]:
    return [
        {"id": device, "name": "NVIDIA A100-SXM4-40GB", "totalGlobalMem": GPU_MEMORY_BYTES,
         "computeMajor": 8, "computeMinor": 0, "maxThreadsPerBlock": 1024,
         "maxThreadsPerMultiprocessor": 2048, "regsPerBlock": 65536, "warpSize": 32,
         "sharedMemPerBlock": 49152, "numSms": A100_SMS, "regsPerMultiprocessor": 65536,
         "sharedMemPerBlockOptin": 166912, "sharedMemPerMultiprocessor": 167936}
        for device in range(min(max(world_size, 1), 8))
    ]  # fmt: skip


def _header(rank: int, world_size: int) -> bytes:
    """The document up to ``"traceEvents": [``.

    ``json.dumps``'s default separators write ``"rank": 0`` with the space HTA's rank pattern
    needs; ``distributedInfo`` comes before any event, so its rank is the first match.
    """
    info = {"backend": "nccl", "rank": rank, "world_size": world_size}
    devices = _device_properties(world_size)
    fields = {"schemaVersion": 1, "deviceProperties": devices, "distributedInfo": info}
    body = ",\n".join(f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in fields.items())
    return f'{{\n{body},\n  "traceEvents": [\n'.encode()


def _footer(trace_name: str, base_time_ns: int = BASE_TIME_NS) -> bytes:
    tail = {"displayTimeUnit": "ms", "baseTimeNanoseconds": base_time_ns, "traceName": trace_name}
    body = ",\n".join(f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in tail.items())
    return f"\n  ],\n{body}\n}}\n".encode()


class _EventWriter:
    """Appends events to the open ``traceEvents`` array, comma-separated, and counts them."""

    def __init__(self, out: gzip.GzipFile) -> None:
        self.out = out
        self.count = 0

    def write(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        text = orjson.dumps(events)[1:-1]  # the array's items, without its brackets
        self.out.write(b",\n" + text if self.count else text)
        self.count += len(events)


@contextmanager
def _atomic_gzip(path: Path) -> Iterator[gzip.GzipFile]:
    """A gzip stream that appears at ``path`` only once complete (fixed header: same bytes)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile("", "wb", 1, raw, mtime=0) as out:
            yield out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Plan:
    """How a file of ``events`` events is laid out.

    Attributes:
        steps: ``ProfilerStep`` ranges.
        layers: MLP layers per step (forward, backward and optimizer work per layer).
        fillers: per step, the one-event ops that make the total exact.
    """

    steps: int
    layers: int
    fillers: tuple[int, ...]


def _events_per_step(layers: int) -> int:
    builder = Builder(random.Random(0), 0, 1)
    training_step(builder, 0, layers, 0)
    return len(builder.events)


def fixed_events() -> int:
    """Events in every file besides its steps (metadata and the profiler's span)."""
    return len(_metadata(Builder(random.Random(0), 0, 1))) + len(_profiler_span(START_NS))


def plan_trace(events: int, steps: int | None = None) -> Plan:
    """Steps and layers for a file of exactly ``events`` events.

    Args:
        events: the event count wanted.
        steps: ``ProfilerStep`` count; default one per 10k events, 3 to 100.

    Raises:
        ValueError: too few events for one layer per step.
    """
    if steps is None:
        steps = min(max(round(events / EVENTS_PER_STEP), 3), 100)
    one, two = _events_per_step(1), _events_per_step(2)
    per_layer, per_step = two - one, one - (two - one)
    budget = (events - fixed_events()) // max(steps, 1)
    layers = (budget - per_step) // per_layer
    if steps < 1 or layers < 1:
        least = fixed_events() + max(steps, 1) * one
        raise ValueError(f"{events} events are too few for {steps} steps (need >= {least})")
    spare = events - fixed_events() - steps * (per_step + layers * per_layer)
    fillers = tuple(spare // steps + (step < spare % steps) for step in range(steps))
    return Plan(steps=steps, layers=layers, fillers=fillers)


@dataclass(frozen=True)
class Timing:
    """How one rank of a synchronised run differs from the others (see `write_ranks`).

    Attributes:
        seed: the random durations' seed (shared by ranks that run in lockstep).
        slow_us: extra DataLoader time per step (the straggler).
        wait_us: how much longer each step's first all-reduce takes (the ranks waiting for it).
        skew_ns: added to ``baseTimeNanoseconds``: the rank's host clock is off by this much.
    """

    seed: str
    slow_us: float = 0.0
    wait_us: float = 0.0
    skew_ns: int = 0


def write_synthetic_trace(
    path: str | Path,
    events: int,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    steps: int | None = None,
    timing: Timing | None = None,
) -> int:
    """Write a synthetic Kineto trace (gzip JSON) of ``events`` events to ``path``.

    Args:
        path: the file to write (replaced atomically).
        events: how many trace events it holds.
        seed: the random durations' seed; the same arguments give the same bytes.
        rank: the rank in ``distributedInfo`` (and the GPU, ``rank % 8``).
        world_size: ranks in the job (all-reduces get slower beyond one).
        steps: ``ProfilerStep`` count (see `plan_trace`).
        timing: a rank of a synchronised run (`write_ranks`); ``seed`` is then unused.

    Returns:
        The number of events written.
    """
    path = Path(path)
    plan = plan_trace(events, steps)
    timing = timing or Timing(seed=f"{seed}:{rank}")
    rng = random.Random(timing.seed)
    builder = Builder(rng, rank, world_size, slow_us=timing.slow_us, wait_us=timing.wait_us)
    with _atomic_gzip(path) as out:
        out.write(_header(rank, world_size))
        writer = _EventWriter(out)
        writer.write(_metadata(builder))
        for number, filler in enumerate(plan.fillers):
            training_step(builder, number, plan.layers, filler)
            writer.write(builder.take())
        writer.write(_profiler_span(builder.now[builder.main]))
        out.write(_footer(path.name, BASE_TIME_NS + timing.skew_ns))
    return writer.count


def trace_file_name(rank: int) -> str:
    """``<host>_<pid>.<unix_ms>.pt.trace.json.gz``: how the trace store names a rank's file."""
    unix_ms = (BASE_TIME_NS + START_NS) // 1_000_000
    return f"{HOST}_{BASE_PID + rank}.{unix_ms}{TRACE_SUFFIX}"


def write_synthetic_run(
    run_dir: str | Path, events: int, *, seed: int = 0, ranks: int = 1, steps: int | None = None
) -> list[Path]:
    """One synthetic trace per rank in ``run_dir`` (created), named as the trace store does.

    Returns:
        The files written, in rank order.
    """
    return _write_run(Path(run_dir), events, ranks, steps, lambda r: Timing(seed=f"{seed}:{r}"))


def write_ranks(
    run_dir: str | Path, events: int, *, ranks: int, slow_rank: int | None = None,
    slow_ms: float = 5.0, seed: int = 0, steps: int | None = None,
) -> list[Path]:  # fmt: skip
    """A synchronous data-parallel run: one file per rank whose collectives end together.

    Every rank draws the same durations (one seed), so their steps and all-reduces line up;
    ``slow_rank`` spends ``slow_ms`` more in its DataLoader each step, and every other rank's
    first all-reduce of the step waits that long for it. Each rank's host clock is skewed by up
    to +-1 ms (``baseTimeNanoseconds``), for the cross-rank analysis to align.

    Returns:
        The files written, in rank order.
    """

    def timing(rank: int) -> Timing:
        slow = rank == slow_rank
        return Timing(
            seed=str(seed),
            slow_us=slow_ms * 1000 if slow else 0.0,
            wait_us=slow_ms * 1000 if slow_rank is not None and not slow else 0.0,
            skew_ns=(rank * 7_919 % 2_001 - 1_000) * 1_000,
        )

    return _write_run(Path(run_dir), events, ranks, steps, timing)


def _write_run(
    run_dir: Path, events: int, ranks: int, steps: int | None, timing: Callable[[int], Timing]
) -> list[Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = [run_dir / trace_file_name(rank) for rank in range(ranks)]
    for rank, path in enumerate(paths):
        write_synthetic_trace(
            path, events, rank=rank, world_size=ranks, steps=steps, timing=timing(rank)
        )
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the file, or with --ranks the run directory")
    parser.add_argument("--events", type=int, required=True, help="events per file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranks", type=int, default=None, help="write one file per rank")
    parser.add_argument("--steps", type=int, default=None, help="ProfilerStep count")
    args = parser.parse_args()
    if args.ranks is None and not args.out.is_dir():
        count = write_synthetic_trace(args.out, args.events, seed=args.seed, steps=args.steps)
        print(f"{args.out}: {count:,} events, {args.out.stat().st_size / MIB:.1f} MiB")
        return
    paths = write_synthetic_run(
        args.out, args.events, seed=args.seed, ranks=args.ranks or 1, steps=args.steps
    )
    for path in paths:
        print(f"{path}: {args.events:,} events, {path.stat().st_size / MIB:.1f} MiB")


if __name__ == "__main__":
    main()
