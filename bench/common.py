"""What every bench shares: the ratio record, the machine it ran on, and the JSON they write.

Each bench's ``--json OUT`` holds at least::

    {"machine": {...}, "ratios": [{"name", "value", "target", "comparison", "met", "unit"}, ...]}

and anything else it likes beside. ``bench/run.py`` reads only ``machine`` and ``ratios``.
This module imports neither torch nor trainprof, so the runner starts fast; it reports their
versions from the running process when it has imported them, else from the installed metadata.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

Comparison = Literal["<=", ">="]
COMPARISONS: tuple[Comparison, ...] = ("<=", ">=")


@dataclass(frozen=True)
class Ratio:
    """One measured figure against its target (``target`` None: reported, no target).

    ``met`` follows from the value, the target and the comparison; ``note`` says in a few words
    what qualifies the figure (a confidence interval, a scaled-down size).
    """

    name: str
    value: float
    target: float | None = None
    comparison: Comparison | None = None
    unit: str = "x"
    note: str | None = None

    def __post_init__(self) -> None:
        if self.comparison not in (None, *COMPARISONS):
            raise ValueError(f"comparison must be one of {COMPARISONS} or None")
        if (self.target is None) != (self.comparison is None):
            raise ValueError("a target needs a comparison, and a comparison a target")

    @property
    def met(self) -> bool | None:
        """Whether the value meets the target; None where there is no target."""
        if self.target is None:
            return None
        if self.comparison == "<=":
            return self.value <= self.target
        return self.value >= self.target

    def as_json(self) -> dict[str, Any]:
        """The JSON record: the fields, and ``met``."""
        return {**asdict(self), "met": self.met}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ratio:
        """A ratio from its JSON record; ``comparison`` inferred where a bench left it out."""
        target = data.get("target")
        comparison = data.get("comparison") or infer_comparison(
            data["value"], target, data.get("met")
        )
        return cls(
            name=str(data["name"]),
            value=float(data["value"]),
            target=None if target is None or comparison is None else float(target),
            comparison=comparison,
            unit=str(data.get("unit", "x")),
            note=data.get("note"),
        )


def infer_comparison(value: float, target: float | None, met: bool | None) -> Comparison | None:
    """The comparison that gives ``met`` for ``value`` against ``target`` (None: undecidable).

    Equal value and target meet either comparison, so they say nothing.
    """
    if target is None or met is None or value == target:
        return None
    below = value < target
    return "<=" if below == bool(met) else ">="


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo, with family/model/stepping (VMs often hide the name)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in {"model name", "cpu family", "model", "stepping", "flags"}:
                fields.setdefault(key, value.strip())
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", platform.processor() or "unknown")
    detail = ", ".join(
        f"{key} {fields[key]}" for key in ("cpu family", "model", "stepping") if key in fields
    )
    virtual = ", virtual machine" if "hypervisor" in fields.get("flags", "").split() else ""
    return f"{name} ({detail}{virtual})" if detail else name


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(module: str, distribution: str) -> str | None:
    """The imported module's ``__version__``, else the installed distribution's version."""
    loaded = sys.modules.get(module)
    if loaded is not None and hasattr(loaded, "__version__"):
        return str(loaded.__version__)
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """The machine and software a bench ran on, and the load average when it started."""
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = None
    torch = sys.modules.get("torch")
    return {
        "date": datetime.date.today().isoformat(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch": _version("torch", "torch"),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "trainprof": _version("profiler", "trainprof"),
        "loadavg_start": loadavg(),
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line that names the machine, for the foot of a report."""
    torch = f"torch {info.get('torch')}"
    if info.get("torch_threads"):
        torch += f" ({info['torch_threads']} threads)"
    return (
        f"{info.get('cpu_model', 'unknown CPU')}, {info.get('cpu_count')} cores "
        f"({info.get('cpus_usable')} usable), {torch}, Python {info.get('python')}, "
        f"trainprof {info.get('trainprof')}, {info.get('date')}, "
        f"load average {info.get('loadavg_start')}"
    )


def write_ratios(path: Path, ratios: list[Ratio], machine: dict[str, Any], **extra: Any) -> None:
    """Write ``{"machine", "ratios", **extra}`` to ``path`` as JSON (parents created)."""
    payload = {"machine": machine, "ratios": [r.as_json() for r in ratios], **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        orjson.dumps(
            payload,
            option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
        )
    )


def read_ratios(path: Path) -> tuple[dict[str, Any], list[Ratio]]:
    """The machine and the ratios from a file ``write_ratios`` (or a bench like it) wrote.

    Raises:
        ValueError: the file is not JSON, or holds no ``ratios`` list.
    """
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        raise ValueError(f"{path.name} is not JSON: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("ratios"), list):
        raise ValueError(f"{path.name} holds no 'ratios' list")
    return dict(data.get("machine") or {}), [Ratio.from_json(r) for r in data["ratios"]]
