"""The models being trained, found from what the optimizers update.

A script run by ``trainprof run`` never hands its model to the profiler, so at its first step
the profiler looks for it: the root ``nn.Module`` objects (no other module's child) that own
any parameter the optimizers step, in the order of those parameters. One pass over the
garbage collector's objects, once a run (and again only when a new optimizer appears).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from typing import Any

from torch import nn


def training_roots(optimizers: Iterable[Any]) -> list[nn.Module]:
    """The root modules that own parameters of ``optimizers``, first-stepped parameter first.

    A module is a root when no other live module holds it as a child: a ``DistributedDataParallel``
    or ``torch.compile`` wrapper rather than the model inside it.
    """
    order: dict[int, int] = {}
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for param in group["params"]:
                order.setdefault(id(param), len(order))
    if not order:
        return []
    # type(), not isinstance(): isinstance may ask a lazy proxy for __class__ and wake it.
    modules = [obj for obj in gc.get_objects() if issubclass(type(obj), nn.Module)]
    children = {id(child) for module in modules for child in module.children()}
    ranked: list[tuple[int, nn.Module]] = []
    for module in modules:
        if id(module) in children:
            continue
        first = min((order[id(p)] for p in module.parameters() if id(p) in order), default=None)
        if first is not None:
            ranked.append((first, module))
    ranked.sort(key=lambda item: item[0])
    return [module for _, module in ranked]
