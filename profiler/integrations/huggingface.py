"""``TrainprofCallback``: profile ``transformers.Trainer.train`` with trainprof.

::

    from profiler.integrations.huggingface import TrainprofCallback

    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[TrainprofCallback(out_dir="traces", run_name="exp1")])
    trainer.train()

The HF ``Trainer`` tells its callbacks nothing when training fails (there is no
``on_exception``), so at ``on_train_begin`` the callback finds the ``Trainer`` that called it and
wraps, on that instance only, the method each epoch runs through (``_run_epoch``; in releases
without it, ``training_step``, the forward and backward of each micro-batch): an exception
passing out of it marks the run failed (``interrupted`` for KeyboardInterrupt) and writes the
window in progress before it goes on. The wrapper is removed when training ends either way.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

try:
    import transformers
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "profiler.integrations.huggingface needs Hugging Face Transformers: "
        "pip install 'trainprof[huggingface]'"
    ) from exc

import torch

from profiler.capture.schedule import Schedule
from profiler.capture.session import DEFAULT_SCHEDULE, Profile
from profiler.events import TrainprofWarning
from profiler.integrations._session import CallbackSession

__all__ = ["TrainprofCallback"]

# The Trainer methods an exception in training passes through, newest releases first: the first
# one the Trainer has is wrapped. `_run_epoch` (transformers 5) holds the whole epoch: fetching,
# forward and backward, the optimizer, logging, evaluation and checkpoints.
WATCHED_METHODS = ("_run_epoch", "training_step")
# How far up the stack on_train_begin looks for the Trainer (the handler's frames lie between).
_TRAINER_FRAME_DEPTH = 8


class TrainprofCallback(TrainerCallback):
    """Profile ``Trainer.train``: one trainprof run per ``train()``, in the same store layout as
    ``profiler.profile``.

    The session starts at ``on_train_begin`` with the ``model`` the Trainer hands its callbacks,
    so its submodules get ranges in the deep windows. A step ends at each ``on_step_end``: one
    per optimizer step, so with ``gradient_accumulation_steps=N`` a step holds N micro-batches.
    The run is marked complete at ``on_train_end``; an exception in training marks it failed
    (see the module's docstring for how).

    A step's ``data_wait_us`` is the time from the previous step's end (or the end of the
    logging, evaluation or checkpoint that followed it, or the epoch's start) to
    ``on_step_begin``: the Trainer fetches all of a step's micro-batches before that (and under
    data parallelism may gather their token counts across ranks), so the figure covers every
    micro-batch of the step. Evaluation and checkpoints are not data waits, but they count
    towards the duration of the step that follows them.

    Under data parallelism every rank profiles into one run directory (``steps.<rank>.jsonl``
    and a trace file per rank per window); the default run name is rank 0's.

    Args:
        out_dir, run_name, schedule, record_shapes, profile_memory, with_stack,
        system_metrics, metadata, tensorboard_logdir: as for ``profiler.profile``. A second
            ``train()`` with the same callback (or a retry by ``auto_find_batch_size``) writes a
            new run, ``<run_name>-2``.

    Raises:
        TypeError: ``schedule`` is of the wrong type.
        ValueError: ``run_name`` is not a plain directory name.
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
        self._unwatch: Callable[[], None] = lambda: None

    @property
    def profile(self) -> Profile | None:
        """The latest run's session (``run_dir``, ``trace_files``), once training has started."""
        return self.session.runs[-1] if self.session.runs else None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.session.live:  # the previous train() left without on_train_end or a failure
            self._end(RuntimeError("training ended without on_train_end"))
        trainer = _calling_trainer()
        self.session.start(kwargs.get("model"), share_name=_rank0_name)
        if trainer is None:
            warnings.warn(
                "trainprof could not find the Trainer that called its callback: if training "
                "fails, the run is marked failed only at interpreter exit or at the next "
                "train()",
                TrainprofWarning,
                stacklevel=2,
            )
        else:
            self._unwatch = _watch(trainer, self._end)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.fetching()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.batch_ready()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.step()

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.fetching()

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.fetching()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.fetching()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._end(None)

    def _end(self, error: BaseException | None) -> None:
        unwatch, self._unwatch = self._unwatch, lambda: None
        try:
            unwatch()
        finally:
            self.session.stop(error=error)


def _calling_trainer() -> Any:
    """The ``transformers.Trainer`` whose training loop is calling its callbacks, or None."""
    frame = sys._getframe(1)
    for _ in range(_TRAINER_FRAME_DEPTH):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, transformers.Trainer):
            return candidate
    return None


def _watch(trainer: Any, fail: Callable[[BaseException], None]) -> Callable[[], None]:
    """Wrap, on ``trainer`` only, the first of ``WATCHED_METHODS`` it has, so an exception
    through it calls ``fail`` first; returns what removes the wrapper."""
    name = next((n for n in WATCHED_METHODS if callable(getattr(trainer, n, None))), None)
    if name is None:
        return lambda: None
    inner = getattr(trainer, name)

    @functools.wraps(inner)
    def watched(*args: Any, **kwargs: Any) -> Any:
        try:
            return inner(*args, **kwargs)
        except BaseException as exc:
            fail(exc)
            raise

    trainer.__dict__[name] = watched

    def unwatch() -> None:
        if trainer.__dict__.get(name) is watched:
            del trainer.__dict__[name]

    return unwatch


def _rank0_name(name: str) -> str:
    """Rank 0's ``name`` on every rank (the default run name, a timestamp)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return name
    shared = [name]
    dist.broadcast_object_list(shared, src=0)
    return str(shared[0])
