"""What the dashboard tests build their trace roots from: our sample run and small bad or
plain files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAMPLE = Path(__file__).resolve().parents[2] / "traces" / "sample"
CORRUPT_FILE = "host_1.1700000000000.pt.trace.json.gz"
PLAIN_FILE = "host_1.1700000000001.pt.trace.json"


def plain_trace() -> dict[str, Any]:
    """A torch.profiler-like trace: one step, one op, no module ranges, no memory samples."""
    events = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1,
         "ts": 90, "dur": 100, "args": {}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": 1, "tid": 1,
         "ts": 100, "dur": 50, "args": {}},
    ]  # fmt: skip
    return {"schemaVersion": 1, "traceEvents": events}
