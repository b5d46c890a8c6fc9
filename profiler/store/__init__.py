"""The trace store: Chrome trace files in Kineto's layout, and the run's metadata beside them."""

from __future__ import annotations

from profiler.store.chrome_trace import TraceFormatError, splice_kineto_trace, splice_parts
from profiler.store.step_log import StepLog
from profiler.store.trace_store import (
    RunStore,
    drain_side_jobs,
    remove_stale_scratch,
    worker_name,
)

__all__ = [
    "RunStore",
    "StepLog",
    "TraceFormatError",
    "drain_side_jobs",
    "remove_stale_scratch",
    "splice_kineto_trace",
    "splice_parts",
    "worker_name",
]
