"""``trainprof run``: start a command with every Python process in it profiled, and wait.

The command runs as a child process, unchanged but for two environment variables: the
bootstrap directory first on ``PYTHONPATH`` and the run's settings in ``$TRAINPROF_RUN``
(``profiler.autorun.config``). The processes profile themselves (``profiler.autorun``); this
side never imports capture or torch. Its job is what a shell's would be, plus the run's last
word: the child's exit status becomes ours (128 + N after signal N, 127 for a command not
found, 126 for one that cannot be run), its output is its own, and when it fails ``run.json``
says so even where the child could not write it (``sys.exit(3)``, a crash, SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import orjson

from profiler.autorun.config import BOOTSTRAP_DIR, DEFAULT, AutorunConfig, parse_schedule
from profiler.events import RunStatus
from profiler.store import RunStore
from profiler.store.liveness import run_state
from profiler.store.run_files import read_run_meta
from profiler.store.trace_store import atomic_write

EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
# The parent passes these on to the child; SIGINT it leaves alone, as a shell does: the
# terminal sends Ctrl+C to the child too.
_FORWARDED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class LaunchError(Exception):
    """The command could not be started; ``exit_status`` is what a shell would return."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@dataclass(frozen=True)
class Outcome:
    """How a profiled command ended.

    Attributes:
        exit_status: the command's, as a shell reports it (128 + N after signal N).
        run_dir: the run's directory; None when no process of the command trained.
        state: the run's status label, e.g. ``complete`` or ``failed (exit status 3)``.
    """

    exit_status: int
    run_dir: Path | None
    state: str | None


def plan_run(
    out_dir: Path, run_name: str | None, *, schedule: str | None = None, light_only: bool = False
) -> AutorunConfig:
    """The settings of a new run under ``out_dir``, from ``trainprof run``'s options.

    Args:
        out_dir: the trace store root.
        run_name: the run's name; default a timestamp (with ``-2``, ``-3``... if taken).
        schedule: ``"WAIT,WARMUP,ACTIVE[,REPEAT]"`` or ``"anomaly[:FACTOR]"``; default the
            profiler's default schedule.
        light_only: no deep capture at all.

    Raises:
        ValueError: a bad schedule, both ``schedule`` and ``light_only``, or a ``run_name``
            that is not a plain directory name.
        FileExistsError: a run named ``run_name`` exists under ``out_dir`` already.
    """
    if light_only and schedule is not None:
        raise ValueError("--light-only and --schedule contradict each other: give one")
    windows = None if light_only else parse_schedule(schedule) if schedule else DEFAULT
    root = out_dir.resolve()
    if run_name is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_name, suffix = stamp, 1
        while (root / run_name).exists():
            suffix += 1
            run_name = f"{stamp}-{suffix}"
    run_dir = RunStore(root, run_name).run_dir  # checks the name
    if run_dir.exists():
        raise FileExistsError(f"run {run_name!r} exists already in {out_dir}: choose another")
    return AutorunConfig(str(root), run_name, windows)


def child_environment(config: AutorunConfig, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the bootstrap first on ``PYTHONPATH`` and the run's settings added."""
    env = dict(base)
    paths = [str(BOOTSTRAP_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(config.to_env())
    return env


def launch(command: Sequence[str], config: AutorunConfig) -> Outcome:
    """Run ``command`` profiled into ``config``'s run and wait for it.

    Raises:
        LaunchError: the command was not found or cannot be run.
    """
    try:
        child = subprocess.Popen(list(command), env=child_environment(config, os.environ))
    except FileNotFoundError:
        raise LaunchError(f"command not found: {command[0]}", EXIT_NOT_FOUND) from None
    except PermissionError as exc:
        raise LaunchError(f"cannot run {command[0]}: {exc.strerror}", EXIT_NOT_EXECUTABLE) from None

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in _FORWARDED}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        returncode = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    run_dir = Path(config.out_dir) / config.run_name
    if not run_dir.exists():
        return Outcome(exit_status(returncode), None, None)
    return Outcome(exit_status(returncode), run_dir, settle(run_dir, returncode))


def exit_status(returncode: int) -> int:
    """A child's return code as a shell reports it: -N (killed by signal N) is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def ending(returncode: int) -> str:
    """``exit status N`` or ``killed by SIGNAME``, for ``run.json`` and the last line."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def settle(run_dir: Path, returncode: int) -> str | None:
    """Record a failed command in ``run.json`` where its processes could not, and return the
    run's status label (None where ``run.json`` cannot be read).

    A run the child left ``complete``, ``degraded`` or ``running`` is marked ``failed`` (or
    ``interrupted``, for a ``running`` one killed by a signal) when the command's status is
    not 0; one already ``failed`` or ``interrupted`` keeps what its process recorded.
    """
    meta = read_run_meta(run_dir).meta
    if meta is None:
        return None
    status = meta.get("status")
    if returncode != 0 and status not in (RunStatus.FAILED.value, RunStatus.INTERRUPTED.value):
        reason = ending(returncode)
        if returncode < 0 and status == RunStatus.RUNNING.value:
            meta["status"] = RunStatus.INTERRUPTED.value
            meta["interrupted"] = {"signal": reason.removeprefix("killed by ")}
        else:
            meta["status"] = RunStatus.FAILED.value
            meta["error"] = {"type": "ExitStatus", "message": reason}
        meta["ended_unix_s"] = meta.get("ended_unix_s") or time.time()
        with contextlib.suppress(OSError):  # the label below still says how the command ended
            atomic_write(
                run_dir / "meta" / "run.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2)
            )
    return run_state(meta).label
