"""The trace store: Chrome trace files in Kineto's layout, and the run's metadata beside them."""

from __future__ import annotations

from profiler.store.chrome_trace import TraceFormatError, splice_kineto_trace, splice_parts
from profiler.store.trace_store import RunStore, StepLog, worker_name

__all__ = [
    "RunStore",
    "StepLog",
    "TraceFormatError",
    "splice_kineto_trace",
    "splice_parts",
    "worker_name",
]
