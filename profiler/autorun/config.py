"""The settings ``trainprof run`` hands to the processes it starts, through one environment
variable; what both sides of it (the launcher and the bootstrap) need, and nothing heavier.

Importing this module loads neither torch nor :mod:`profiler.capture`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: Holds the run's settings as JSON; the bootstrap does nothing where it is unset.
ENV_VAR = "TRAINPROF_RUN"
#: The directory ``trainprof run`` puts first on the command's ``PYTHONPATH``.
BOOTSTRAP_DIR = Path(__file__).resolve().parent / "bootstrap"
#: ``schedule`` without ``--schedule``: ``profiler.capture.session.DEFAULT_SCHEDULE``.
DEFAULT: Literal["default"] = "default"
_SCHEDULE_FIELDS = ("wait", "warmup", "active", "repeat")


@dataclass(frozen=True)
class AutorunConfig:
    """One ``trainprof run``'s settings, the same in every process of the command.

    Attributes:
        out_dir: the trace store root (absolute: the script may change directory).
        run_name: the run's directory name; every rank of a torchrun writes into it.
        schedule: ``(wait, warmup, active, repeat)``, :data:`DEFAULT` for the default one,
            or None for light metrics only.
    """

    out_dir: str
    run_name: str
    schedule: tuple[int, ...] | Literal["default"] | None = DEFAULT

    def to_env(self) -> dict[str, str]:
        """The environment entry that carries these settings."""
        schedule = list(self.schedule) if isinstance(self.schedule, tuple) else self.schedule
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
            elif schedule not in (DEFAULT, None):
                raise ValueError(f"schedule {schedule!r}")
            return cls(str(document["out_dir"]), str(document["run_name"]), schedule)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"${ENV_VAR} does not hold trainprof run settings ({exc})") from None


def parse_schedule(text: str) -> tuple[int, ...]:
    """``"wait,warmup,active[,repeat]"`` as integers (``repeat`` defaults to 1).

    Raises:
        ValueError: not three or four integers >= 0, or ``active`` is 0.
    """
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (3, 4) or not all(part.isdigit() for part in parts):
        raise ValueError(
            f"--schedule takes WAIT,WARMUP,ACTIVE[,REPEAT] as integers >= 0, got {text!r}"
        )
    values = tuple(int(part) for part in parts)
    if values[2] == 0:
        raise ValueError("--schedule ACTIVE must be >= 1 (use --light-only for no deep capture)")
    return values if len(values) == 4 else (*values, 1)


def schedule_fields(values: tuple[int, ...]) -> dict[str, int]:
    """``(wait, warmup, active, repeat)`` as keyword arguments of ``profiler.schedule``."""
    return dict(zip(_SCHEDULE_FIELDS, values, strict=True))
