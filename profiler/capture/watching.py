"""Models handed to a session after it started (:meth:`Profile.watch`).

A script run by ``trainprof run`` is profiled before anyone knows its model: the model is found
at the first optimizer step (``profiler.autorun.roots``), then watched. The step metrics time
the roots' forward and the deep capture traces every submodule; both build their wrappers from
the models they were given, so watching rebuilds them, in the order that keeps the tracer's
wrapper above the step metrics' (see ``StepMetrics.install_now``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from torch import nn

from profiler.capture.module_hooks import ModuleTracer
from profiler.capture.step_metrics import StepMetrics
from profiler.capture.windows import DeepCapture


def as_models(model: nn.Module | Sequence[nn.Module] | None) -> list[nn.Module]:
    """``model`` as a list of modules.

    Raises:
        TypeError: something in it is not an ``nn.Module``.
    """
    if model is None:
        return []
    models = [model] if isinstance(model, nn.Module) else list(model)
    for item in models:
        if not isinstance(item, nn.Module):
            raise TypeError(f"model must be an nn.Module or a list of them, got {type(item)!r}")
    return models


def rewire(
    models: Sequence[nn.Module],
    metrics: StepMetrics | None,
    deep: DeepCapture | None,
    tracer: Callable[[Sequence[nn.Module]], ModuleTracer],
) -> None:
    """Hook ``models`` (all of them, old and new) in a running session.

    A window in progress keeps what its tracer recorded so far and goes on with the new one.

    Args:
        models: every model the session watches now.
        metrics: the session's step metrics, if any.
        deep: the session's deep capture, if any.
        tracer: builds a module tracer over the models, as the deep capture built its own.
    """
    old = deep.tracer if deep is not None else None
    recording = deep is not None and deep.recording  # a window's steps are traced
    if old is not None and recording:
        old.detach()  # first off: its wrappers sit above the step metrics'
    if metrics is not None:
        metrics.detach()
        # StepMetrics builds its forward wrappers from its models at its first install.
        metrics._models = list(models)
        metrics.attach()
    if deep is not None and old is not None:
        new = tracer(models)
        if recording:
            new.record = dataclasses.replace(old.take(), modules=new.record.modules)
            new.attach()
        deep.tracer = new
