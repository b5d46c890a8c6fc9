"""Whether a run recorded as ``running`` is still alive: the heartbeat in ``meta/run.json``.

A capture session rewrites ``heartbeat_unix_s`` every :data:`HEARTBEAT_INTERVAL_S` from a
background thread, and records its ``host`` and ``pid``. A process killed with SIGKILL (or a
machine that lost power) cannot mark its run, so readers decide: a run still ``running`` whose
heartbeat is older than :data:`HEARTBEAT_STALE_S`, or whose process is gone from this host, is
shown as ``interrupted (no heartbeat since ...)``. Nothing is written back: the reader may be
wrong about a run on another host whose clock is off, and the writer may yet come back.

Every rank beats its own ``meta/rank.<rank>.json``, so each rank is judged on its own, and the
run's status is derived from all of them (:func:`merge_states`), worst news first:

1. ``failed`` if any rank failed (or ``trainprof run`` recorded the command's failure);
2. ``running`` if any rank is running and alive (the ranks that are not are named);
3. ``interrupted`` if any rank was interrupted or stopped beating;
4. ``degraded`` if any rank degraded; ``complete`` when every rank completed.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from profiler.events import RunStatus

HEARTBEAT_INTERVAL_S = 10.0
# Three missed beats: a loaded machine may delay one, not three.
HEARTBEAT_STALE_S = 3 * HEARTBEAT_INTERVAL_S
HEARTBEAT_KEY = "heartbeat_unix_s"
_LAST_UNIX_S = 1e11  # the year 5138: time.gmtime takes anything below, and no file says more


@dataclass(frozen=True)
class RunState:
    """How a run stands, as a reader sees it.

    Attributes:
        status: a :class:`RunStatus` value; ``interrupted`` also for a stale ``running``.
        reason: why, in words, when the status is not what ``run.json`` says or it carries an
            error or a degradation (``None`` otherwise).
    """

    status: str
    reason: str | None = None

    @property
    def label(self) -> str:
        """``status`` with its reason in brackets, for one line of a report."""
        return self.status if not self.reason else f"{self.status} ({self.reason})"


# The order of merge_states: the first status any rank has is the run's.
_PRECEDENCE = tuple(
    s.value
    for s in (
        RunStatus.FAILED,
        RunStatus.RUNNING,
        RunStatus.INTERRUPTED,
        RunStatus.DEGRADED,
        RunStatus.COMPLETE,
    )
)
#: Ranks named in a merged status's reason, at most (a 1,024-rank run would fill a page).
MAX_NAMED_RANKS = 3


def run_state(meta: Mapping[str, Any] | None, *, now: float | None = None) -> RunState:
    """The state of the run whose metadata is ``meta``.

    Args:
        meta: the decoded ``run.json`` (``None`` or empty for a plain torch.profiler trace),
            or the merged record of ``run_files.read_run_record``, whose ``ranks`` are each
            judged on their own and merged (:func:`merge_states`).
        now: the current unix time (tests pass a fixed one).

    Returns:
        The recorded status, or ``interrupted`` for a ``running`` run whose heartbeat stopped.
    """
    if not meta:
        return RunState("unknown")
    ranks = meta.get("ranks")
    if isinstance(ranks, Mapping) and ranks:
        states = {
            f"rank {rank}": record_state(record, now=now)
            for rank, record in ranks.items()
            if isinstance(record, Mapping)
        }
        # trainprof run records a command's failure in run.json, where no rank could; it
        # speaks for the run, so its reason is named without a rank.
        failed = RunStatus.FAILED.value
        if meta.get("status") == failed and all(s.status != failed for s in states.values()):
            states[""] = record_state(meta, now=now)
        return merge_states(states)
    return record_state(meta, now=now)


def merge_states(states: Mapping[str, RunState]) -> RunState:
    """One status for the run from each rank's (``{"rank 1": state}``), worst news first.

    The order is the module docstring's. The reason names the ranks behind the status
    (at most :data:`MAX_NAMED_RANKS`; a state keyed ``""`` speaks for the whole run), and for
    a run still running the ranks that are not; with a single rank, its state is the run's.
    """
    if not states:
        return RunState("unknown")
    if len(states) == 1:
        return next(iter(states.values()))
    order = {status: index for index, status in enumerate(_PRECEDENCE)}
    status = min((s.status for s in states.values()), key=lambda s: order.get(s, len(order)))
    if status == RunStatus.RUNNING.value:
        notes = [f"{who} {s.label}" for who, s in states.items() if s.status != status]
    else:
        named = [(who, s.reason) for who, s in states.items() if s.status == status and s.reason]
        notes = [f"{who}: {reason}" if who else reason for who, reason in named]
    if len(notes) > MAX_NAMED_RANKS:
        notes[MAX_NAMED_RANKS:] = [f"{len(notes) - MAX_NAMED_RANKS} more"]
    return RunState(status, "; ".join(notes) or None)


def record_state(meta: Mapping[str, Any], *, now: float | None = None) -> RunState:
    """The state of one record: ``run.json`` of a single-rank run, or one rank's record."""
    if not meta:
        return RunState("unknown")
    status = str(meta.get("status") or "unknown")
    if status != RunStatus.RUNNING.value:
        return RunState(status, _recorded_reason(meta))
    beat = _number(meta.get(HEARTBEAT_KEY)) or _number(meta.get("started_unix_s"))
    now = time.time() if now is None else now
    if beat is not None and now - beat > HEARTBEAT_STALE_S:
        return RunState(RunStatus.INTERRUPTED.value, f"no heartbeat since {_utc(beat)}")
    if _process_gone(meta):
        since = f" since {_utc(beat)}" if beat is not None else ""
        return RunState(RunStatus.INTERRUPTED.value, f"process ended without a word{since}")
    return RunState(status)


def _recorded_reason(meta: Mapping[str, Any]) -> str | None:
    # An interrupted run names its signal ({"signal": "SIGTERM", "at_step": N}, written by
    # capture's signal handler) before any error the signal raised (KeyboardInterrupt).
    for key in ("interrupted", "degraded", "error"):
        value = meta.get(key)
        if isinstance(value, Mapping):
            text = (
                value.get("signal") or value.get("message") or value.get("reason")
            ) or value.get("type")
            return str(text) if text else None
        if isinstance(value, str) and value:
            return value
    return None


def _number(value: Any) -> float | None:
    """A unix time, or None for anything that cannot be one (NaN, inf, 10**400, -1e300)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if 0 <= number < _LAST_UNIX_S else None  # NaN compares False


def _process_gone(meta: Mapping[str, Any]) -> bool:
    """The run's process is known to be dead: recorded on this host, and no such pid here."""
    pid = meta.get("pid")
    if meta.get("host") != socket.gethostname() or isinstance(pid, bool):
        return False
    if not isinstance(pid, int) or pid <= 0:
        return False
    return not pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _utc(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix_s))
