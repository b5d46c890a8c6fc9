"""trainprof: a profiler and visual debugger for PyTorch training runs.

Public API::

    import profiler
    with profiler.profile(model, schedule=profiler.schedule(wait=1, warmup=1, active=3)) as prof:
        for batch in prof.loader(loader):
            ...
            prof.step()

    trace = profiler.load("traces/exp1")        # tables of every trace in the run
    report = profiler.summarize("traces/exp1")  # the trainprof.summary/1 dict
    for run in profiler.RunSet("traces"): ...   # the read side: each run's files, meta, steps
    profiler.show("traces/exp1")                # the dashboard, inline in a notebook

``schedule=profiler.on_anomaly(factor=2.0)`` opens a window after a slow step instead.

Capture imports torch; it is loaded only when ``profile`` or ``schedule`` is first used, so the
CLI's reporting commands and the dashboard start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "Run",
    "RunSet",
    "load",
    "on_anomaly",
    "profile",
    "schedule",
    "show",
    "summarize",
    "__version__",
]

if TYPE_CHECKING:
    from profiler.analysis.run import Run, RunSet
    from profiler.analysis.summary import summarize
    from profiler.analysis.table import load
    from profiler.capture.anomaly import on_anomaly
    from profiler.capture.schedule import schedule
    from profiler.capture.session import profile
    from profiler.notebook import show

_LAZY = {
    "profile": "profiler.capture.session",
    "schedule": "profiler.capture.schedule",
    "Profile": "profiler.capture.session",
    "Schedule": "profiler.capture.schedule",
    "on_anomaly": "profiler.capture.anomaly",
    "AnomalySchedule": "profiler.capture.anomaly",
    "load": "profiler.analysis.table",
    "summarize": "profiler.analysis.summary",
    "Run": "profiler.analysis.run",
    "RunSet": "profiler.analysis.run",
    "show": "profiler.notebook",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'profiler' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
