"""What both framework callbacks do: one ``Profile`` per training run, its steps and data waits.

A framework's callbacks see the loop from outside: a hook where a step ends, one where the next
batch is ready, and a few where other work (validation, logging, checkpoints) has just ended. The
data wait of a step is the time from the latest of those "back to fetching" marks to the batch
being ready, handed to :meth:`Profile.add_data_wait`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from profiler.capture.schedule import Schedule
from profiler.capture.session import Profile
from profiler.store import RunStore

_now = time.perf_counter_ns


class CallbackSession:
    """One profiling session per training run, driven by a framework's callback hooks.

    Takes :class:`~profiler.capture.session.Profile`'s keyword arguments (checked here, when the
    callback is built). The ``Profile`` itself is made when training starts, so that it sees the
    rank the framework has set up by then.
    """

    def __init__(
        self,
        *,
        out_dir: str | os.PathLike[str],
        run_name: str | None,
        schedule: Schedule | None,
        record_shapes: bool,
        profile_memory: bool,
        with_stack: bool,
        system_metrics: bool,
        metadata: Mapping[str, Any] | None,
        tensorboard_logdir: str | os.PathLike[str] | None,
    ) -> None:
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError("schedule must come from profiler.schedule(...) or be None")
        if run_name is not None:
            RunStore(out_dir, run_name)  # refuses a name that is not a plain directory name
        self.run_name = run_name
        self.options: dict[str, Any] = {
            "out_dir": out_dir,
            "schedule": schedule,
            "record_shapes": record_shapes,
            "profile_memory": profile_memory,
            "with_stack": with_stack,
            "system_metrics": system_metrics,
            "metadata": dict(metadata or {}),
            "tensorboard_logdir": tensorboard_logdir,
        }
        self.profile: Profile | None = None  # the live session, between start() and stop()
        self.runs: list[Profile] = []  # every session this callback started, in order
        self._waiting_since: int | None = None

    @property
    def live(self) -> bool:
        """A session is running."""
        return self.profile is not None

    def start(
        self, model: nn.Module | None, *, share_name: Callable[[str], str] | None = None
    ) -> Profile:
        """Start a session over ``model``; the loop goes on to fetch the first batch.

        Args:
            model: the module whose submodules get ranges (``None``: steps and ops only).
            share_name: under data parallelism, hands rank 0's default run name to every rank
                (a broadcast), so all ranks write into one run directory.

        Raises:
            ProfilerStateError, PermissionError, FileExistsError: as
                :meth:`Profile.start`; nothing is left running.
        """
        name = self._next_name(share_name)
        profile = Profile(model, run_name=name, **self.options)
        profile.start()
        self.profile = profile
        self.runs.append(profile)
        self.fetching()
        return profile

    def fetching(self) -> None:
        """The loop is back to fetching data (a step, validation, an epoch start has ended)."""
        if self.profile is not None:
            self._waiting_since = _now()

    def batch_ready(self) -> None:
        """The next batch is in hand: the time since :meth:`fetching` was a data wait."""
        since, self._waiting_since = self._waiting_since, None
        if since is not None and self.profile is not None:
            self.profile.add_data_wait(_now() - since)

    def step(self) -> None:
        """An optimizer step has ended."""
        if self.profile is not None:
            self.profile.step()
            self.fetching()

    def stop(self, error: BaseException | None = None) -> None:
        """Write what was captured and record how training ended (failed with ``error``)."""
        profile, self.profile = self.profile, None
        self._waiting_since = None
        if profile is not None:
            profile.stop(error=error)

    def _next_name(self, share_name: Callable[[str], str] | None) -> str:
        """The run name given, else a timestamp (rank 0's under data parallelism); ``-2``,
        ``-3``... for later runs of the same callback (``fit`` called again)."""
        name = self.run_name
        if name is None:
            name = time.strftime("%Y%m%d-%H%M%S")
            if share_name is not None:
                name = share_name(name)
        taken = [p.run_name for p in self.runs]
        if any(t == name or t.startswith(f"{name}-") for t in taken):
            name = f"{name}-{len(taken) + 1}"
        return name
