"""Tests of the views over analysis results; shared helpers for the TensorBoard export's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The committed demo run: 20 steps, two CPU capture windows (steps 6-8 and 15-17).
SAMPLE_RUN = Path(__file__).resolve().parents[2] / "traces" / "sample"

#: Tag -> (steps.jsonl field, divisor), written out here rather than taken from the module
#: under test, so a tag mapped to the wrong field fails.
STEP_TAGS: dict[str, tuple[str, float]] = {
    "trainprof/step/time_ms": ("dur_us", 1000.0),
    "trainprof/step/data_wait_ms": ("data_wait_us", 1000.0),
    "trainprof/step/forward_ms": ("forward_us", 1000.0),
    "trainprof/step/backward_ms": ("backward_us", 1000.0),
    "trainprof/step/optimizer_ms": ("optimizer_us", 1000.0),
    "trainprof/memory/current_bytes": ("memory_bytes", 1.0),
    "trainprof/memory/peak_bytes": ("peak_memory_bytes", 1.0),
    "trainprof/system/cpu_pct": ("cpu_pct", 1.0),
}


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in ``run_dir``'s event files (not its subdirectories), as TensorBoard reads
    them: tag -> [(step, value)] in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def read_texts(run_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """Every text summary in ``run_dir``'s event files: tag -> [(step, text)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return {
        tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in accumulator.Tensors(tag)]
        for tag in accumulator.Tags()["tensors"]
    }


def expected_step_scalars(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """What every complete step record should have become, tag -> [(step, value)]."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if record.get("completed", True) is False:
            continue
        for tag, (field, divisor) in STEP_TAGS.items():
            if record.get(field) is not None:
                expected.setdefault(tag, []).append((record["step"], record[field] / divisor))
        for key, value in record.items():
            if key.startswith("gpu") and key.endswith("_util_pct"):
                tag = f"trainprof/gpu/{key[3:-9]}/utilization_pct"
                expected.setdefault(tag, []).append((record["step"], value))
    return expected
