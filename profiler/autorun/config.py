"""The settings ``trainprof run`` hands to the processes it starts, through one environment
variable; what both sides of it (the launcher and the bootstrap) need, and nothing heavier.

Importing this module loads neither torch nor :mod:`profiler.capture`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from profiler.events import SLOW_STEP_FACTOR

#: Holds the run's settings as JSON; the bootstrap does nothing where it is unset.
ENV_VAR = "TRAINPROF_RUN"
#: The directory ``trainprof run`` puts first on the command's ``PYTHONPATH``.
BOOTSTRAP_DIR = Path(__file__).resolve().parent / "bootstrap"
#: ``schedule`` without ``--schedule``: ``profiler.capture.session.DEFAULT_SCHEDULE``.
DEFAULT: Literal["default"] = "default"
_SCHEDULE_FIELDS = ("wait", "warmup", "active", "repeat")
#: ``--schedule anomaly[:FACTOR]``: ``profiler.on_anomaly`` instead of fixed windows.
ANOMALY = "anomaly"


@dataclass(frozen=True)
class AnomalyWindows:
    """``--schedule anomaly[:FACTOR]``: a deep window after each step slower than ``factor`` x
    the running median (``profiler.on_anomaly(factor=factor)``, its other settings default)."""

    factor: float = SLOW_STEP_FACTOR


Windows = tuple[int, ...] | AnomalyWindows | Literal["default"] | None


@dataclass(frozen=True)
class AutorunConfig:
    """One ``trainprof run``'s settings, the same in every process of the command.

    Attributes:
        out_dir: the trace store root (absolute: the script may change directory).
        run_name: the run's directory name; every rank of a torchrun writes into it.
        schedule: ``(wait, warmup, active, repeat)``, :class:`AnomalyWindows`, :data:`DEFAULT`
            for the default one, or None for light metrics only.
    """

    out_dir: str
    run_name: str
    schedule: Windows = DEFAULT

    def to_env(self) -> dict[str, str]:
        """The environment entry that carries these settings."""
        schedule: Any = self.schedule
        if isinstance(schedule, tuple):
            schedule = list(schedule)
        elif isinstance(schedule, AnomalyWindows):
            schedule = {ANOMALY: schedule.factor}
        document = {"out_dir": self.out_dir, "run_name": self.run_name, "schedule": schedule}
        return {ENV_VAR: json.dumps(document)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AutorunConfig | None:
        """The settings in ``environ`` (default ``os.environ``); None when there are none.

        Raises:
            ValueError: the variable is set but does not hold settings this version wrote.
        """
        text = (os.environ if environ is None else environ).get(ENV_VAR)
        if not text:
            return None
        try:
            document: Any = json.loads(text)
            schedule = document["schedule"]
            if isinstance(schedule, list):
                schedule = tuple(int(value) for value in schedule)
            elif isinstance(schedule, dict):
                schedule = AnomalyWindows(_anomaly_factor(str(schedule[ANOMALY])))
            elif schedule not in (DEFAULT, None):
                raise ValueError(f"schedule {schedule!r}")
            return cls(str(document["out_dir"]), str(document["run_name"]), schedule)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"${ENV_VAR} does not hold trainprof run settings ({exc})") from None


def parse_schedule(text: str) -> tuple[int, ...] | AnomalyWindows:
    """``"wait,warmup,active[,repeat]"`` as integers (``repeat`` defaults to 1), or
    ``"anomaly[:FACTOR]"`` as :class:`AnomalyWindows`.

    Raises:
        ValueError: not three or four integers >= 0, ``active`` is 0, or a factor that is not
            a finite number > 1.
    """
    kind, colon, factor = text.strip().partition(":")
    if kind.strip() == ANOMALY:
        return AnomalyWindows(_anomaly_factor(factor) if colon else SLOW_STEP_FACTOR)
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (3, 4) or not all(part.isdigit() for part in parts):
        raise ValueError(
            f"--schedule takes WAIT,WARMUP,ACTIVE[,REPEAT] as integers >= 0, or "
            f"anomaly[:FACTOR], got {text!r}"
        )
    values = tuple(int(part) for part in parts)
    if values[2] == 0:
        raise ValueError("--schedule ACTIVE must be >= 1 (use --light-only for no deep capture)")
    return values if len(values) == 4 else (*values, 1)


def schedule_fields(values: tuple[int, ...]) -> dict[str, int]:
    """``(wait, warmup, active, repeat)`` as keyword arguments of ``profiler.schedule``."""
    return dict(zip(_SCHEDULE_FIELDS, values, strict=True))


def _anomaly_factor(text: str) -> float:
    """The FACTOR of ``anomaly:FACTOR``, checked as ``profiler.on_anomaly`` checks it."""
    try:
        factor = float(text)
    except ValueError:
        factor = math.nan
    if not math.isfinite(factor) or factor <= 1:
        raise ValueError(
            f"--schedule anomaly:FACTOR takes a number > 1 (a step slower than FACTOR x the "
            f"median opens a window), got {text.strip()!r}"
        )
    return factor
