"""One device model for every accelerator: what each trace category means, and which device a
trace ran on.

Kineto writes each vendor's activity under its own categories (libkineto's ``ActivityType``
names): CUDA and ROCm share ``kernel``/``gpu_memcpy``/``gpu_memset``/``cuda_runtime`` (ROCm's
runtime calls are ``hip*`` there), MTIA has ``mtia_ccp_events`` (its device activity, HTA's
"GPU kernels" on MTIA: hta/common/types.py, ``KERNEL_CATEGORY_PATTERN``) and ``mtia_runtime``,
XPU has ``xpu_runtime``/``xpu_driver``/``xpu_sync``. The loader maps each category to a *kind*
once (:data:`KIND_BY_CATEGORY`); every analysis then reads kinds, so it works the same on every
device. What differs between devices beyond that (which launch calls to pair, which figures
exist, what a lane is called) is a :class:`Device`, found by :func:`device_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

DeviceName = Literal["cuda", "rocm", "mtia", "xpu", "cpu"]

# Kinds of device activity: what runs on the device's timeline (its streams).
KERNEL: Final = "kernel"
MEMCPY: Final = "memcpy"
MEMSET: Final = "memset"
COMMUNICATION: Final = "communication"
DEVICE_KINDS: Final = (KERNEL, MEMCPY, MEMSET, COMMUNICATION)
# Host calls into the device's runtime and driver: what launches device activity.
LAUNCH_KINDS: Final = ("runtime", "driver")

# Host-side categories, the same on every device (2021's spellings too).
_HOST_KINDS = {
    "cpu_op": "cpu_op",
    "operator": "cpu_op",
    "user_annotation": "user_annotation",
    "gpu_user_annotation": "gpu_user_annotation",
    "python_function": "python_function",
    "python": "python_function",
    "trace": "trace",
    # A PrivateUse1 backend's runtime (an out-of-tree device): launches, on no device we model.
    "privateuse1_runtime": "runtime",
    "privateuse1_driver": "driver",
}


@dataclass(frozen=True)
class Device:
    """What one kind of device writes into a trace, and which figures it has.

    Attributes:
        name: ``cuda``, ``rocm``, ``mtia``, ``xpu`` or ``cpu`` (the summary's ``device``).
        label: what to call the device in text and timeline lanes ("GPU", "MTIA"...).
        categories: trace category (lower case) to kind, for the categories this device
            writes beyond the host ones.
        launch_calls: runtime/driver calls that launch one piece of device work (a kernel,
            an asynchronous copy or set), paired with it for launch statistics.
        sync_calls: endings of the runtime calls that block the host until the device
            catches up.
        kernel_metrics: kernels carry CUPTI's launch figures (blocks per SM, estimated
            achieved occupancy), so SM efficiency and occupancy exist.
        tensor_core_names: kernel names tell Tensor Core kernels (NVIDIA's naming), so the
            tensor-core share exists.
    """

    name: DeviceName
    label: str
    categories: dict[str, str]
    launch_calls: frozenset[str] = frozenset()
    sync_calls: tuple[str, ...] = ()
    kernel_metrics: bool = False
    tensor_core_names: bool = False

    @property
    def has_timeline(self) -> bool:
        """Whether the device has activity of its own (so idle and temporal breakdowns)."""
        return any(kind in DEVICE_KINDS for kind in self.categories.values())

    def categories_of(self, kind: str) -> tuple[str, ...]:
        """The categories this device writes for ``kind`` (``kernel``, ``runtime``...)."""
        return tuple(cat for cat, k in self.categories.items() if k == kind)


# The GPU categories of Kineto's CUPTI and roctracer back ends, both schema generations.
_GPU_CATEGORIES = {
    "kernel": KERNEL,
    "gpu_memcpy": MEMCPY,
    "memcpy": MEMCPY,
    "gpu_memset": MEMSET,
    "memset": MEMSET,
    "cuda_runtime": "runtime",
    "runtime": "runtime",
    "cuda_driver": "driver",
    "cuda_sync": "sync",
    # Kineto's COLLECTIVE_COMM: collectives recorded as device activity (XPU's PTI, MSPTI).
    "collective_comm": COMMUNICATION,
}

# HTA 0.5.0's launches (cuda_kernel_launch_stats) and the driver API's (Triton).
_CUDA_LAUNCHES = frozenset({
    "cudaLaunchKernel", "cudaLaunchKernelExC", "cudaMemcpyAsync", "cudaMemsetAsync",
    "cuLaunchKernel", "cuLaunchKernelEx",
})  # fmt: skip
# HTA's ROCm launches (trace_symbol_table.py, get_runtime_launch_events_query), but
# hipMemcpyWithStream: a synchronous copy, left out as CUDA's are.
_HIP_LAUNCHES = frozenset({
    "hipLaunchKernel", "hipExtLaunchKernel", "hipModuleLaunchKernel",
    "hipExtModuleLaunchKernel", "hipMemcpyAsync", "hipMemsetAsync",
})  # fmt: skip
# Unified Runtime and Level Zero enqueue calls, as Intel's PTI names them.
_XPU_LAUNCHES = frozenset({
    "urEnqueueKernelLaunch", "urEnqueueKernelLaunchExp", "urEnqueueUSMMemcpy",
    "urEnqueueUSMFill", "zeCommandListAppendLaunchKernel", "zeCommandListAppendMemoryCopy",
    "zeCommandListAppendMemoryFill",
})  # fmt: skip
# cudaDeviceSynchronize, hipStreamSynchronize...: CUDA's and HIP's spellings share these endings.
_GPU_SYNC_CALLS = ("DeviceSynchronize", "StreamSynchronize", "EventSynchronize")

CUDA = Device(
    name="cuda",
    label="GPU",
    categories=_GPU_CATEGORIES,
    launch_calls=_CUDA_LAUNCHES,
    sync_calls=_GPU_SYNC_CALLS,
    kernel_metrics=True,
    tensor_core_names=True,
)
ROCM = Device(
    name="rocm",
    label="GPU",
    categories=_GPU_CATEGORIES,
    launch_calls=_HIP_LAUNCHES,
    sync_calls=_GPU_SYNC_CALLS,
)
MTIA = Device(
    name="mtia",
    label="MTIA",
    categories={"mtia_ccp_events": KERNEL, "mtia_runtime": "runtime"},
    # HTA's MTIA launch (cuda_kernel_analysis.py, cuda_kernel_launch_stats).
    launch_calls=frozenset({"runFunction - job_prep_and_submit_for_execution"}),
    sync_calls=("synchronize", "synchronizeStream"),
)
XPU = Device(
    name="xpu",
    label="XPU",
    categories={
        **{c: k for c, k in _GPU_CATEGORIES.items() if k in DEVICE_KINDS},
        "xpu_runtime": "runtime",
        "xpu_driver": "driver",
        "xpu_sync": "sync",
    },
    launch_calls=_XPU_LAUNCHES,
    sync_calls=("urQueueFinish", "urEventWait", "Synchronize"),
)
CPU = Device(name="cpu", label="CPU", categories={})

DEVICES: Final[dict[str, Device]] = {d.name: d for d in (CUDA, ROCM, MTIA, XPU, CPU)}

#: Every category the loader knows (lower case) to its kind; any other is "other".
KIND_BY_CATEGORY: Final[dict[str, str]] = {
    **_HOST_KINDS,
    **{cat: kind for device in DEVICES.values() for cat, kind in device.categories.items()},
}
#: Launch calls of every device: a trace has one device's, so one set serves all.
LAUNCH_CALLS: Final = frozenset().union(*(d.launch_calls for d in DEVICES.values()))

# Category prefixes that only one device writes, and the runtime-name prefix of ROCm's calls.
_CATEGORY_PREFIX: Final = (("mtia_", MTIA), ("xpu_", XPU))
_ROCM_META_KEYS: Final = ("roctracer_version", "hip_runtime_version")
_ROCM_RUNTIME_PREFIX: Final = "hip"
_AMD_NAMES: Final = ("AMD", "Radeon", "Instinct")


def device_model(name: str) -> Device:
    """The model of the device ``name`` (a trace's ``device``); CUDA's for a name not known."""
    return DEVICES.get(name, CUDA)


def detect_device(events: pd.DataFrame, meta: dict[str, Any]) -> DeviceName:
    """Which device a trace ran on, from its events' categories and its top-level keys.

    In order: any ``mtia_*`` category is MTIA, any ``xpu_*`` one XPU; then a trace with device
    activity or ``deviceProperties`` is ROCm when roctracer wrote it (its version keys), its
    runtime calls are ``hip*`` or its devices are AMD's, else CUDA; the rest is CPU-only.

    Args:
        events: the trace's complete events (``cat``, ``kind``, ``name`` columns).
        meta: the file's top-level keys.
    """
    categories = _present(events["cat"])
    for prefix, device in _CATEGORY_PREFIX:
        if any(cat.lower().startswith(prefix) for cat in categories):
            return device.name
    kinds = _present(events["kind"])
    props = meta.get("deviceProperties")
    if not any(kind in DEVICE_KINDS for kind in kinds) and not props:
        return "cpu"
    if any(key in meta for key in _ROCM_META_KEYS) or _amd_devices(props):
        return "rocm"
    if "runtime" in kinds and _any_name(events, "runtime", _ROCM_RUNTIME_PREFIX):
        return "rocm"
    return "cuda"


def _present(column: pd.Series) -> list[str]:
    """The distinct values of a categorical column that occur (by code: no string copies)."""
    values = column.array
    if not isinstance(values, pd.Categorical):
        return [str(v) for v in pd.unique(column.astype(str))]
    used = np.bincount(values.codes + 1, minlength=len(values.categories) + 1)[1:] > 0
    return [str(v) for v in values.categories[used]]


def _amd_devices(props: Any) -> bool:
    if not isinstance(props, list):
        return False
    names = [str(p.get("name", "")) for p in props if isinstance(p, dict)]
    return any(mark in name for name in names for mark in _AMD_NAMES)


def _any_name(events: pd.DataFrame, kind: str, prefix: str) -> bool:
    """Whether an event of ``kind`` has a name starting with ``prefix``, looking at each
    distinct name once (a string copy of the column cost a quarter of a load's memory)."""
    names = events["name"].array
    codes = np.unique(names.codes[(events["kind"] == kind).to_numpy()])
    return any(str(name).startswith(prefix) for name in names.categories[codes[codes >= 0]])
