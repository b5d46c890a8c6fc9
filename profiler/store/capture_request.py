"""On-demand capture requests: a trigger file under a run's ``meta/``, read by the live session.

Like Kineto's on-demand tracing, but through the file system, so it works on any machine that
can write the run directory::

    <run>/meta/capture          every rank of the run captures
    <run>/meta/capture.<rank>   only that rank

The file holds the number of steps to capture (``"5\\n"``) or nothing, for
:data:`DEFAULT_REQUEST_STEPS`. It is written atomically (a temporary file renamed into place),
so each write is a new file: a live session acts once on each version it sees, told apart by
inode, size and modification time, and leaves the file where it is (another rank may not have
read it yet). ``trainprof capture RUN_DIR [--steps N] [--rank R]`` writes it.
"""

from __future__ import annotations

import os
from pathlib import Path

from profiler.events import META_DIR
from profiler.store.trace_store import atomic_write

REQUEST_FILE = "capture"
DEFAULT_REQUEST_STEPS = 3
# Kineto keeps every event of a window in memory until the window ends: a request is capped.
MAX_REQUEST_STEPS = 100
# What tells one version of a trigger file from the next: (inode, size, mtime_ns).
FileVersion = tuple[int, int, int]


def request_paths(run_dir: str | os.PathLike[str], rank: int) -> tuple[Path, Path]:
    """The trigger files a rank reads: the run's, then its own."""
    meta = Path(run_dir) / META_DIR
    return meta / REQUEST_FILE, meta / f"{REQUEST_FILE}.{rank}"


def write_request(
    run_dir: str | os.PathLike[str], *, steps: int | None = None, rank: int | None = None
) -> Path:
    """Ask the run's live session(s) to capture the next ``steps`` steps.

    Args:
        run_dir: the run directory (holding ``meta/run.json``).
        steps: steps to record (default :data:`DEFAULT_REQUEST_STEPS`).
        rank: only this rank (default: every rank).

    Returns:
        The trigger file written.

    Raises:
        ValueError: ``steps`` outside 1..MAX_REQUEST_STEPS, or a negative ``rank``.
        FileNotFoundError: ``run_dir`` has no ``meta/`` directory.
    """
    if steps is not None and not 1 <= steps <= MAX_REQUEST_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_REQUEST_STEPS}, got {steps}")
    if rank is not None and rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    shared, own = request_paths(run_dir, 0 if rank is None else rank)
    path = shared if rank is None else own
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a trainprof run (no {META_DIR}/ directory)")
    atomic_write(path, b"" if steps is None else f"{steps}\n".encode())
    return path


def read_request(path: Path, seen: FileVersion | None) -> tuple[FileVersion | None, int | None]:
    """Read a trigger file if it is a version not ``seen`` before.

    Returns:
        The version now present (None: no file), and the steps it asks for (None: nothing new).
        Unreadable text asks for :data:`DEFAULT_REQUEST_STEPS`; a count is clamped to
        1..MAX_REQUEST_STEPS.
    """
    try:
        stat = path.stat()
    except OSError:
        return None, None
    version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if version == seen:
        return version, None
    try:
        text = path.read_bytes()[:64].decode("ascii", "replace").strip()
    except OSError:
        return seen, None  # gone between the two calls: look again next time
    steps = int(text) if text.isdigit() else DEFAULT_REQUEST_STEPS
    return version, max(1, min(MAX_REQUEST_STEPS, steps))
