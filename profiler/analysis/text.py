"""A trace file's JSON text in blocks, gunzipped as it is read, within a size limit.

The limit (:func:`profiler.analysis.guards.text_limit`) is checked on the running total of
text after each block, so a gzip that inflates without end is refused a block past it, never
held: memory stays near one block whatever the file claims.

Where python-isal is installed its ``isal_zlib`` inflates (the same API, 2.5x faster than zlib
on a trace); a file it finds corrupt is inflated again by zlib, so the error says zlib's words.
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from queue import Empty, Queue
from types import ModuleType
from typing import Any, BinaryIO

from profiler.analysis.guards import TEXT_LIMIT_ENV, size_text, text_limit
from profiler.store.chrome_trace import TraceFormatError

READ_BYTES = 256 * 1024  # of the file, and of text per block once gunzipped
AHEAD_BLOCKS = 1  # blocks read and gunzipped ahead of the decoder
_GZIP_MAGIC = b"\x1f\x8b"


def _fast_zlib() -> ModuleType:
    """python-isal's ``isal_zlib`` where installed, else ``zlib``."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is in the `fast` and `dev` extras
        return zlib
    return isal_zlib


_INFLATE = _fast_zlib()


class TextReader:
    """The JSON text of a trace file in blocks, gunzipped when it is gzip.

    Attributes:
        path: the file.
        text_size: how much text the file holds (from the gzip trailer: an estimate, exact
            below 4 GiB of text and for single-member gzip), known once iteration began.
        text_read: how much text the blocks handed out so far hold.
        max_text_bytes: the most text the file may hold (:func:`guards.text_limit`).
        ahead: set it to have the blocks after the next read and gunzipped by a thread, a
            block ahead of the caller (inflate releases the GIL: it runs beside the work on the
            block before). The decoder sets it once the file proved to be a trace (its first
            piece decoded), so what the guards refuse is read as before, within their bounds.
            Close the iterator when stopping early, so that the thread stops at once.
    """

    def __init__(
        self,
        path: Path,
        max_text_bytes: int | None = None,
        *,
        read_bytes: int = READ_BYTES,
    ) -> None:
        self.path = path
        self.text_size = 0
        self.text_read = 0
        self.max_text_bytes = text_limit(max_text_bytes)
        self._read_bytes = read_bytes
        self.ahead = False

    def __iter__(self) -> Iterator[bytes]:
        """Yields blocks of text.

        Raises:
            TraceFormatError: unreadable, empty, truncated or corrupt gzip, or more text than
                :attr:`max_text_bytes` (said as soon as the text read passes it).
        """
        path = self.path
        try:
            size = path.stat().st_size
            with path.open("rb") as file:
                for block in self._handed(self._limited(self._blocks(file, size))):
                    self.text_read += len(block)
                    yield block
        except OSError as exc:
            raise TraceFormatError(path, f"cannot read: {exc.strerror or exc}") from exc

    def _handed(self, blocks: Iterator[bytes]) -> Iterator[bytes]:
        for block in blocks:
            yield block
            if self.ahead:
                yield from read_ahead(blocks)
                return

    def _limited(self, blocks: Iterator[bytes]) -> Iterator[bytes]:
        """``blocks``, refused as soon as their text passes :attr:`max_text_bytes`."""
        text = 0
        for block in blocks:
            text += len(block)
            if text > self.max_text_bytes:
                raise TraceFormatError(self.path, self._too_large())
            yield block

    def fraction_read(self) -> float:
        """The share of the text handed out so far (1.0 where the size is not known)."""
        return min(self.text_read / self.text_size, 1.0) if self.text_size else 1.0

    def _too_large(self) -> str:
        return (
            f"more than {size_text(self.max_text_bytes)} of JSON text: refused "
            f"(set {TEXT_LIMIT_ENV} or load(..., max_text_bytes=) to allow more)"
        )

    def _blocks(self, file: BinaryIO, size: int) -> Iterator[bytes]:
        first = file.read(self._read_bytes)
        if not first:
            raise TraceFormatError(self.path, "empty file")
        rest = iter(partial(file.read, self._read_bytes), b"")
        if first[:2] != _GZIP_MAGIC:
            if size > self.max_text_bytes:  # refused before reading it
                raise TraceFormatError(self.path, self._too_large())
            self.text_size = size
            yield first
            yield from rest
            return
        if size > len(first):  # ISIZE, the text's size mod 2**32, ends the last member
            file.seek(-4, os.SEEK_END)
            self.text_size = int.from_bytes(file.read(4), "little")
            file.seek(len(first))
        handed = 0  # text handed out
        try:
            for text in _gunzip(self.path, _chain(first, rest), self._read_bytes, _INFLATE):
                handed += len(text)
                yield text
        except _FastInflateError:  # zlib again from the start, for its words on the damage
            file.seek(0)
            raws = iter(partial(file.read, self._read_bytes), b"")
            yield from _skip(_gunzip(self.path, raws, self._read_bytes, zlib), handed)
        if not handed:
            raise TraceFormatError(self.path, "empty after gunzip")


def _gunzip(
    path: Path, raws: Iterable[bytes], block_bytes: int, inflate: ModuleType
) -> Iterator[bytes]:
    """Inflate gzip members one after another, a bounded block of text at a time.

    Raises:
        TraceFormatError: zlib finds the data corrupt or cut short.
        _FastInflateError: isal finds it corrupt (the caller asks zlib).
    """
    inflater = inflate.decompressobj(wbits=31)
    try:
        for raw in raws:
            while raw:
                text = inflater.decompress(raw, block_bytes)
                raw = inflater.unconsumed_tail
                if inflater.eof and inflater.unused_data:  # a next member follows
                    # (at the end of a member, the tail is also all in unused_data)
                    raw, inflater = inflater.unused_data, inflate.decompressobj(wbits=31)
                if text:
                    yield text
    except inflate.error as exc:
        if inflate is not zlib:
            raise _FastInflateError from exc
        raise TraceFormatError(path, f"corrupt or truncated gzip: {exc}") from exc
    if not inflater.eof:
        raise TraceFormatError(path, "corrupt or truncated gzip: the stream ends early")


def read_ahead(blocks: Iterator[bytes], ahead: int = AHEAD_BLOCKS) -> Iterator[bytes]:
    """``blocks``, drawn by a thread of their own at most ``ahead`` blocks before they are
    taken. What ``blocks`` raises is raised here, in order; when the caller stops early, the
    thread stops too (a block later at most) and is waited for.
    """
    queue: Queue[Any] = Queue(ahead)
    stop = threading.Event()

    def draw() -> None:
        try:
            for block in blocks:
                if stop.is_set():
                    return
                queue.put(block)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            queue.put(_Raised(exc))
        else:
            queue.put(_END)
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=draw, name="trainprof-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not _END:
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # room for its last block, so that it sees the stop
            with contextlib.suppress(Empty):
                queue.get(timeout=0.01)
        thread.join()


@dataclass(frozen=True)
class _Raised:
    error: BaseException


_END = object()


class _FastInflateError(Exception):
    """isal could not inflate the data: zlib, asked again, says why in its own words."""


def _skip(blocks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """``blocks`` without their first ``size`` bytes (handed out already)."""
    for block in blocks:
        if size >= len(block):
            size -= len(block)
            continue
        yield block[size:]
        size = 0


def _chain(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
