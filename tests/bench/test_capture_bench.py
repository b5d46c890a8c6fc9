"""bench/capture.py: a row per setting and model, defaults first, each with its target, in the
shape bench/run.py reads. No timing thresholds: the figures are the bench's to report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.capture import (
    DISK_RATIO_TARGET,
    SETTINGS,
    STEP_RATIO_TARGET,
    Case,
    ratios,
)
from bench.common import read_ratios

REPO = Path(__file__).resolve().parents[2]


def case(setting: str, model: str, ours: float, theirs: float) -> Case:
    """A case whose every repetition measured ``ours`` and ``theirs`` for every figure."""
    result = Case(setting, model)
    for key in result.ours:
        result.ours[key] += [ours, ours]
        result.theirs[key] += [theirs, theirs]
    return result


def test_every_case_gets_a_step_and_a_disk_row_with_its_target() -> None:
    cases = [case(s, m, 1.2, 1.0) for s in SETTINGS for m in ("mlp", "cnn")]
    rows = ratios(cases, reps=2, active=4)
    named = {r.name: r for r in rows}
    assert list(SETTINGS)[0] == "defaults"
    assert rows[0].name == "step time in active steps, trainprof / torch.profiler, defaults, mlp"
    assert rows[1].name == "stop-to-disk, trainprof / torch.profiler, defaults, mlp"
    for setting in SETTINGS:
        for model in ("mlp", "cnn"):
            step = named[
                f"step time in active steps, trainprof / torch.profiler, {setting}, {model}"
            ]
            disk = named[f"stop-to-disk, trainprof / torch.profiler, {setting}, {model}"]
            assert (step.target, step.comparison) == (STEP_RATIO_TARGET, "<=")
            assert (disk.target, disk.comparison) == (DISK_RATIO_TARGET, "<=")
            assert step.value == 1.2 and step.met is False and disk.met is True
    bytes_rows = [r for r in rows if r.name.startswith("bytes per event")]
    assert len(bytes_rows) == 2 and all(r.target is None for r in bytes_rows)


def test_the_bench_runs_one_case_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "capture.json"
    command = [
        sys.executable, str(REPO / "bench" / "capture.py"), "--settings", "defaults",
        "--models", "mlp", "--reps", "1", "--active", "3", "--json", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO, capture_output=True, timeout=300)
    _, found = read_ratios(out)
    assert [r.name.split(", ")[0] for r in found] == [
        "step time in active steps",
        "stop-to-disk",
        "bytes per event on disk (gzip)",
    ]
    assert all(r.value > 0 for r in found)
