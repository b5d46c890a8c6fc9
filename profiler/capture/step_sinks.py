"""Where a session's per-step records go: the step log, and TensorBoard's live scalars.

The step metrics hand their records over about once a second (:meth:`StepSinks.write`); each
sink that fails degrades the run and the others go on. At stop, with ``tensorboard_logdir``,
the full TensorBoard export runs in a child process (:meth:`StepSinks.export`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from profiler.capture.faults import Faults, describe
from profiler.capture.tensorboard_live import LiveTensorBoard
from profiler.store import RunStore, StepLog


class StepSinks:
    """One session's step log and, on rank 0 with a ``tensorboard_logdir``, TensorBoard.

    Args:
        store: the run's store (the step log is its ``steps_path``).
        faults: where a failed export is told.
        degrade: told of a write that failed, ``degrade(what, exc)``.
        tensorboard_logdir: also write TensorBoard scalars under ``<logdir>/<run>/``.
    """

    def __init__(
        self,
        store: RunStore,
        faults: Faults,
        degrade: Callable[[str, BaseException], None],
        *,
        tensorboard_logdir: Path | None,
    ) -> None:
        self._store = store
        self._faults = faults
        self._degrade = degrade
        self.steps = StepLog(store.steps_path)
        self.tensorboard: LiveTensorBoard | None = None
        if tensorboard_logdir is not None and store.rank == 0:
            self.tensorboard = LiveTensorBoard(tensorboard_logdir, store.run_name, rank=0)

    def write(self, records: list[dict[str, Any]]) -> None:
        """The step metrics' sink, about once a second: the step log, then TensorBoard."""
        try:
            self.steps.write(records)
        except Exception as exc:
            self._degrade(f"could not write the step log {self._store.steps_path.name}", exc)
        if self.tensorboard is not None:
            try:
                self.tensorboard.add_steps(records)
            except Exception as exc:
                self._degrade("could not write TensorBoard scalars", exc)

    def closers(self) -> list[tuple[str, Callable[[], None]]]:
        """What closing the sinks takes, each on its own."""
        closers = [("write the step log", self.steps.close)]
        if self.tensorboard is not None:
            closers.append(("close the TensorBoard writer", self.tensorboard.close))
        return closers

    def export(self) -> None:
        """TensorBoard's full export, once the run is recorded (nothing without TensorBoard).

        A failure is one warning and leaves the run's status alone: its files are whole, and
        the export can be run again.
        """
        if self.tensorboard is None:
            return
        run_dir = self._store.run_dir
        try:
            self.tensorboard.export(run_dir)
        except Exception as exc:
            self._faults.warn(
                f"could not export the run to TensorBoard ({describe(exc)}); its live per-step "
                f"scalars stay; retry with `trainprof export-tensorboard {run_dir} "
                f"--logdir {self.tensorboard.logdir}`"
            )
