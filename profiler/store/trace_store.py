"""The on-disk layout of one run (docs/architecture.md, "Trace store layout"), written atomically.

```
<root>/<run>/<worker>.<unix_ms>.pt.trace.json.gz   one per capture window per rank
<root>/<run>/meta/run.json                         config, environment, status (rank 0)
<root>/<run>/meta/rank.<rank>.json                 each rank's files, status and heartbeat
<root>/<run>/meta/steps.<rank>.jsonl               always-on per-step metrics
```
Nothing else ending in .json or .gz may sit in ``<root>/<run>/``: HTA loads every such file there.
Partial files carry a ``.partial`` suffix until they are renamed into place. Kineto's export of a
window goes to a scratch file first, in ``/dev/shm`` where it has room
(:meth:`RunStore.scratch_path`), and is removed once the window is written. Temporary names carry
the writer's host and pid (:mod:`profiler.store.scratch`), so :func:`remove_stale_scratch` can
remove what a killed process left.

``run.json`` is created once, atomically (:meth:`RunStore.create`): of two processes starting a
run of the same name at once, exactly one gets it. It carries ``host``, ``pid`` and a heartbeat
(:mod:`profiler.store.liveness`), and ``degraded`` / ``interrupted`` entries when those happen.
A root may be an fsspec URL (``s3://bucket/prefix``, ``memory://``): the run is then written
into a local staging directory as above and each file is uploaded whole as it changes
(:mod:`profiler.store.remote`); a failed upload takes the ``degraded`` path, like a full disk.

Every rank, rank 0 included, writes the same facts of its own (:data:`RANK_KEYS`) to
``meta/rank.<rank>.json``, a file no other rank writes: no rank waits for another, and readers
merge them (``run_files.read_run_record``). Rank 0's facts stay in ``run.json`` too, so readers
of the first layout still find them.
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import errno
import math
import os
import queue
import shutil
import socket
import struct
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from profiler.events import (
    META_DIR,
    RUN_FORMAT,
    RUN_META_FILE,
    TRACE_SUFFIX,
    RunStatus,
    TrainprofWarning,
)
from profiler.store.liveness import HEARTBEAT_KEY
from profiler.store.remote import check_writable, local_path, remote_exists, remote_url
from profiler.store.run_files import RANK_FORMAT
from profiler.store.scratch import (
    PARTIAL_SUFFIX,
    memory_scratch_path,
    partial_path,
    remove_stale,
    worker_name,
)
from profiler.store.step_log import StepLog
from profiler.store.upload import Uploader, staging_root

# gzip level 1 compresses Kineto's JSON to ~28 bytes/event in ~0.3 us/event; level 6 saves a
# further ~25% of disk at 2.5x the time, which would put stop-to-disk past its 1.5x budget.
# With python-isal installed its zlib-compatible deflate is used instead: ~4x faster at level 1
# for ~3% more bytes (zlib's level 1 alone costs ~0.5x Kineto's export of the same window).
GZIP_LEVEL = 1
# Compressing a window (~3 ms a MB) costs half as much as Kineto's export of it, so large
# documents are deflated in slices on up to this many threads (zlib releases the GIL), at most
# half the CPUs this process may use: on a busy 2-core machine a second thread only slows it.
GZIP_THREADS = 4
GZIP_SLICE_MIN_BYTES = 512 * 1024
# The interpreter's switch interval while a thread deflates ahead (see _FastSwitch): the
# compressor drops the GIL while it works but takes it back to start, between output blocks and
# to return, each time waiting up to the interval for the writer's Python work to let go.
DEFLATE_SWITCH_S = 0.0002
# Kineto exports each window to a scratch file that is read back and removed. In memory
# (/dev/shm) that costs ~0.9 ms less a 2 MB window than on ext4, where removing a file just
# written is itself ~0.5 ms; but Kineto reports no short write and a window cannot be exported
# twice, so memory is used only with SCRATCH_MIN_FREE free and SCRATCH_HEADROOM times the
# largest window so far.
SCRATCH_DIR = Path("/dev/shm")
SCRATCH_MIN_FREE = 1 << 30
SCRATCH_HEADROOM = 4
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"  # deflate, mtime 0, fastest, OS unknown
# Failures of a new file that may leave the old one writable in place: no room for a second
# copy, or a directory that lost its write permission.
_NO_NEW_FILE = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM)
# How long an upload to an object store may hold up a run's start (the first records, which
# also prove the store writable), its end (everything left) and a signal (the records).
CREATE_UPLOAD_S = 60.0
FINAL_UPLOAD_S = 120.0
SIGNAL_UPLOAD_S = 2.0
#: How often a session's ticker brings ``trace_files`` in the records up to date
#: (:meth:`RunStore.flush_meta`; the trigger-file poll's interval, so one wake-up runs both): a
#: window's write leaves that to it, which takes rewriting the records (two atomic writes,
#: ~0.5 ms) off the window's stop-to-disk. Readers find trace files by listing the directory.
META_FLUSH_S = 1.0
#: What each rank records of itself in ``meta/rank.<rank>.json`` (and rank 0 in run.json too).
RANK_KEYS = (
    "host", "pid", "status", "started_unix_s", "ended_unix_s", HEARTBEAT_KEY, "trace_files",
    "steps", "error", "degraded", "interrupted", "triggers",
)  # fmt: skip
__all__ = ["PARTIAL_SUFFIX", "RunStore", "StepLog", "atomic_write", "worker_name"]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The temporary file's name is this writer's own (:func:`scratch.partial_path`): two threads
    or processes writing the same file never write into one temporary file.
    """
    partial = partial_path(path)
    _write_new(partial, data, exclusive=False)  # os-level: ~0.1 ms less than write_bytes
    try:
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def gzip_bytes(
    parts: Sequence[bytes | memoryview],
    *,
    level: int = GZIP_LEVEL,
    tail: DeflateAhead | None = None,
) -> bytes:
    """One gzip member holding the concatenation of ``parts`` (and of ``tail``'s, after them).

    With one thread the parts stream through one compressor, never joined (a fresh 2 MB copy
    costs ~0.5 ms with its page faults). Large documents on machines with CPUs to spare are
    joined and deflated in slices on several threads instead (:func:`_gzip_parallel`). A
    ``tail`` already deflated (or being deflated) ahead ends the member: ``parts`` are deflated
    here as the slice before it.
    """
    if tail is not None:
        deflate = _deflate_module()
        head = _deflate(parts, level, final=False)
        size, crc = sum(len(part) for part in parts), _crc32(parts)
        deflated, tail_crc = tail.result()
        if hasattr(deflate, "crc32_combine"):  # python-isal's
            crc = deflate.crc32_combine(crc, tail_crc, tail.size)
        else:
            crc = _crc32(tail.parts, crc)
        size += tail.size
        return b"".join((_GZIP_HEADER, head, deflated, struct.pack("<II", crc, size & 0xFFFFFFFF)))
    size = sum(len(part) for part in parts)
    threads = min(GZIP_THREADS, _usable_cpus() // 2, size // GZIP_SLICE_MIN_BYTES)
    if threads >= 2:
        return _gzip_parallel(b"".join(parts), level, threads)
    deflate = _deflate_module()
    compressor = deflate.compressobj(level, deflate.DEFLATED, 16 + deflate.MAX_WBITS)  # gzip
    out = [compressor.compress(part) for part in parts]
    out.append(compressor.flush())
    return b"".join(out)


class SideJobs:
    """One thread that runs the window writer's jobs off its path, in the order they came.

    The deflate ahead (:class:`DeflateAhead`) and the removal of a window's scratch file
    (:func:`remove_soon`): ~0.2 ms each a 10-step window that the writer no longer waits for.
    The thread starts at the first job, as a bare thread (``threading.Thread.start()`` waits
    however long the new one takes to run, on a busy machine longer than a job), then waits on
    its queue: handing it a job then costs ~30 us where starting a thread for each cost ~170 us.
    A forked child gets a fresh, idle instance (see ``register_at_fork`` below): the parent's
    thread does not exist there. A job's exception is dropped (each job reports its own).
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._started = False
        self._start = threading.Lock()

    def submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the thread after the jobs submitted before it."""
        self._jobs.put(job)
        if not self._started:
            with self._start:
                if not self._started:
                    _thread.start_new_thread(self._run, ())
                    self._started = True

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every job submitted so far; whether they ran."""
        if not self._started:
            return True
        done = threading.Event()
        self._jobs.put(done.set)
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            with contextlib.suppress(Exception):
                job()


SIDE_JOBS = SideJobs()


def _fresh_side_jobs() -> None:
    """In a forked child: an idle side-job thread of its own, and the switch interval as it
    was before any deflate ahead the parent had in progress (none of them runs here)."""
    global SIDE_JOBS, _FAST_SWITCH
    SIDE_JOBS = SideJobs()
    _FAST_SWITCH = _FAST_SWITCH.forked()


def drain_side_jobs(timeout: float = 5.0) -> bool:
    """Wait up to ``timeout`` seconds for the side jobs submitted so far (a session's end: no
    scratch file outlives it); whether they all ran."""
    return SIDE_JOBS.drain(timeout)


def remove_soon(path: Path, *, spare: bool | None = None) -> None:
    """Remove ``path`` on the side-job thread where a CPU is spare, after the jobs before it
    (a window's deflate ahead), else now. ``spare``: the answer a caller took a moment before
    (a :class:`DeflateAhead`'s ``ahead``, in the same window's write), else it is looked up.
    A file it could not remove stays until :func:`remove_stale_scratch` finds its process gone."""
    if _spare_cpu() if spare is None else spare:
        SIDE_JOBS.submit(lambda: path.unlink(missing_ok=True))
    else:
        path.unlink(missing_ok=True)


class _FastSwitch:
    """The switch interval at :data:`DEFLATE_SWITCH_S` while any deflate ahead is in progress.

    At the default 5 ms, a thread that wants the GIL back waits for the holder's switch interval
    to run out: a 1.2 MB deflate (~1.3 ms) beside ~2.5 ms of the writer's Python took ~0.4 ms
    more to finish than at 0.2 ms, where the writer's wait for it fell to ~0.02 ms (in-process,
    40 runs each). It lasts as long as the job, a few milliseconds a window; an interval already
    shorter is left as it is. The interval is the process's: the first job in lowers it, the
    last one out puts it back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = 0.0

    def enter(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._saved = sys.getswitchinterval()
                if self._saved > DEFLATE_SWITCH_S:
                    sys.setswitchinterval(DEFLATE_SWITCH_S)
            self._depth += 1

    def leave(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._saved > DEFLATE_SWITCH_S:
                sys.setswitchinterval(self._saved)

    def forked(self) -> _FastSwitch:
        """A fresh instance for a forked child, the interval put back if it was lowered."""
        if self._depth and self._saved > DEFLATE_SWITCH_S:
            sys.setswitchinterval(self._saved)
        return _FastSwitch()


_FAST_SWITCH = _FastSwitch()
os.register_at_fork(after_in_child=_fresh_side_jobs)


class DeflateAhead:
    """The deflate of a document's last pieces, begun before its first pieces are known.

    The writer knows most of a window's document (Kineto's events, after ours) before it has
    worked out our events (~2 ms of Python a 10-step window): where a CPU is free
    (:func:`_spare_cpu`), the side-job thread (:class:`SideJobs`) deflates those pieces
    meanwhile (the compressor drops the GIL; the switch interval is short meanwhile, see
    :class:`_FastSwitch`), as the last slice of the member :func:`gzip_bytes` then writes.
    Whoever gets to the job first runs it: :meth:`result` takes it back from a thread that has
    not started it (on a busy machine it may not be scheduled in time), so the write never waits
    on an idle thread. The pieces must not change until then.
    """

    def __init__(self, parts: Sequence[bytes | memoryview], *, level: int = GZIP_LEVEL) -> None:
        self.parts = list(parts)
        self.size = sum(len(part) for part in self.parts)
        self._level = level
        self._claim = threading.Lock()  # held by whoever runs the job
        self._done = threading.Event()
        self._deflated: tuple[bytes, int] | None = None
        self._error: BaseException | None = None
        self._switching = _spare_cpu()  # the interval is short until the job ends
        if self._switching:
            _FAST_SWITCH.enter()
            try:
                SIDE_JOBS.submit(self.run)
            except BaseException:  # no thread (the process is at its limit): result() runs it
                self._switching = False
                _FAST_SWITCH.leave()

    @property
    def ahead(self) -> bool:
        """Whether the job went to the side-job thread (a CPU was spare)."""
        return self._switching

    def run(self) -> bool:
        """Deflate the pieces, unless another thread has taken the job; whether this one did."""
        if not self._claim.acquire(blocking=False):
            return False
        try:
            self._deflated = _deflate(self.parts, self._level, final=True), _crc32(self.parts)
        except BaseException as exc:  # handed to result()'s caller, the writer
            self._error = exc
        finally:
            if self._switching:
                _FAST_SWITCH.leave()
            self._done.set()
        return True

    def result(self) -> tuple[bytes, int]:
        """The raw deflate of the pieces (final block included), and their CRC-32."""
        if not self.run():
            self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._deflated is not None
        return self._deflated


def _gzip_parallel(data: bytes, level: int, threads: int) -> bytes:
    """Deflate ``data`` into one gzip member in ``threads`` slices at once (zlib drops the GIL).

    As pigz does: each slice but the last ends with a sync flush (byte-aligned, not final), so
    the raw deflate streams concatenate into one valid stream that any gzip reader inflates.
    Slices start with an empty window, which costs under 0.1% of the compressed size.
    """
    view, step = memoryview(data), -(-len(data) // threads)
    slices = [view[start : start + step] for start in range(0, len(data), step)]
    last = len(slices) - 1
    with ThreadPoolExecutor(max_workers=last) as pool:
        rest = [
            pool.submit(_deflate, [slices[i]], level, final=i == last) for i in range(1, last + 1)
        ]
        body = [_deflate([slices[0]], level, final=last == 0)]  # this thread takes a slice too
        crc = zlib.crc32(data)
        body += [future.result() for future in rest]
    trailer = struct.pack("<II", crc, len(data) & 0xFFFFFFFF)
    return b"".join((_GZIP_HEADER, *body, trailer))


def _crc32(parts: Sequence[bytes | memoryview], crc: int = 0) -> int:
    deflate = _deflate_module()
    for part in parts:
        crc = deflate.crc32(part, crc)
    return crc


def _spare_cpu() -> bool:
    """Whether a CPU is likely idle for a second thread: two usable, and the load (this
    process's busy thread counts as one) leaves one free. On a saturated machine the thread
    that deflates ahead only queues behind other work; there the writer deflates in turn.

    The load is the lower of the 1-minute load average and the threads runnable now. The
    average decays with a one-minute time constant: after a burst of work (load ~4) it stays
    over 1.5 for a minute or two while only the training thread runs on two CPUs, and each
    window's deflate waited for the writer meanwhile (the MLP's gzip + write 1.73 ms against
    0.67 with the deflate ahead). The count is one instant's."""
    cpus = _usable_cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        load = 0.0
    return cpus >= 2 and min(load, _runnable_now()) < cpus - 0.5


def _runnable_now() -> float:
    """Threads runnable on the machine at this instant, the caller's included (Linux's
    /proc/loadavg, "running/total" after the averages); infinity where that cannot be read."""
    try:
        with open("/proc/loadavg", "rb") as loadavg:
            return float(loadavg.read().split()[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        return math.inf


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _deflate(parts: Sequence[bytes | memoryview], level: int, *, final: bool) -> bytes:
    """A raw deflate slice of ``parts``: the last one (``final``), or one ending in a sync
    flush (byte-aligned, not final) that the next slice's stream follows."""
    deflate = _deflate_module()
    compressor = deflate.compressobj(level, deflate.DEFLATED, -deflate.MAX_WBITS)
    out = [compressor.compress(part) for part in parts]
    out.append(compressor.flush(deflate.Z_FINISH if final else deflate.Z_SYNC_FLUSH))
    return b"".join(out)


def remove_stale_scratch(run_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the scratch and partial files that processes of this host, now gone, left behind.

    Looks in ``SCRATCH_DIR`` (one listing) and, given ``run_dir``, in that run directory and
    its ``meta/``; files of live processes and of other hosts stay (see :mod:`scratch`).

    Returns:
        The files removed.
    """
    folders = [SCRATCH_DIR]
    if run_dir is not None:
        folders += [Path(run_dir), Path(run_dir) / META_DIR]
    return remove_stale(folders)


@cache
def _deflate_module() -> ModuleType:
    """python-isal's ``isal_zlib`` where installed (same API, ~4x faster), else ``zlib``."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib
    return isal_zlib


class RunStore:
    """One rank's view of a run directory: trace files, ``meta/run.json`` and the step log.

    Rank 0 owns ``meta/run.json``; every rank writes its own trace files, step log and
    ``meta/rank.<rank>.json``. The methods that write them may be called from several
    threads (the heartbeat) and from a signal handler: one re-entrant lock orders them, and
    nothing rewrites them once :meth:`finish` has recorded how the run ended, except a later
    degradation.
    """

    def __init__(self, root: str | os.PathLike[str], run_name: str, *, rank: int = 0) -> None:
        if not run_name or Path(run_name).name != run_name or run_name in {".", ".."}:
            raise ValueError(f"run_name must be a plain directory name, got {run_name!r}")
        url = remote_url(root)
        #: The run's URL when the root is an object store (then ``run_dir`` is the local
        #: staging directory its files are uploaded from); None for a local root.
        self.url = None if url is None else f"{url}/{run_name}"
        self.root = local_path(root) if url is None else staging_root()
        self.run_name = run_name
        self.rank = rank
        self.run_dir = self.root / run_name
        self.meta_dir = self.run_dir / META_DIR
        self.run_meta_path = self.meta_dir / RUN_META_FILE
        self.steps_path = self.meta_dir / f"steps.{rank}.jsonl"
        self.rank_meta_path = self.meta_dir / f"rank.{rank}.json"
        self.trace_files: list[Path] = []
        self._meta: dict[str, Any] = {}
        self._largest_trace = 0  # bytes, before gzip
        # Re-entrant: a signal handler on the main thread may write while the main thread is
        # inside a write of its own.
        self._lock = threading.RLock()
        self._finished = False
        # Trace files written since the records were: listed by flush_meta() off the write
        # path, or at once once the run is ending (a signal or finish(): no ticker follows).
        self._meta_stale = False
        self._meta_now = False
        self._upload: Uploader | None = None

    @property
    def location(self) -> str:
        """Where the run goes, in words: its URL, or its directory."""
        return self.url or str(self.run_dir)

    def create(self, config: Mapping[str, Any], environment: Mapping[str, Any]) -> None:
        """Make the run directory, check it is writable and new, and record the run as running.

        Rank 0 creates ``run.json`` atomically, with its content (a link from a temporary file,
        which fails if the name exists): of two processes racing for one run name exactly one
        succeeds, and no reader sees an empty ``run.json``.

        Raises:
            FileExistsError: rank 0 found a run of the same name already recorded there (or
                another process created it first).
            PermissionError: the directory cannot be created or written.
            OSError: an object store root cannot be reached (``RemoteStoreError``, naming it).
        """
        if self.url is not None:
            self._check_remote(self.url)
        try:
            self.meta_dir.mkdir(parents=True, exist_ok=True)
            probe = partial_path(self.meta_dir / "write-probe")
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise PermissionError(
                f"trace store {self.run_dir} is not writable: {exc.strerror or exc}"
            ) from exc
        now = time.time()
        self._meta = {
            "schema": RUN_FORMAT,
            "run_name": self.run_name,
            "status": RunStatus.RUNNING.value,
            "started_unix_s": now,
            "ended_unix_s": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            HEARTBEAT_KEY: now,
            "config": dict(config),
            "environment": dict(environment),
            "trace_files": [],
            "steps": 0,
            "error": None,
        }
        if self.rank == 0:
            self._create_meta()
        _create(self.rank_meta_path, self._rank_record(), exclusive=False)
        if self.url is not None:
            self._start_upload(self.url)

    def _check_remote(self, url: str) -> None:
        check_writable(url)
        if self.rank == 0 and remote_exists(f"{url}/{META_DIR}/{RUN_META_FILE}"):
            raise FileExistsError(
                f"run {self.run_name!r} already exists at {url}; choose another run_name"
            )

    def _start_upload(self, url: str) -> None:
        """Upload the first records, which proves the store writable, then upload on."""
        uploader = Uploader(self.run_dir, url, self._upload_failed)
        uploader.start()
        if not uploader.flush(CREATE_UPLOAD_S):
            uploader.close(0)
            why = uploader.problem or f"no answer in {CREATE_UPLOAD_S:.0f} s"
            raise PermissionError(f"trace store {url} is not writable: {why}")
        self._upload = uploader

    def _upload_failed(self, reason: str) -> None:
        """The uploader's first failure after the start: warn once, and degrade the run."""
        if self._upload is None:
            return  # at the start: create() raises it
        warnings.warn(
            f"trainprof: {reason}; training goes on, and the run's files wait in "
            f"{self.run_dir} for the next try",
            TrainprofWarning,
            stacklevel=2,
        )
        self.mark_degraded(reason, at_step=None)

    def _create_meta(self) -> None:
        try:
            _create(self.run_meta_path, orjson.dumps(self._meta, option=orjson.OPT_INDENT_2))
        except FileExistsError:
            raise FileExistsError(
                f"run {self.run_name!r} already exists in {self.root} (or another process "
                "is starting it); choose another run_name or remove that directory"
            ) from None

    def trace_path(self, unix_ms: int | None = None) -> Path:
        """Where the next capture window's trace goes."""
        stamp = int(time.time() * 1000) if unix_ms is None else unix_ms
        path = self.run_dir / f"{worker_name()}.{stamp}{TRACE_SUFFIX}"
        while path.exists() or path in self.trace_files:  # two windows in one millisecond
            stamp += 1
            path = self.run_dir / f"{worker_name()}.{stamp}{TRACE_SUFFIX}"
        return path

    def scratch_path(self, path: Path) -> Path:
        """A scratch file for Kineto's export of the window bound for ``path``.

        In ``SCRATCH_DIR`` where it has room (see ``SCRATCH_MIN_FREE``), else beside ``path``.
        """
        try:
            stats = os.statvfs(SCRATCH_DIR)
            roomy = os.access(SCRATCH_DIR, os.W_OK)
        except OSError:  # no such directory (macOS, Windows)
            roomy = False
        else:
            free = stats.f_bavail * stats.f_frsize
            roomy = roomy and free >= max(SCRATCH_MIN_FREE, SCRATCH_HEADROOM * self._largest_trace)
        return memory_scratch_path(SCRATCH_DIR, path) if roomy else partial_path(path, ".kineto")

    def write_trace(
        self,
        path: Path,
        document: bytes | Sequence[bytes | memoryview],
        *,
        tail: DeflateAhead | None = None,
    ) -> None:
        """Gzip ``document`` into ``path`` atomically; ``run.json`` lists it soon after.

        :attr:`trace_files` lists it at once; the records (``run.json``, ``rank.<rank>.json``)
        at the next :meth:`flush_meta`, or here once the run is ending (:meth:`mark_interrupted`,
        :meth:`finish`). Readers find trace files by listing the directory.

        Args:
            path: from :meth:`trace_path`.
            document: the trace, as bytes or as pieces to concatenate (see ``splice_parts``).
            tail: the document's last pieces, deflated ahead (see ``Splice``): they follow
                ``document``'s.
        """
        parts = [document] if isinstance(document, bytes) else document
        size = sum(len(part) for part in parts) + (tail.size if tail else 0)
        self._largest_trace = max(self._largest_trace, size)
        atomic_write(path, gzip_bytes(parts, tail=tail))
        self.trace_files.append(path)
        with self._lock:
            if not self._meta:
                return
            self._meta["trace_files"].append(path.name)
            self._meta_stale = True
            if self._meta_now:
                self._write_meta()
            elif self._upload is not None:
                self._upload.wake()  # the trace itself goes up now

    def flush_meta(self) -> None:
        """Rewrite the records if trace files were written since they were (the ticker's)."""
        with self._lock:
            if self._meta_stale and not self._finished:
                self._write_meta()

    def heartbeat(self, now: float | None = None) -> None:
        """Rewrite ``run.json`` with a fresh ``heartbeat_unix_s`` (nothing once finished)."""
        with self._lock:
            if self._meta and not self._finished:
                self._meta[HEARTBEAT_KEY] = time.time() if now is None else now
                self._write_meta()

    def mark_degraded(self, reason: str, *, at_step: int | None) -> None:
        """Record that capture went on without part of itself (the first reason is kept).

        The status stays ``running`` while the run goes on, so readers can still tell a run
        killed later; :meth:`finish` records ``degraded``. After a ``complete`` finish the
        status becomes ``degraded`` here.
        """
        with self._lock:
            if not self._meta:
                return
            self._meta.setdefault("degraded", {"reason": reason, "at_step": at_step})
            if self._meta["status"] == RunStatus.COMPLETE.value:
                self._meta["status"] = RunStatus.DEGRADED.value
            self._write_meta()

    def record_trigger(self, trigger: Mapping[str, Any]) -> None:
        """List why a window opened outside the schedule (``triggers`` in ``run.json``)."""
        with self._lock:
            if self._meta:
                self._meta.setdefault("triggers", []).append(dict(trigger))
                self._write_meta()

    def mark_interrupted(self, signal_name: str, *, at_step: int) -> None:
        """Record that a signal is ending the run: status ``interrupted``, and which signal."""
        with self._lock:
            if not self._meta:
                return
            self._meta["status"] = RunStatus.INTERRUPTED.value
            self._meta["interrupted"] = {"signal": signal_name, "at_step": at_step}
            self._meta_now = True  # the window a signal writes is listed before it goes on
            self._write_meta()
        if self._upload is not None:
            self._upload.flush(SIGNAL_UPLOAD_S)

    def finish(self, status: RunStatus, *, steps: int, error: BaseException | None = None) -> None:
        """Record how the run ended."""
        with self._lock:
            if not self._meta:
                return
            self._finished = self._meta_now = True
            self._meta.update(status=status.value, ended_unix_s=time.time(), steps=steps)
            if error is not None:
                self._meta["error"] = {"type": type(error).__qualname__, "message": str(error)}
            self._write_meta()
        if self._upload is not None:
            self._end_upload(self._upload)

    def _end_upload(self, uploader: Uploader) -> None:
        """Upload what is left; the staging directory goes at exit once all of it went."""
        if uploader.close(FINAL_UPLOAD_S):
            atexit.register(shutil.rmtree, self.root, ignore_errors=True)
            return
        why = uploader.problem or f"still uploading after {FINAL_UPLOAD_S:.0f} s"
        warnings.warn(
            f"trainprof: not every file of run {self.url} could be uploaded ({why}); they "
            f"stay in {self.run_dir}",
            TrainprofWarning,
            stacklevel=2,
        )

    def _write_meta(self) -> None:
        """Rewrite this rank's record, and on rank 0 ``run.json``."""
        with self._lock:
            self._write_rank_meta()
            if self.rank == 0:
                _replace(self.run_meta_path, orjson.dumps(self._meta, option=orjson.OPT_INDENT_2))
            self._meta_stale = False
        if self._upload is not None:
            self._upload.wake()  # a new trace, a new status: up now, not at the next look

    def _write_rank_meta(self) -> None:
        _replace(self.rank_meta_path, self._rank_record())

    def _rank_record(self) -> bytes:
        record = {key: self._meta[key] for key in RANK_KEYS if key in self._meta}
        record = {"schema": RANK_FORMAT, "run_name": self.run_name, "rank": self.rank, **record}
        return orjson.dumps(record, option=orjson.OPT_INDENT_2)


def _create(path: Path, data: bytes, *, exclusive: bool = True) -> None:
    """Create ``path`` holding ``data``, whole at once: a link from a temporary file, which
    fails if the name exists (``exclusive``), else a rename over it.

    Raises:
        FileExistsError: ``exclusive`` and ``path`` exists.
    """
    partial = partial_path(path)
    try:
        partial.write_bytes(data)
        if not exclusive:
            os.replace(partial, path)
            return
        try:
            os.link(partial, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (some FUSE and SMB mounts): create exclusively
            _write_new(path, data)
    finally:
        partial.unlink(missing_ok=True)


def _replace(path: Path, data: bytes) -> None:
    """Replace a small metadata file atomically; on a full disk, in place if it can be."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        if exc.errno not in _NO_NEW_FILE or not path.exists():
            raise
        # The old file's blocks may hold the new one (it grows by a few hundred bytes at
        # most): not atomic, but the status of a run on a full disk is worth more.
        _rewrite_in_place(path, data)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite ``path`` where its blocks already hold ``data`` (else ENOSPC, file untouched)."""
    if os.stat(path).st_blocks * 512 < len(data):  # would need a new block: could tear the file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    with path.open("r+b") as file:
        file.write(data)
        file.truncate()


def _write_new(path: Path, data: bytes, *, exclusive: bool = True) -> None:
    """Create ``path`` holding ``data``; FileExistsError if it exists (``exclusive``), else
    an existing file is truncated. A failed write removes the file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        path.unlink(missing_ok=True)  # ours: created above; half a file helps no one
        raise
    finally:
        os.close(fd)
