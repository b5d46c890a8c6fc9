"""The trace store: Chrome trace files in Kineto's layout, and the run's metadata beside them."""

from __future__ import annotations

from profiler.store.chrome_trace import TraceFormatError, splice_kineto_trace
from profiler.store.trace_store import RunStore, StepLog, worker_name

__all__ = ["RunStore", "StepLog", "TraceFormatError", "splice_kineto_trace", "worker_name"]
