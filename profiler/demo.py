"""The built-in demo: a small CNN trained on synthetic images with a deliberately slow input
pipeline, profiled into the trace store. Nothing is downloaded."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import profiler
from profiler.events import META_DIR, RUN_META_FILE

IMAGE_SHAPE = (3, 32, 32)
CLASSES = 10
# Each batch is ready this long after the loader asks for it, like an expensive decode: ~20 ms of
# data wait per step against a few ms of compute on a laptop CPU, so the run is plainly
# input-bound. The loader makes the batch and then sleeps until that deadline: a busy machine
# stretches CPU work, not a sleep to a fixed time, so the run stays input-bound under load.
BATCH_LATENCY_NS = 20_000_000
# One intra-op thread: the model is too small to gain from more, and on a busy machine torch's
# threads wait on each other (a step took 40-90 ms with two threads, 22-27 ms with one, on a
# 2-core machine with other work running), which would bury the input wait the demo shows.
DEMO_THREADS = 1
DEMO_MARK = {"created_by": "trainprof demo"}


class SlowSyntheticBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Batches of random images, each ready ``latency_ns`` after it is asked for.

    Index ``i`` is the ``i``-th batch (use with ``DataLoader(batch_size=None)``).

    Args:
        batches: how many batches.
        batch_size: images per batch.
        latency_ns: from the request to the batch being ready.
        seed: the first batch's generator seed.
        clock: a monotonic clock in ns (for tests).
        sleep: sleeps for seconds (for tests).
    """

    def __init__(
        self,
        batches: int,
        *,
        batch_size: int = 16,
        latency_ns: int = BATCH_LATENCY_NS,
        seed: int = 0,
        clock: Callable[[], int] = time.perf_counter_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.batches = batches
        self.batch_size = batch_size
        self.latency_ns = latency_ns
        self.seed = seed
        self._clock = clock
        self._sleep = sleep

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.batches:
            raise IndexError(index)
        deadline = self._clock() + self.latency_ns
        generator = torch.Generator().manual_seed(self.seed + index)
        images = torch.randn((self.batch_size, *IMAGE_SHAPE), generator=generator)
        first = index * self.batch_size
        labels = torch.arange(first, first + self.batch_size) % CLASSES
        self._wait_until(deadline)
        return images, labels

    def _wait_until(self, deadline_ns: int) -> None:
        # A loop: a sleep may end early (a signal), and the batch is never early.
        while (left := deadline_ns - self._clock()) > 0:
            self._sleep(left / 1e9)


class SmallCNN(nn.Module):
    """Two conv blocks and a classifier: enough modules for a module tree worth looking at."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count at ``threads``, then put it back."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def remove_previous_run(run_dir: Path) -> None:
    """Delete an earlier demo run at ``run_dir``; refuse anything else.

    Raises:
        FileExistsError: ``run_dir`` exists and is not a run this demo made.
    """
    if not run_dir.exists():
        return
    meta_path = run_dir / META_DIR / RUN_META_FILE
    try:
        metadata = orjson.loads(meta_path.read_bytes())["config"]["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        metadata = None
    if metadata != DEMO_MARK:
        raise FileExistsError(
            f"{run_dir} exists and is not a run made by `trainprof demo`; not replacing it "
            "(choose another --run-name or remove it)"
        )
    shutil.rmtree(run_dir)


def run_demo(
    *,
    steps: int = 30,
    out_dir: str | Path = "traces",
    run_name: str = "demo",
    batch_size: int = 16,
    on_step: Callable[[int], None] | None = None,
) -> profiler.Profile:
    """Train :class:`SmallCNN` for ``steps`` steps under the profiler and return the session.

    Two deep-capture windows of three steps each (the first after a short warm-up), light
    metrics for every step.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(0)
    remove_previous_run(Path(out_dir) / run_name)
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(SlowSyntheticBatches(steps, batch_size=batch_size), batch_size=None)
    wait = min(5, max(steps // 4, 0))
    schedule = profiler.schedule(wait=wait, warmup=1, active=3, repeat=2)
    with (
        intra_op_threads(DEMO_THREADS),
        profiler.profile(
            model,
            run_name=run_name,
            out_dir=out_dir,
            schedule=schedule,
            record_shapes=True,
            profile_memory=True,
            metadata=DEMO_MARK,
        ) as prof,
    ):
        for images, labels in prof.loader(loader):
            loss = nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            prof.step()
            if on_step is not None:
                on_step(prof.step_num)
    return prof
