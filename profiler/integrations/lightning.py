"""``TrainprofCallback``: profile ``lightning.pytorch.Trainer.fit`` with trainprof.

::

    from profiler.integrations.lightning import TrainprofCallback

    trainer = L.Trainer(callbacks=[TrainprofCallback(out_dir="traces", run_name="exp1")])
    trainer.fit(model, train_loader)

A ``Callback`` rather than a ``Trainer(profiler=...)``: callbacks are Lightning's public hook
surface (a ``Profiler`` sees only internal action names such as
``[_TrainingEpochLoop].train_dataloader_next``, which change between releases), a callback is
handed the ``LightningModule`` and the exception that ended training (``on_exception``), and it
leaves ``profiler=`` free for Lightning's own profilers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as pl
    from lightning.pytorch.profilers import PyTorchProfiler
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "profiler.integrations.lightning needs Lightning (the `lightning` package): "
        "pip install 'trainprof[lightning]'"
    ) from exc

from profiler.capture.guard import ProfilerStateError
from profiler.capture.schedule import Schedule
from profiler.capture.session import DEFAULT_SCHEDULE, Profile
from profiler.integrations._session import CallbackSession

__all__ = ["TrainprofCallback"]


class TrainprofCallback(pl.Callback):
    """Profile ``Trainer.fit``: one trainprof run per fit, in the same store layout as
    ``profiler.profile``.

    The session starts at ``on_train_start`` (after the sanity validation) with the
    ``LightningModule`` as the model, so its submodules get ranges in the deep windows. A step
    ends at each ``on_train_batch_end`` after which ``trainer.global_step`` has moved, so a step
    is an optimizer step, also with ``accumulate_grad_batches``. The run is marked complete at
    ``on_train_end``; ``on_exception`` marks it failed (``interrupted`` for
    KeyboardInterrupt) and keeps what was captured, including the window in progress.

    A step's ``data_wait_us`` is the time from the previous batch's end (or the end of
    validation, or the epoch's start) to ``on_train_batch_start``: Lightning's fetch of the
    batch, its transfer to the device, and what callbacks running after this one do in
    ``on_train_batch_end`` (Lightning runs checkpoint callbacks last, so a checkpoint saved
    there counts as waiting). Validation inside an epoch is not a data wait, but it does count
    towards the duration of the step that follows it.

    Under DDP every rank profiles into one run directory (``steps.<rank>.jsonl`` and a trace
    file per rank per window); the default run name is rank 0's.

    Args:
        out_dir, run_name, schedule, record_shapes, profile_memory, with_stack,
        system_metrics, metadata, tensorboard_logdir: as for ``profiler.profile``. A second
            ``fit`` with the same callback writes a new run, ``<run_name>-2``.

    Raises:
        TypeError: ``schedule`` is of the wrong type.
        ValueError: ``run_name`` is not a plain directory name.
        ProfilerStateError: (at ``on_train_start``) Lightning's own ``PyTorchProfiler`` is
            the trainer's ``profiler=``: torch cannot run two Kineto sessions at once.
    """

    def __init__(
        self,
        *,
        out_dir: str | os.PathLike[str] = "traces",
        run_name: str | None = None,
        schedule: Schedule | None = DEFAULT_SCHEDULE,
        record_shapes: bool = False,
        profile_memory: bool = False,
        with_stack: bool = False,
        system_metrics: bool = True,
        metadata: Mapping[str, Any] | None = None,
        tensorboard_logdir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.session = CallbackSession(
            out_dir=out_dir,
            run_name=run_name,
            schedule=schedule,
            record_shapes=record_shapes,
            profile_memory=profile_memory,
            with_stack=with_stack,
            system_metrics=system_metrics,
            metadata=metadata,
            tensorboard_logdir=tensorboard_logdir,
        )
        self._global_step = 0

    @property
    def profile(self) -> Profile | None:
        """The latest run's session (``run_dir``, ``trace_files``), once training has started."""
        return self.session.runs[-1] if self.session.runs else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if isinstance(getattr(trainer, "profiler", None), PyTorchProfiler):
            raise ProfilerStateError(
                "Trainer(profiler='pytorch') and TrainprofCallback both run torch's profiler, "
                "which cannot run twice at once: drop one of them"
            )
        self._global_step = trainer.global_step
        self.session.start(pl_module, share_name=trainer.strategy.broadcast)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.fetching()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.session.batch_ready()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step != self._global_step:  # the optimizer stepped in this batch
            self._global_step = trainer.global_step
            self.session.step()
        else:  # accumulating gradients: the step goes on with the next batch
            self.session.fetching()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.fetching()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.stop()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.session.stop(error=exception)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Whatever path fit took, no hook or thread of ours outlives it.
        self.session.stop()
