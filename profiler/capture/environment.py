"""What a run ran on: torch and CUDA versions, devices, host, ranks, git commit."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from typing import Any

import torch


def distributed_info() -> dict[str, Any]:
    """This process's rank and the world size (torch.distributed, else the launcher's env)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return {
            "backend": str(dist.get_backend()),
            "rank": dist.get_rank(),
            "world_size": dist.get_world_size(),
        }
    return {
        "rank": int(os.environ.get("RANK", 0)),
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
    }


def device_kind() -> str:
    """``cuda``, ``rocm`` or ``cpu``: where training runs, as far as torch can tell."""
    if not torch.cuda.is_available():
        return "cpu"
    return "rocm" if torch.version.hip else "cuda"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    """The environment block of ``meta/run.json``."""
    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append(
                {"index": index, "name": props.name, "total_memory_bytes": props.total_memory}
            )
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device_kind(),
        "devices": devices,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
        **{key: value for key, value in distributed_info().items() if key != "rank"},
    }
