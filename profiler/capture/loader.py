"""``prof.loader(...)``: an iterable that times the wait for each batch of the one it wraps."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

import torch

from profiler.capture.module_hooks import range_enter, range_exit
from profiler.events import dataloader_range_name

if TYPE_CHECKING:
    from profiler.capture.session import Profile

T = TypeVar("T")


class ProfiledLoader(Generic[T]):
    """An iterable that times the wait for each item of the one it wraps."""

    def __init__(self, iterable: Iterable[T], session: Profile) -> None:
        self._iterable = iterable
        self._session = session

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        iterator = iter(self._iterable)
        # torch's own DataLoader iterators already record this range; don't double it.
        own_range = not isinstance(iterator, torch.utils.data.dataloader._BaseDataLoaderIter)
        name = dataloader_range_name(type(iterator).__name__)
        session = self._session
        now = time.perf_counter_ns
        while True:
            deep = session._deep
            recording = own_range and deep is not None and deep.recording
            handle = range_enter(name) if recording else None
            start = now()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                waited = now() - start
                if handle is not None:
                    range_exit(handle)
                metrics = session._metrics  # what Profile.add_data_wait does, one call less
                if metrics is not None and session._started:
                    metrics.data_wait_ns += waited
            yield item
