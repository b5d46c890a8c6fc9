"""Names and units of the Chrome/Kineto trace format, and the names trainprof adds to it.

No I/O and no torch here: capture, store and analysis all read these constants, so a name that a
peer tool keys on (HTA, TensorBoard's PyTorch profiler plugin) is spelled in exactly one place.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Final

# Event phases (Chrome trace event format).
PHASE_COMPLETE: Final = "X"
PHASE_COUNTER: Final = "C"
PHASE_INSTANT: Final = "i"
PHASE_METADATA: Final = "M"
PHASE_FLOW_START: Final = "s"
PHASE_FLOW_END: Final = "f"


class Category(str, Enum):
    """Event categories as Kineto writes them (2.x names) plus the 2021 generation's."""

    CPU_OP = "cpu_op"
    USER_ANNOTATION = "user_annotation"
    GPU_USER_ANNOTATION = "gpu_user_annotation"
    PYTHON_FUNCTION = "python_function"
    CUDA_RUNTIME = "cuda_runtime"
    CUDA_DRIVER = "cuda_driver"
    KERNEL = "kernel"
    GPU_MEMCPY = "gpu_memcpy"
    GPU_MEMSET = "gpu_memset"
    FLOW_AC2G = "ac2g"
    FLOW_FWDBWD = "fwdbwd"
    TRACE = "Trace"
    # 2021-generation categories (torch 1.8 - 1.10).
    OPERATOR = "Operator"
    RUNTIME = "Runtime"
    KERNEL_LEGACY = "Kernel"
    MEMCPY_LEGACY = "Memcpy"
    MEMSET_LEGACY = "Memset"


# Names that peers key on (docs/architecture.md, "Trace format additions").
PROFILER_STEP_PREFIX: Final = "ProfilerStep#"
DATALOADER_PREFIX: Final = "enumerate(DataLoader)#"
DATALOADER_SUFFIX: Final = ".__next__"
MODULE_PREFIX: Final = "nn.Module: "
MODULE_BACKWARD_SUFFIX: Final = ".backward"

# Names trainprof adds.
CLOCK_SYNC_NAME: Final = "trainprof::clock_sync"
COUNTER_MEMORY: Final = "trainprof.memory"
COUNTER_SYSTEM: Final = "trainprof.system"
BACKWARD_LANE_NAME: Final = "trainprof: nn.Module backward"
TRAINPROF_KEY: Final = "trainprof"
TRACE_FORMAT: Final = "trainprof.trace/1"
RUN_FORMAT: Final = "trainprof.run/1"
STEP_FORMAT: Final = "trainprof.steps/1"

# What makes a step slow, for ``profiler.on_anomaly``'s trigger and for the step logs' slow steps
# (``profiler.analysis.slow_steps``), one rule: over SLOW_STEP_FACTOR x the median of the last
# SLOW_STEP_HISTORY steps outside deep windows, and SLOW_STEP_MIN_EXCESS_MS more than it (on steps
# of tens of microseconds an interrupt is "3x the median" and not worth a window; 1 ms is below
# any slowdown worth profiling and above the scheduler's jitter); none judged before
# SLOW_STEP_MIN_STEPS such steps (a run's first steps are slow for reasons of their own).
SLOW_STEP_FACTOR: Final = 2.0
SLOW_STEP_HISTORY: Final = 50
SLOW_STEP_MIN_STEPS: Final = 10
SLOW_STEP_MIN_EXCESS_MS: Final = 1.0

# Kineto writes event timestamps in microseconds relative to this top-level field (nanoseconds).
BASE_TIME_KEY: Final = "baseTimeNanoseconds"

# Trace store layout.
TRACE_SUFFIX: Final = ".pt.trace.json.gz"
META_DIR: Final = "meta"
RUN_META_FILE: Final = "run.json"


class RunStatus(str, Enum):
    """Lifecycle of a run as recorded in ``meta/run.json``."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    # Capture hit a store failure (full disk, lost permission) and went on without it.
    DEGRADED = "degraded"
    # A signal ended the job, or readers found its heartbeat stopped.
    INTERRUPTED = "interrupted"


class TrainprofWarning(RuntimeWarning):
    """Capture went on without part of itself (a store failure, a session closed at exit).

    Issued once per run, naming the run directory and the error; the run records it as
    ``degraded`` (see :class:`RunStatus`).
    """


_MODULE_NAME = re.compile(r"^nn\.Module: (?P<path>\S+) \((?P<cls>[^)]*)\)(?P<bwd>\.backward)?$")


def module_range_name(qualified_name: str, class_name: str, *, backward: bool = False) -> str:
    """The range name for one nn.Module call: ``nn.Module: <qualified name> (<ClassName>)``.

    Args:
        qualified_name: the module's dotted name as ``named_modules()`` gives it.
        class_name: the module's class name.
        backward: name the backward range (same name with a ``.backward`` suffix).

    Returns:
        The event name.
    """
    name = f"{MODULE_PREFIX}{qualified_name} ({class_name})"
    return name + MODULE_BACKWARD_SUFFIX if backward else name


def parse_module_range_name(name: str) -> tuple[str, str, bool] | None:
    """Invert :func:`module_range_name`: ``(qualified_name, class_name, is_backward)`` or None."""
    match = _MODULE_NAME.match(name)
    if match is None:
        return None
    return match["path"], match["cls"], match["bwd"] is not None


def dataloader_range_name(iterator_name: str) -> str:
    """The data-wait range name TensorBoard's plugin counts as DataLoader time."""
    return f"{DATALOADER_PREFIX}{iterator_name}{DATALOADER_SUFFIX}"


def is_dataloader_range(name: str) -> bool:
    """True for a data-wait range name (both the prefix and the suffix, as the plugin checks)."""
    return name.startswith(DATALOADER_PREFIX) and name.endswith(DATALOADER_SUFFIX)
