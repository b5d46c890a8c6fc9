"""A small training run under the profiler in a process of its own, for tests that signal it,
kill it, fill its disk or nest profilers: if torch crashes, only this process goes.

Usage: ``python tests/capture/child_run.py '<json>'`` from the repository root, with keys:

- ``out``, ``run``: the trace store root and run name; ``steps`` (default 10);
- ``schedule``: ``[wait, warmup, active, repeat]``, or null for light metrics only (absent:
  the default schedule, a window over steps 2-4);
- ``ready_after``: after that many steps print ``ready`` and wait for a line on stdin (the
  parent signals the process meanwhile); ``fill_after``: after that many steps fill the
  disk under ``out`` (to the last byte) with ``out/filler``;
- ``fault``: ``"enospc-trace"`` makes every trace write fail with ENOSPC; ``"sigint-in-window"``
  sends the process SIGINT from inside the first window's write (inside Kineto's callback);
- ``flush_every_step``: hand each step to the step log at once (not once a second);
- ``until_stdin``: print ``ready`` at ``ready_after`` but go on training (``step_sleep``
  seconds a step, up to ``steps``) until a line arrives on stdin;
- ``handler``: ``"flag"`` installs a Python SIGTERM handler first, which ends the loop;
- ``nest``: ``"ours"`` starts a second trainprof session inside, ``"torch"`` runs inside a
  ``torch.profiler.profile``; ``leak``: return without ``stop()``.

The last line printed is JSON: ``{"steps": <steps trained>, "warnings": [...], "error": ...}``.
"""

from __future__ import annotations

import errno
import json
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import profiler  # noqa: E402
from profiler.capture import captures, step_metrics  # noqa: E402
from profiler.store import trace_store  # noqa: E402


def fill(directory: Path) -> None:
    """Write ``directory/filler`` until the file system is full."""
    chunk = b"\0" * (1 << 16)
    with (directory / "filler").open("ab", buffering=0) as file:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    file.write(chunk[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def no_space(self: Any, path: Path, document: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def interrupting(*args: Any, **kwargs: Any) -> None:
    signal.raise_signal(signal.SIGINT)
    raise AssertionError("SIGINT's handler should have raised KeyboardInterrupt")


def stop_at_line(stopped: list[int]) -> None:
    sys.stdin.readline()
    stopped.append(0)


def train(config: dict[str, Any], prof: Any, model: nn.Module, stopped: list[int]) -> int:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))) for _ in range(16)]
    data = (batches[i % len(batches)] for i in range(config["steps"]))
    done = 0
    for step, (x, y) in enumerate(prof.loader(data)):
        if step == config.get("ready_after"):
            print("ready", flush=True)
            if config.get("until_stdin"):
                threading.Thread(target=stop_at_line, args=(stopped,), daemon=True).start()
            else:
                sys.stdin.readline()
        time.sleep(config.get("step_sleep", 0))
        if step == config.get("fill_after"):
            fill(Path(config["out"]))
        if stopped:
            break
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        prof.step()
        done += 1
    return done


def main(config: dict[str, Any]) -> None:
    if config.get("fault") == "enospc-trace":
        trace_store.RunStore.write_trace = no_space  # type: ignore[method-assign]
    if config.get("fault") == "sigint-in-window":
        captures.write_window = interrupting  # type: ignore[assignment]
    if config.get("flush_every_step"):
        step_metrics.FLUSH_INTERVAL_NS = 0
    stopped: list[int] = []
    if config.get("handler") == "flag":
        signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    )
    kwargs: dict[str, Any] = {
        "out_dir": config["out"],
        "run_name": config.get("run", "r"),
        "system_metrics": False,
    }
    if "schedule" in config:  # else profiler's default schedule
        schedule = config["schedule"]
        keys = ("wait", "warmup", "active", "repeat")
        kwargs["schedule"] = (
            profiler.schedule(**dict(zip(keys, schedule, strict=True))) if schedule else None
        )
    result: dict[str, Any] = {"steps": 0, "error": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result["steps"] = run(config, kwargs, model, stopped)
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
    result["warnings"] = [
        str(w.message) for w in caught if w.category.__name__ == "TrainprofWarning"
    ]
    print(json.dumps(result), flush=True)


def run(config: dict[str, Any], kwargs: dict[str, Any], model: nn.Module, stopped: list) -> int:
    nest = config.get("nest")
    if nest == "torch":
        with torch.profiler.profile():
            return run({**config, "nest": None}, kwargs, model, stopped)
    prof = profiler.profile(model, **kwargs).start()
    if config.get("leak"):
        return train(config, prof, model, stopped)
    try:
        if nest == "ours":
            inner = {**kwargs, "run_name": kwargs["run_name"] + "-inner"}
            with profiler.profile(model, **inner) as nested:
                return train(config, nested, model, stopped)
        return train(config, prof, model, stopped)
    finally:
        prof.stop()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
