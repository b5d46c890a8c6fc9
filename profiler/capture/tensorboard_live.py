"""A session's TensorBoard side (``tensorboard_logdir=``): scalars as steps flush, the full
export at stop. TensorBoard is imported only by runs that ask for it (~0.3 s)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class LiveTensorBoard:
    """Writes a run where TensorBoard reads it, ``<logdir>/<run>/``.

    Args:
        logdir: TensorBoard's log directory.
        run_name: the run's name there.
        rank: the writing rank.
    """

    def __init__(self, logdir: Path, run_name: str, *, rank: int) -> None:
        from profiler.export.tensorboard import LiveWriter

        self.logdir = logdir
        self.run_name = run_name
        self._writer = LiveWriter(logdir, run_name, rank=rank)

    def add_steps(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Per-step scalars of a flush of the step metrics."""
        self._writer.add_steps(records)

    def close(self) -> None:
        """Close the live writer (before :meth:`export`)."""
        self._writer.close()

    def export(self, run_dir: Path) -> None:
        """Replace the live scalars with the full export (the same as the CLI's)."""
        from profiler.export.tensorboard import export_tensorboard

        export_tensorboard(run_dir, self.logdir, run_name=self.run_name)
