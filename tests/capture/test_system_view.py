"""What the system sampler hands each step record: CPU %, and GPU utilisation and memory where
NVML answers (the Steps page draws them; RSS is the record's own memory on CPU)."""

from __future__ import annotations

from profiler.capture.system import SystemSampler

TWO_GPUS = {
    "gpu0_util_pct": 87.0,
    "gpu0_memory_used_bytes": 3e9,
    "gpu1_util_pct": 5.0,
    "gpu1_memory_used_bytes": 1e9,
}


class FakeNvml:
    """NVML's answers, as ``_Nvml.sample`` gives them (none: no NVML)."""

    def __init__(self, answers: dict[str, float]) -> None:
        self.answers = answers

    def sample(self) -> dict[str, float]:
        return dict(self.answers)

    def close(self) -> None:
        pass


def test_steps_carry_cpu_and_each_gpus_utilisation_and_memory() -> None:
    sampler = SystemSampler()
    sampler._nvml = FakeNvml(TWO_GPUS)  # type: ignore[assignment]
    try:
        values = sampler.sample_once()
    finally:
        sampler.stop()
    assert set(sampler.step_view) == {
        "cpu_pct",
        "gpu0_util_pct",
        "gpu0_memory_used_bytes",
        "gpu1_util_pct",
        "gpu1_memory_used_bytes",
    }
    assert "rss_bytes" in values and "rss_bytes" not in sampler.step_view


def test_without_nvml_steps_carry_cpu_only() -> None:
    sampler = SystemSampler()
    sampler._nvml = FakeNvml({})  # type: ignore[assignment]
    try:
        sampler.sample_once()
    finally:
        sampler.stop()
    assert set(sampler.step_view) == {"cpu_pct"}
