"""Helpers for the capture tests that run children, tick heartbeats by hand and read runs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
CHILD = ROOT / "tests" / "capture" / "child_run.py"
# Generous: a child imports torch first, which takes seconds on a loaded 2-core machine.
CHILD_TIMEOUT_S = 120


def child_command(config: dict[str, Any]) -> list[str]:
    """The command line of a child run (see child_run.py for the keys of ``config``)."""
    return [sys.executable, str(CHILD), json.dumps(config)]


def run_child(config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run a child to its end."""
    return subprocess.run(
        child_command(config),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )


def start_child(config: dict[str, Any]) -> subprocess.Popen[str]:
    """Start a child that prints ``ready`` at ``config["ready_after"]`` and waits for stdin."""
    child = subprocess.Popen(
        child_command(config),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()  # blocks until the child is inside its loop
    if line.strip() != "ready":
        child.kill()
        _, err = child.communicate(timeout=CHILD_TIMEOUT_S)
        raise AssertionError(f"child did not get ready: {line!r}\n{err[-3000:]}")
    return child


def summary(stdout: str) -> dict[str, Any]:
    """The JSON line a child prints last."""
    return json.loads(stdout.strip().splitlines()[-1])


def meta_of(run_dir: Path) -> dict[str, Any]:
    """A run's run.json."""
    return orjson.loads((run_dir / "meta" / "run.json").read_bytes())


def tiny_loop(prof: Any, steps: int, model: nn.Module | None = None) -> None:
    """A few steps of a one-layer model."""
    model = model or nn.Linear(4, 2)
    for _ in range(steps):
        model(torch.randn(2, 4)).sum().backward()
        prof.step()


class ManualTicks:
    """A heartbeat's event that the test ticks by hand: ``wait`` returns at each tick."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ticks = 0
        self._waits = 0
        self._set = False

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            self._waits += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._ticks > 0 or self._set)
            if self._set:
                return True
            self._ticks -= 1
            return False

    def set(self) -> None:
        with self._cond:
            self._set = True
            self._cond.notify_all()

    def tick_and_wait(self) -> None:
        """One beat, returning once it is done (the thread waits again after a beat)."""
        with self._cond:
            self._cond.wait_for(lambda: self._waits >= 1)
            waits = self._waits
            self._ticks += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._waits > waits or self._set)
