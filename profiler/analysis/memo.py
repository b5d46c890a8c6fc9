"""Derived tables computed once per loaded trace, and kept only as long as the trace is.

Step spans, the analysis window and the breakdown feed many analyses (the summary's facts,
the GPU figures, the temporal breakdown, the distributed view); each used to recompute them.
:func:`per_trace` stores a function's result on the trace object itself
(:attr:`TraceTable.derived`), so every caller shares one computation, and the results die with
the trace: a cache that drops a trace (the dashboard's per-fingerprint LRU) frees them too.
Results are shared: callers must treat them as read-only.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

if TYPE_CHECKING:
    from profiler.analysis.table import TraceTable

P = ParamSpec("P")
R = TypeVar("R")


def per_trace(
    function: Callable[Concatenate[TraceTable, P], R],
) -> Callable[Concatenate[TraceTable, P], R]:
    """Memoise ``function(trace, *args, **kwargs)`` on ``trace``, keyed by its other arguments.

    Args:
        function: an analysis taking a :class:`TraceTable` first; its other arguments must be
            hashable.

    Returns:
        The same function, computing each result once per trace object.
    """
    name = f"{function.__module__}.{function.__qualname__}"
    signature = inspect.signature(function)

    @functools.wraps(function)
    def memoised(trace: TraceTable, *args: P.args, **kwargs: P.kwargs) -> R:
        # Bound with defaults, so f(t), f(t, x=False) and f(t, False) share one result.
        bound = signature.bind(trace, *args, **kwargs)
        bound.apply_defaults()
        key = (name, tuple(bound.arguments.items())[1:])
        derived: dict[Any, Any] = trace.derived
        if key not in derived:
            derived[key] = function(trace, *args, **kwargs)
        result: R = derived[key]
        return result

    return memoised
