"""Names of the store's temporary files, and the removal of those that dead processes left behind.

Every temporary file names the process that writes it, ``<hostname>_<pid>`` (the worker name that
torch.profiler's trace files carry), plus a per-process counter, so two writers never share one
and a later session can tell whose it was:

```
<dir>/.<host>_<pid>.<n>.<final name>.partial                  atomic_write's temporary file
<dir>/.<host>_<pid>.<n>.<trace name>.kineto.partial           Kineto's export, beside the trace
/dev/shm/trainprof-<host>_<pid>.<n>.<trace name>.kineto.partial   Kineto's export, in memory
```
A process killed with SIGKILL cannot remove its own; :func:`remove_stale` removes those of
processes that are gone from this host
(``trace_store.remove_stale_scratch``). The host in the name keeps it away from files of another
machine (a run directory on a shared file system) or another container with a /dev/shm of its own.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterable
from pathlib import Path

from profiler.store.liveness import pid_alive

PARTIAL_SUFFIX = ".partial"
SCRATCH_PREFIX = "trainprof-"
_serial = itertools.count()  # next() on a count is atomic under the GIL: unique across threads


def worker_name() -> str:
    """``<hostname>_<pid>``, as torch.profiler's ``tensorboard_trace_handler`` names workers."""
    return f"{socket.gethostname()}_{os.getpid()}"


def partial_path(path: Path, kind: str = "") -> Path:
    """A temporary name beside ``path`` that no other writer, thread or process, uses.

    Args:
        path: the file it will become (or serve).
        kind: a tag before the ``.partial`` suffix, e.g. ``".kineto"``.
    """
    return path.with_name(f".{worker_name()}.{next(_serial)}.{path.name}{kind}{PARTIAL_SUFFIX}")


def memory_scratch_path(directory: Path, path: Path) -> Path:
    """A scratch file in ``directory`` (shared by every process) for the export bound for
    ``path``."""
    name = f"{SCRATCH_PREFIX}{worker_name()}.{next(_serial)}.{path.name}.kineto{PARTIAL_SUFFIX}"
    return directory / name


def scratch_owner(name: str, host: str | None = None) -> int | None:
    """The pid of the process of ``host`` (default: this one) that wrote scratch file ``name``.

    Returns:
        ``None`` where ``name`` is no scratch file of ours or was written on another host.
    """
    if not name.endswith(PARTIAL_SUFFIX):
        return None
    host = socket.gethostname() if host is None else host
    for lead in (".", SCRATCH_PREFIX):
        prefix = f"{lead}{host}_"
        if name.startswith(prefix):
            pid, dot, _ = name[len(prefix) :].partition(".")
            return int(pid) if dot and pid.isdigit() else None
    return None


def remove_stale(folders: Iterable[Path]) -> list[Path]:
    """Remove the scratch and partial files in ``folders`` whose writer, a process of this host,
    is gone.

    Files of live processes, of other hosts, and anything not named as ours are left alone; a
    file that cannot be removed is skipped.

    Returns:
        The files removed.
    """
    host, me, removed = socket.gethostname(), os.getpid(), []
    for folder in folders:
        for name in _names(folder):
            pid = scratch_owner(name, host)
            if pid is None or pid == me or pid_alive(pid):
                continue
            try:
                (folder / name).unlink()
            except OSError:  # removed by another session meanwhile, or not ours to remove
                continue
            removed.append(folder / name)
    return removed


def _names(folder: Path) -> Iterable[str]:
    try:
        return [name for name in os.listdir(folder) if name.endswith(PARTIAL_SUFFIX)]
    except OSError:  # no such directory (no /dev/shm on macOS), or unreadable
        return []
