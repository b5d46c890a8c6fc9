"""Smoke tests of bench/load_summary.py, bench/scaling.py and bench/gpu.py: they run end to end
and write their ratios in the shared shape. No timing thresholds: the figures depend on the
machine; the benches themselves report them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
RATIO_KEYS = {"name", "value", "target", "met", "unit"}


def run_bench(script: str, *args: str) -> None:
    command = [sys.executable, str(REPO / "bench" / script), *args]
    subprocess.run(command, check=True, cwd=REPO, capture_output=True, timeout=300)


def ratios(path: Path) -> dict[str, dict[str, object]]:
    data = orjson.loads(path.read_bytes())
    assert data["machine"]["python"]
    for ratio in data["ratios"]:
        assert set(ratio) >= RATIO_KEYS
        assert isinstance(ratio["value"], float)
    return {ratio["name"]: ratio for ratio in data["ratios"]}


@pytest.mark.slow
def test_load_summary_writes_every_ratio(tmp_path: Path, reference_traces: Path) -> None:
    out = tmp_path / "load.json"
    trace = reference_traces / "hta" / "alexnet.json.gz"
    run_bench(
        "load_summary.py", "--trace", str(trace), "--events", "3000", "--reps", "1",
        "--cache-dir", str(tmp_path / "cache"), "--json", str(out),
    )  # fmt: skip
    found = ratios(out)
    for name in ("alexnet.json.gz", "synth_40000.1767225600000.pt.trace.json.gz"):
        # The targets of issue 17: cold load 10x HTA, warm (cache) 30x.
        assert found[f"load cold vs HTA, {name}"]["target"] == 10.0
        assert found[f"load warm (cache) vs HTA, {name}"]["target"] == 30.0
        assert found[f"peak memory per event, trainprof, {name}"]["unit"] == "B/event"
        assert f"peak memory per event, HTA, {name}" in found


@pytest.mark.slow
def test_scaling_writes_the_linearity_check(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    run_bench(
        "scaling.py", "--sizes", "2000", "6000", "--reps", "1",
        "--cache-dir", str(tmp_path / "cache"), "--json", str(out),
    )  # fmt: skip
    found = ratios(out)
    assert found["load time growth (linear: ~1)"]["target"] == 1.5
    assert found["peak memory growth (linear: ~1)"]["met"] in (True, False)
    assert {"load time per event, 2,000", "peak memory per event, 6,000"} <= set(found)


def test_gpu_bench_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    run_bench(
        "gpu.py", "--device", "cpu", "--rounds", "1", "--steps", "2", "--width", "32",
        "--sequence", "8", "--json", str(out),
    )  # fmt: skip
    found = ratios(out)
    assert found["light (always-on) overhead, transformer"]["target"] == 1.0
    assert found["deep step time, trainprof / torch.profiler, transformer"]["target"] == 1.05
    assert found["stop-to-disk, trainprof / torch.profiler, transformer"]["target"] == 1.5
    assert all(value > 0 for value in orjson.loads(out.read_bytes())["medians"].values())
