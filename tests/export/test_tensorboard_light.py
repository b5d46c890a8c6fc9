"""The TensorBoard export of a run recorded with step logs only (``schedule=None``): every
step's scalars, read back with TensorBoard's own reader, and no trace; the step logs' advice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from profiler.cli import app
from profiler.export.tensorboard import RECOMMENDATIONS_TAG, export_tensorboard
from tests.conftest import read_steps
from tests.export import expected_step_scalars, read_scalars, read_texts

REL = 1e-6  # TensorBoard keeps scalars as float32


def test_a_light_only_run_exports_its_step_scalars_and_no_trace(
    train, every_step_timed, tmp_path: Path
) -> None:
    run_dir = train(steps=6, schedule=None, run_name="light").run_dir
    records = read_steps(run_dir / "meta" / "steps.0.jsonl")
    assert len(records) == 6 and not list(run_dir.glob("*.json*"))
    logdir = tmp_path / "tb"

    result = CliRunner().invoke(app, ["export-tensorboard", str(run_dir), "--logdir", str(logdir)])

    assert result.exit_code == 0, result.output
    assert "exported 6 steps and 0 capture window(s)" in result.stderr
    exported = logdir / "light"
    scalars = read_scalars(exported)
    expected = expected_step_scalars(records)
    # The phases are timed on every step here: each step has all of them.
    assert {"trainprof/step/time_ms", "trainprof/step/forward_ms"} <= set(expected)
    assert set(scalars) == set(expected)  # no window scalars: there is no window
    for tag, points in expected.items():
        assert [step for step, _ in scalars[tag]] == [step for step, _ in points] == list(range(6))
        for (_, value), (_, want) in zip(scalars[tag], points, strict=True):
            assert value == pytest.approx(want, rel=REL, abs=1e-9), tag
    assert not [p for p in exported.rglob("*") if ".pt.trace.json" in p.name]
    ((step, text),) = read_texts(exported)[RECOMMENDATIONS_TAG]
    assert step == 5 and "No capture window" in text


def test_the_step_logs_advice_reaches_the_text_tab(train, tmp_path: Path) -> None:
    import torch

    def slow() -> Iterator[tuple[Any, Any]]:
        for _ in range(3):
            time.sleep(0.1)  # a floor on the wait, whatever the model's speed
            yield torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))

    run_dir = train(steps=3, schedule=None, loader=slow(), run_name="slow").run_dir
    records = read_steps(run_dir / "meta" / "steps.0.jsonl")
    wait_pct = 100 * sum(r["data_wait_us"] for r in records) / sum(r["dur_us"] for r in records)

    result = export_tensorboard(run_dir, tmp_path / "tb")

    ((_, text),) = read_texts(result.run_dir)[RECOMMENDATIONS_TAG]
    (line,) = [line for line in text.splitlines() if "`dataloader_bound`" in line]
    assert f"{wait_pct:.1f}% of step time" in line and line.endswith("(step logs)")
