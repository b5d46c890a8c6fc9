"""Which optimizer steps end a training step, when a script has several optimizers.

The rule: **a training step ends when the last optimizer of the cycle has stepped.** The cycle
is the optimizers that step, in order, before one of them steps again; it is learnt in the
first iteration. Until it is known, the first optimizer step ends step 0. So a loop that steps
``opt_a`` then ``opt_b`` once per iteration gets one step per iteration: step 0 ends after
``opt_a``'s first step, and every later step after ``opt_b``'s (step 1 holds the rest of the
first iteration too). An optimizer that steps several times per iteration (a GAN's
discriminator stepping k times per generator step) ends a cycle on each repeat, so each of its
steps is a training step and the other optimizers' steps fall inside them. When the
optimizer that ends steps is gone (garbage collected: a new optimizer for a new phase), the
cycle is learnt again.

Optimizers are held weakly: the profiler keeps none of them alive.
"""

from __future__ import annotations

import weakref
from typing import Any


class OptimizerCycle:
    """Tells, for each optimizer step, whether it ends the training step."""

    def __init__(self) -> None:
        self._seen: list[weakref.ref[Any]] = []  # the cycle being learnt, in stepping order
        self._last: weakref.ref[Any] | None = None  # once learnt: the optimizer that ends steps

    def entered(self, optimizer: Any) -> None:
        """``optimizer.step()`` is starting."""
        last = self._last
        if last is not None and last() is None:  # its optimizer is gone: learn again
            self._seen.clear()
            self._last = last = None
        if last is None and any(ref() is optimizer for ref in self._seen):
            self._last = self._seen[-1]  # a repeat closes the cycle

    def exited(self, optimizer: Any) -> bool:
        """``optimizer.step()`` returned; True when that ends the training step."""
        last = self._last
        if last is not None:
            return last() is optimizer
        if any(ref() is optimizer for ref in self._seen):
            return False
        self._seen.append(weakref.ref(optimizer))
        return len(self._seen) == 1
