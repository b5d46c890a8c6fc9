"""What opened a window, from the trace file to ``trainprof summary`` (text and JSON).

One real run under ``on_anomaly`` (its step times injected through the step metrics' clock)
writes the files the summary reads; the wording and odd values are checked on files built by
hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import profiler
from profiler.analysis.table import load_trace
from profiler.analysis.triggers import WindowTrigger, trigger_text, window_trigger
from profiler.cli import app

MEDIAN_NS = 12_000_000  # 12 ms steps
SLOW_NS = 41_000_000  # step 30 takes 41 ms: 3.4x the median
SLOW_STEP = 30


@pytest.fixture(scope="module")
def anomaly_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A run whose one window on_anomaly opened after step 30: warmup 31, recorded 32-34."""
    import torch
    from torch import nn

    from profiler.capture import step_metrics

    out = tmp_path_factory.mktemp("traces")
    clock = [1_000_000_000]
    model = nn.Linear(4, 2)
    x = torch.randn(2, 4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step_metrics, "_now", lambda: clock[0])
        schedule = profiler.on_anomaly(factor=3.0, active=3, max_windows=1)
        with profiler.profile(
            model, out_dir=out, run_name="r", schedule=schedule, system_metrics=False
        ) as prof:
            for step in range(45):
                model(x).sum().backward()
                clock[0] += SLOW_NS if step == SLOW_STEP else MEDIAN_NS
                prof.step()
    yield prof.run_dir


def test_the_summary_says_what_opened_the_window(anomaly_run: Path) -> None:
    (trace,) = profiler.summarize(anomaly_run)["traces"]
    assert trace["trigger"] == {
        "kind": "anomaly",
        "step": SLOW_STEP,
        "first_step": SLOW_STEP + 2,
        "last_step": SLOW_STEP + 4,
        "step_us": SLOW_NS / 1000,
        "median_us": MEDIAN_NS / 1000,
        "factor": 3.0,
        "source": None,
    }
    # The same trigger run.json lists.
    meta = orjson.loads((anomaly_run / "meta" / "run.json").read_bytes())
    assert [t["step"] for t in meta["triggers"]] == [SLOW_STEP]


def test_summary_text_and_json(anomaly_run: Path) -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["summary", "--no-cache", str(anomaly_run)], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    line = (
        "window at steps 32-34 opened by anomaly: step 30 took 41.00 ms, 3.4x the median 12.00 ms"
    )
    assert line in text.output
    dumped = runner.invoke(app, ["summary", "--json", "--no-cache", str(anomaly_run)])
    assert orjson.loads(dumped.stdout)["traces"][0]["trigger"]["step"] == SLOW_STEP


def test_a_scheduled_window_has_none(train: Any) -> None:
    prof = train(steps=4)
    assert window_trigger(load_trace(prof.trace_files[0])) is None
    (trace,) = profiler.summarize(prof.run_dir)["traces"]
    assert trace["trigger"] is None


def _trace(tmp_path: Path, window: Any) -> Path:
    path = tmp_path / "t.json"
    document = {"traceEvents": [], "trainprof": {"format": "trainprof.trace/1", "window": window}}
    path.write_text(json.dumps(document))
    return path


def test_a_request_and_odd_values(tmp_path: Path) -> None:
    request = {"kind": "request", "source": "SIGUSR2", "steps": 2, "step": 9}
    found = window_trigger(load_trace(_trace(tmp_path, {"first_step": 11, "last_step": 12,
                                                         "trigger": request})))  # fmt: skip
    assert found == WindowTrigger("request", 9, 11, 12, source="SIGUSR2")
    assert trigger_text(found.__dict__) == (
        "window at steps 11-12 opened by a capture request (SIGUSR2) after step 9"
    )
    trigger = {"kind": "anomaly", "step": True, "step_us": "slow", "median_us": 0}
    odd = {"first_step": "x", "last_step": 3, "trigger": trigger}
    found = window_trigger(load_trace(_trace(tmp_path, odd)))
    assert found == WindowTrigger("anomaly", None, None, 3, median_us=0.0)
    assert trigger_text(found.__dict__) == "window opened by anomaly"
    for window in ({"trigger": "anomaly"}, {"trigger": {"step": 3}}, [1], None):
        assert window_trigger(load_trace(_trace(tmp_path, window))) is None
