"""The built-in demo: a small CNN trained on synthetic images with a deliberately slow input
pipeline, profiled into the trace store. Nothing is downloaded."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import profiler
from profiler.events import META_DIR, RUN_META_FILE

IMAGE_SHAPE = (3, 32, 32)
CLASSES = 10
# Per-sample "decode and augment" cost: at batch 16 this is ~16 ms of data wait per step against
# a few ms of compute on a laptop CPU, so the run is plainly input-bound.
SLOW_SAMPLE_S = 0.001
DEMO_MARK = {"created_by": "trainprof demo"}


class SlowSyntheticImages(Dataset[tuple[torch.Tensor, int]]):
    """Random images whose loading costs ``delay_s`` per sample, like an expensive decode."""

    def __init__(self, size: int, *, delay_s: float = SLOW_SAMPLE_S, seed: int = 0) -> None:
        self.size = size
        self.delay_s = delay_s
        self.seed = seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(self.seed + index)
        time.sleep(self.delay_s)
        image = torch.randn(IMAGE_SHAPE, generator=generator)
        return image, index % CLASSES


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
    loader = DataLoader(SlowSyntheticImages(steps * batch_size), batch_size=batch_size)
    wait = min(5, max(steps // 4, 0))
    schedule = profiler.schedule(wait=wait, warmup=1, active=3, repeat=2)
    with profiler.profile(
        model,
        run_name=run_name,
        out_dir=out_dir,
        schedule=schedule,
        record_shapes=True,
        profile_memory=True,
        metadata=DEMO_MARK,
    ) as prof:
        for images, labels in prof.loader(loader):
            loss = nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            prof.step()
            if on_step is not None:
                on_step(prof.step_num)
    return prof
