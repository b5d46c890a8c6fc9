"""A session's TensorBoard side (``tensorboard_logdir=``): scalars as steps flush, the full
export at stop. TensorBoard is imported only by runs that ask for it (~0.3 s).

Capture never imports the analysis (docs/architecture.md, "Data flows one way"): the live
scalars need only the event-file writer (:mod:`profiler.export.live`), and the full export,
which analyses the run's traces, runs in a child process, ``trainprof export-tensorboard``, the
same command a user would run. A child that fails or outlives ``EXPORT_TIMEOUT_S`` is reported
as one warning by the session, never raised into the training loop.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# The export reads every trace of the run once; a few seconds for the runs of a test, a minute or
# two for many large windows. Past this the child is killed and the live scalars stay.
EXPORT_TIMEOUT_S = 300.0


class ExportFailed(RuntimeError):
    """The export child exited with an error or was stopped at its timeout."""


def export_command(run_dir: Path, logdir: Path, run_name: str) -> list[str]:
    """The command line of the full export: the CLI's ``export-tensorboard``."""
    return [
        sys.executable, "-m", "profiler.cli", "export-tensorboard", str(run_dir),
        "--logdir", str(logdir), "--name", run_name,
    ]  # fmt: skip


class LiveTensorBoard:
    """Writes a run where TensorBoard reads it, ``<logdir>/<run>/``.

    Args:
        logdir: TensorBoard's log directory.
        run_name: the run's name there.
        rank: the writing rank.
    """

    def __init__(self, logdir: Path, run_name: str, *, rank: int) -> None:
        from profiler.export.live import LiveWriter

        self.logdir = logdir
        self.run_name = run_name
        self._writer = LiveWriter(logdir, run_name, rank=rank)

    def add_steps(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Per-step scalars of a flush of the step metrics."""
        self._writer.add_steps(records)

    def close(self) -> None:
        """Close the live writer (before :meth:`export`)."""
        self._writer.close()

    def export(self, run_dir: Path, *, timeout_s: float | None = None) -> None:
        """Replace the live scalars with the full export (the CLI's, in a child process).

        Raises:
            ExportFailed: the child failed or ran past ``timeout_s`` (default
                ``EXPORT_TIMEOUT_S``; the child is killed then).
        """
        timeout_s = EXPORT_TIMEOUT_S if timeout_s is None else timeout_s
        command = export_command(run_dir, self.logdir, self.run_name)
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ExportFailed(f"the export took over {timeout_s:g} s and was stopped") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            why = lines[-1] if lines else f"exit status {done.returncode}"
            raise ExportFailed(f"`trainprof export-tensorboard` failed: {why}")
