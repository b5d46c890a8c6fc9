"""Shared fixtures: reference traces, a tiny training loop, and a guard that nothing leaks."""

from __future__ import annotations

import gzip
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

# Real GPU traces from other projects, copied into the repository (origin and licence in
# tests/data/README.md) so a clone's tests stand alone.
REFERENCE_TRACES = Path(__file__).resolve().parent / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGINT Python's own handler when the suite was started with it ignored.

    A shell without job control starts a background job (``cmd &`` in a script, ``nohup``) with
    SIGINT ignored, and every process started from it inherits that. The signal tests check what
    a user's terminal gives a training job (Ctrl+C raising KeyboardInterrupt), so they start
    from Python's default; the profiler leaving an ignored signal ignored has its own test.
    """
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `cuda` tests where no GPU is present (they run wherever one is)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# Loading a reference trace caches its tables beside it: the run removes what it added.
_REFERENCE_CACHE = REFERENCE_TRACES / "hta" / "meta"
_REFERENCE_CACHE_EXISTED = pytest.StashKey[bool]()


def _xdist_worker(config: pytest.Config) -> bool:
    """Whether this process is one of pytest-xdist's workers (they carry ``workerinput``)."""
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_REFERENCE_CACHE_EXISTED] = _REFERENCE_CACHE.exists()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Leave the reference folder holding only the traces. Under pytest-xdist only the controller
    removes the cache, once every worker is done: a worker that finished first would pull it from
    under another still reading it."""
    if _xdist_worker(session.config) or session.config.stash[_REFERENCE_CACHE_EXISTED]:
        return
    shutil.rmtree(_REFERENCE_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_profiler_left_behind() -> Iterator[None]:
    """Every test must leave no profiler running, no global hook and no sampler thread."""
    yield
    import torch
    from torch.optim import optimizer

    assert not torch.autograd._profiler_enabled(), "a Kineto session is still running"
    assert not optimizer._global_optimizer_pre_hooks, "an optimizer pre-hook was left behind"
    assert not optimizer._global_optimizer_post_hooks, "an optimizer post-hook was left behind"
    alive = [t.name for t in threading.enumerate() if t.name.startswith("trainprof")]
    assert not alive, f"threads left running: {alive}"


@pytest.fixture(autouse=True)
def browser_available(request: pytest.FixtureRequest) -> None:
    """Skip ``browser`` tests where no browser is installed; fail them when ``CI`` is set."""
    if request.node.get_closest_marker("browser") is None:
        return
    from tests.dashboard.conftest import missing_browser

    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def reference_traces() -> Path:
    """The reference GPU traces from other projects (``tests/data``)."""
    return REFERENCE_TRACES


def read_trace(path: Path) -> dict[str, Any]:
    """A gzip Chrome trace file as a dict."""
    return orjson.loads(gzip.decompress(path.read_bytes()))


def read_steps(path: Path) -> list[dict[str, Any]]:
    """Every line of a steps.<rank>.jsonl file."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def every_step_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Time the forward/backward/optimizer split on every step, however short the steps are."""
    from profiler.capture import step_metrics

    monkeypatch.setattr(step_metrics, "PHASE_COST_NS", 0)


@pytest.fixture
def train(tmp_path: Path) -> Callable[..., Any]:
    """Run a small real training loop under the profiler and return the session.

    Keyword arguments go to ``profiler.profile``; ``steps`` sets the number of steps and
    ``fail_at`` raises RuntimeError("boom") inside that step.
    """
    import torch
    from torch import nn

    import profiler

    def run(steps: int = 6, fail_at: int | None = None, loader: Any = None, **kwargs: Any) -> Any:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.BatchNorm2d(4),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 5),
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        data = [(torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))) for _ in range(steps)]
        kwargs.setdefault("schedule", profiler.schedule(wait=1, warmup=1, active=2))
        kwargs.setdefault("system_metrics", False)
        kwargs.setdefault("out_dir", tmp_path / "traces")  # never the checkout's traces/
        with profiler.profile(model, **kwargs) as prof:
            for step, (x, y) in enumerate(prof.loader(loader if loader is not None else data)):
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad()
                if step == fail_at:
                    raise RuntimeError("boom")
                prof.step()
        return prof

    return run
