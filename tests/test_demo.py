"""The demo's slow input pipeline: its wait comes from a fixed deadline, not from CPU work."""

from __future__ import annotations

import torch

from profiler.demo import BATCH_LATENCY_NS, IMAGE_SHAPE, SlowSyntheticBatches


class FakeTime:
    """A clock in ns that moves only when slept on, or by ``work_ns`` between the request's
    reading and the next one: the CPU work of making the batch."""

    def __init__(self, work_ns: int = 0) -> None:
        self.now_ns = 1_000_000_000
        self.work_ns = work_ns
        self.readings = 0
        self.slept_ns: list[int] = []

    def clock(self) -> int:
        self.readings += 1
        if self.readings == 2:
            self.now_ns += self.work_ns
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        self.slept_ns.append(round(seconds * 1e9))
        self.now_ns += round(seconds * 1e9)


def batches(fake: FakeTime, **kwargs: int) -> SlowSyntheticBatches:
    return SlowSyntheticBatches(4, clock=fake.clock, sleep=fake.sleep, **kwargs)


def test_a_batch_is_ready_at_its_deadline_however_long_making_it_took() -> None:
    for work_ns in (0, 3_000_000, 19_000_000):  # an idle machine, a busy one, a very busy one
        fake = FakeTime(work_ns)
        asked = fake.now_ns
        images, labels = batches(fake)[1]
        assert fake.now_ns - asked == BATCH_LATENCY_NS  # ready at the deadline, not later
        assert sum(fake.slept_ns) == BATCH_LATENCY_NS - work_ns  # the sleep shrinks by the work
        assert images.shape == (16, *IMAGE_SHAPE) and labels.tolist() == [
            i % 10 for i in range(16, 32)
        ]


def test_work_past_the_deadline_is_not_slept_on() -> None:
    fake = FakeTime(BATCH_LATENCY_NS + 5_000_000)
    asked = fake.now_ns
    batches(fake)[0]
    assert fake.slept_ns == [] and fake.now_ns - asked == BATCH_LATENCY_NS + 5_000_000


def test_an_early_wake_sleeps_again_until_the_deadline() -> None:
    fake = FakeTime()
    woke_early = []

    def sleep(seconds: float) -> None:
        ns = round(seconds * 1e9)
        step = ns // 2 if not woke_early else ns  # the first sleep ends halfway (a signal)
        woke_early.append(step)
        fake.now_ns += step

    asked = fake.now_ns
    SlowSyntheticBatches(1, clock=fake.clock, sleep=sleep, latency_ns=10_000_000)[0]
    assert woke_early == [5_000_000, 5_000_000] and fake.now_ns - asked == 10_000_000


def test_batches_are_the_same_each_run() -> None:
    fake = FakeTime()
    first = SlowSyntheticBatches(2, clock=fake.clock, sleep=fake.sleep)[1][0]
    again = SlowSyntheticBatches(2, clock=fake.clock, sleep=fake.sleep)[1][0]
    assert torch.equal(first, again)
