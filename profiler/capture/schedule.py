"""Deep-capture windows, as torch.profiler.schedule defines them, checked when built."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch.profiler import ProfilerAction


@dataclass(frozen=True)
class Schedule:
    """Which steps get a full Kineto capture. Call it with a step number for torch's action.

    Skip ``skip_first`` steps, then cycle: ``wait`` idle steps, ``warmup`` steps with Kineto
    running but discarded, ``active`` recorded steps saved as one trace file. ``repeat=0`` cycles
    until the run ends.
    """

    wait: int = 1
    warmup: int = 1
    active: int = 3
    repeat: int = 1
    skip_first: int = 0

    def __post_init__(self) -> None:
        for field in ("wait", "warmup", "active", "repeat", "skip_first"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"schedule {field} must be an int >= 0, got {value!r}")
        if self.active == 0:
            raise ValueError(
                "schedule active must be >= 1: a window with no active steps captures nothing "
                "(use schedule=None for light metrics only)"
            )

    @cached_property
    def _torch_schedule(self) -> Callable[[int], ProfilerAction]:
        import torch.profiler

        return torch.profiler.schedule(
            wait=self.wait,
            warmup=self.warmup,
            active=self.active,
            repeat=self.repeat,
            skip_first=self.skip_first,
        )

    @property
    def end_step(self) -> int | None:
        """The first step after the last window; None when windows go on (``repeat=0``)."""
        if self.repeat == 0:
            return None
        return self.skip_first + self.repeat * (self.wait + self.warmup + self.active)

    def __call__(self, step: int) -> ProfilerAction:
        return self._torch_schedule(step)

    def as_dict(self) -> dict[str, Any]:
        """The schedule's fields, for run metadata."""
        return {
            "wait": self.wait,
            "warmup": self.warmup,
            "active": self.active,
            "repeat": self.repeat,
            "skip_first": self.skip_first,
        }


def schedule(
    *, wait: int = 1, warmup: int = 1, active: int = 3, repeat: int = 1, skip_first: int = 0
) -> Schedule:
    """Build a deep-capture schedule (same meaning as ``torch.profiler.schedule``).

    Raises:
        ValueError: a negative field, or ``active == 0``.
    """
    return Schedule(wait=wait, warmup=warmup, active=active, repeat=repeat, skip_first=skip_first)
