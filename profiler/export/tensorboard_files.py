"""Filesystem moves of the TensorBoard export: stage beside the logdir, swap in at once."""

from __future__ import annotations

import ctypes
import errno
import gzip
import os
import sys
import tempfile
import zlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from types import ModuleType

from profiler.store.trace_store import GZIP_LEVEL

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 31  # zlib's gzip container (its header's mtime is 0: the same text, the same bytes)


def staging_dir(logdir: Path, run_name: str) -> Path:
    """A new empty directory on the logdir's filesystem, outside the logdir where possible.

    TensorBoard and its profiler plugin scan every directory under the logdir (hidden ones
    too), so a staging directory inside it could show up as a run while the export is written.
    """
    parent = logdir.resolve().parent
    prefix = f".{logdir.resolve().name}.{run_name}.export-"
    try:
        if os.stat(parent).st_dev == os.stat(logdir).st_dev:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except OSError:  # the parent is not writable: stage inside the logdir instead
        pass
    return Path(tempfile.mkdtemp(prefix=f".{run_name}.export-", dir=logdir))


def replace_dir(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an existing ``target`` ends up at ``staging``.

    Where the OS can swap two directories in one call (Linux ``renameat2``), readers see the
    old export or the new one, never neither; elsewhere there is a moment without one.
    """
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        return
    aside = staging.with_name(staging.name + ".old")
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(aside, target)
        raise
    os.rename(aside, staging)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically; False where the OS or the filesystem cannot."""
    if sys.platform != "linux":
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc before 2.28, musl
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def copy_trace(source: Path, target: Path) -> None:
    """Copy a trace file, gzipping it when it is plain JSON (the plugin's ``.json.gz`` name)."""
    data = source.read_bytes()
    if data[:2] != _GZIP_MAGIC:
        data = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    target.write_bytes(data)


def write_gzip(chunks: Iterable[bytes], target: Path) -> None:
    """Write text given a piece at a time as one gzip file, compressing as it comes."""
    compressor = _deflate_module().compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    with target.open("wb") as file:
        for chunk in chunks:
            file.write(compressor.compress(chunk))
        file.write(compressor.flush())


@cache
def _deflate_module() -> ModuleType:
    """python-isal's ``isal_zlib`` where installed (same API, ~4x faster), else ``zlib``, as the
    store writes traces."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib
    return isal_zlib
