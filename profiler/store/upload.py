"""Uploads of one rank's run to an object store (see :mod:`profiler.store.remote`).

A rank writes its run into a local staging directory exactly as into a local root, and a
background thread copies each of its files that changed to the same name under the URL, whole:
one PUT per object, so a reader sees the old object or the whole new one (object stores have no
rename, and need none). A trace goes up after its window, the rank's record and ``run.json``
after each rewrite (the heartbeat too), the step log after its flushes; :meth:`Uploader.flush`
waits for what is written so far, within a limit (at the run's end, on a signal).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from profiler.events import META_DIR
from profiler.store.remote import describe_error, filesystem
from profiler.store.scratch import PARTIAL_SUFFIX

#: How often the uploader looks for changed files; a trace is sent as soon as it is written.
UPLOAD_INTERVAL_S = 2.0
#: A file that grows (the step log: ~400 bytes a step) is sent whole each time, so it is sent
#: again no sooner than its size at this rate: 40 MB of steps go up every 40 s, not every 2.
RESEND_BYTES_PER_S = 1 << 20


class Uploader:
    """Copies one rank's files from a local staging run directory to the run's URL, whole.

    Files are those directly in the run directory and in its ``meta/`` (not temporary ones),
    sent when their size or modification time changed since they were last sent, and a file
    sent before no sooner than :data:`RESEND_BYTES_PER_S` allows (a flush sends all). A failed
    upload is retried at the next pass; the first one is told to ``on_failure`` (the store's
    degraded path), later ones are quiet.

    Args:
        local_dir: the staging run directory.
        url: the run's URL.
        on_failure: told the first failure, in words naming the file and the URL.
        interval_s: how often to look for changed files.
        clock: seconds, for the resend limit (tests pass a fake one).
    """

    def __init__(
        self,
        local_dir: Path,
        url: str,
        on_failure: Callable[[str], None],
        *,
        interval_s: float = UPLOAD_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local_dir = local_dir
        self.url = url
        self.failures = 0  # uploads that failed, all told
        self.problem: str | None = None  # the latest failure, in words
        self._fs, self._path = filesystem(url)
        self._on_failure = on_failure
        self._interval_s = interval_s
        self._clock = clock
        self._sent: dict[Path, tuple[tuple[int, int], float]] = {}  # (size, mtime), when
        # One re-entrant lock for everything: a signal handler may wake or flush while the
        # main thread is inside either (an Event's own lock would deadlock there).
        self._state = threading.Condition(threading.RLock())
        self._kick = False
        self._asked = self._done = 0
        self._failed = False  # whether the latest pass failed
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="trainprof-upload", daemon=True)

    def start(self) -> None:
        """Start the background thread."""
        self._thread.start()

    def wake(self) -> None:
        """Look for changed files now (a trace just written goes up at once)."""
        with self._state:
            self._kick = True
            self._state.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every file written before this call has been sent, at most
        ``timeout_s``. Whether it was, with no failure in that pass."""
        if not self._thread.is_alive():
            return False
        with self._state:
            self._asked += 1
            target = self._asked
            self._kick = True
            self._state.notify_all()
            done = self._state.wait_for(lambda: self._done >= target, timeout_s)
            return done and not self._failed

    def close(self, timeout_s: float) -> bool:
        """Send what is left, at most ``timeout_s``, and stop; whether all of it went."""
        self._closing = True
        return self.flush(timeout_s)

    def _run(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._kick, self._interval_s)
                self._kick = False
                asked, closing = self._asked, self._closing
                flushing = asked != self._done
            failed = self.send_changed(everything=flushing)
            with self._state:
                self._done, self._failed = asked, failed
                self._state.notify_all()
                if closing and asked == self._asked:
                    return

    def send_changed(self, *, everything: bool = True) -> bool:
        """Send each file changed since it was last sent; whether any failed.

        Args:
            everything: also files sent too recently for :data:`RESEND_BYTES_PER_S`.
        """
        failed = False
        for path in self._files():
            try:
                stat = path.stat()
            except OSError:  # replaced meanwhile: the next pass sends the new one
                continue
            stamp, now = (stat.st_size, stat.st_mtime_ns), self._clock()
            last, sent_at = self._sent.get(path, (None, -math.inf))
            if last == stamp:
                continue
            if not everything and now - sent_at < stat.st_size / RESEND_BYTES_PER_S:
                continue
            remote = f"{self._path}/{path.relative_to(self.local_dir).as_posix()}"
            try:
                self._fs.put_file(str(path), remote)
            except Exception as exc:  # s3fs raises botocore's, aiohttp's and OSError alike
                failed = True
                self.failures += 1
                self.problem = f"could not upload {path.name} to {self.url}: {describe_error(exc)}"
                if self.failures == 1:
                    self._on_failure(self.problem)
                continue
            self._sent[path] = (stamp, now)
        return failed

    def _files(self) -> list[Path]:
        found = []
        for folder in (self.local_dir, self.local_dir / META_DIR):
            with contextlib.suppress(OSError):
                found += [p for p in folder.iterdir() if _sendable(p.name) and p.is_file()]
        return sorted(found)


def _sendable(name: str) -> bool:
    return not name.startswith(".") and not name.endswith(PARTIAL_SUFFIX)


def staging_root() -> Path:
    """A local root no other store uses, to stage runs bound for a URL in
    (``<tmp>/trainprof-upload-<random>``; made by the store when it creates the run)."""
    return Path(tempfile.gettempdir()) / f"trainprof-upload-{uuid.uuid4().hex}"
