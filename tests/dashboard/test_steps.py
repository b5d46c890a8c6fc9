"""The Steps page: its data (slow steps and their windows), its figures, and its link callback,
called directly; the browser test is tests/dashboard/test_steps_browser.py."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import dash
import pytest

from dashboard.app import create_app
from dashboard.data.steps import DeepWindow, run_steps
from dashboard.figures.steps import (
    GIB,
    MAX_BARS,
    MAX_POINTS,
    MIB,
    NO_PHASES,
    NOT_SAMPLED,
    SLOW_STEP,
    gpu_memory_figure,
    gpu_sampled,
    memory_figure,
    memory_unit,
    phase_figure,
    step_time_figure,
    system_figure,
)
from tests.dashboard.runs import SAMPLE

# The sample run's two windows (trainprof.window in each file).
FIRST_WINDOW = DeepWindow("vm_12830.1795447678157.pt.trace.json.gz", 0, 6, 8)
SECOND_WINDOW = DeepWindow("vm_12830.1795447678439.pt.trace.json.gz", 0, 15, 17)


def _sample(tmp_path: Path, slow: dict[int, float] | None = None) -> Path:
    """A copy of the sample run; ``slow``: steps whose time is set (us) in its step log."""
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
    log = root / "sample" / "meta" / "steps.0.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    for record in lines:
        record["dur_us"] = (slow or {}).get(record["step"], record["dur_us"])
    log.write_text("".join(json.dumps(record) + "\n" for record in lines))
    return root


def _page(root: Path) -> Any:
    create_app(root)
    page = next(p for p in dash.page_registry.values() if p["path"] == "/steps")
    return sys.modules[page["module"]]


def test_the_sample_runs_steps_and_windows(tmp_path: Path) -> None:
    data = run_steps(_sample(tmp_path), "sample")
    assert (data.device, len(data.steps), data.errors) == ("cpu", 20, ())
    assert data.windows == (FIRST_WINDOW, SECOND_WINDOW)
    assert data.slow == ()  # its steps take 23-35 ms


def test_a_slow_step_links_the_window_that_covers_it(tmp_path: Path) -> None:
    # Step 13 (outside every window, the 11th such step: the first judged) and step 16 (in
    # the second window) take 100 ms: > 2x the ~26 ms median of the steps before them.
    root = _sample(tmp_path, slow={13: 100_000.0, 16: 100_000.0})
    data = run_steps(root, "sample")
    assert [(s["step"], s["file"]) for s in data.slow] == [(13, None), (16, SECOND_WINDOW.file)]
    assert all(s["ratio"] > 3 for s in data.slow)

    page = _page(root)
    rows = page.slow_rows(data)
    assert [r["window"] for r in rows] == [page.NO_WINDOW, SECOND_WINDOW.file]
    assert "recorded" not in rows[0] and rows[1]["recorded"] == "steps 15-17"
    assert "href" not in rows[0]
    assert rows[1]["href"] == f"/timeline?run=sample&file={SECOND_WINDOW.file}&step=16"

    click = {"colId": "window", "rowId": "0:16", "value": SECOND_WINDOW.file}
    assert page.open_window(click, rows) == rows[1]["href"]
    assert page.open_window({**click, "rowId": "0:13"}, rows) is dash.no_update
    assert page.open_window({**click, "colId": "step"}, rows) is dash.no_update
    assert page.open_window(None, rows) is dash.no_update


def test_a_slow_step_links_the_window_it_opened(tmp_path: Path) -> None:
    # As on_anomaly writes it: the second window names step 13 as the trigger it opened after.
    root = _sample(tmp_path, slow={13: 100_000.0})
    path = root / "sample" / SECOND_WINDOW.file
    trace = json.loads(gzip.decompress(path.read_bytes()))
    trace["trainprof"]["window"]["trigger"] = {"kind": "anomaly", "step": 13, "factor": 2.0}
    path.write_bytes(gzip.compress(json.dumps(trace).encode()))
    data = run_steps(root, "sample")
    assert data.windows[1] == replace(SECOND_WINDOW, opened_by=13)
    (slow,) = data.slow
    assert (slow["file"], slow["opened"]) == (SECOND_WINDOW.file, True)
    (row,) = _page(root).slow_rows(data)
    assert row["recorded"] == "steps 15-17, opened by this step"
    assert row["href"].endswith("&step=15")  # the window's first step: 13 is not in it


def test_lines_appended_or_a_log_rewritten_are_seen(tmp_path: Path) -> None:
    root = _sample(tmp_path)
    log = root / "sample" / "meta" / "steps.0.jsonl"
    assert len(run_steps(root, "sample").steps) == 20
    with log.open("a") as file:  # a slow step appended, and a line still being written
        file.write(json.dumps({"step": 20, "dur_us": 500_000.0, "deep": False}) + "\n")
        file.write('{"step": 21, "dur')
    data = run_steps(root, "sample")
    assert [row["step"] for row in data.steps] == list(range(21))
    assert [(s["step"], s["file"]) for s in data.slow] == [(20, None)]
    lines = log.read_text().splitlines()[:5]
    log.write_text("\n".join(lines) + "\n")  # rewritten shorter: read again from its start
    data = run_steps(root, "sample")
    assert [row["step"] for row in data.steps] == list(range(5)) and data.slow == ()


def test_a_run_without_step_logs_says_so(tmp_path: Path) -> None:
    root = _sample(tmp_path)
    (root / "sample" / "meta" / "steps.0.jsonl").unlink()
    page = _page(root)
    with create_app(root).server.test_request_context():
        drawn = json.dumps(page.content(run="sample").to_plotly_json(), default=str)
    assert "no-steps" in drawn and "steps-time" not in drawn


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

ROWS = [
    {"rank": 0, "step": 0, "dur_us": 20_000.0, "data_wait_us": 5_000.0, "forward_us": 4_000.0,
     "backward_us": 8_000.0, "optimizer_us": 1_000.0, "memory_bytes": 512 * MIB,
     "peak_memory_bytes": 600 * MIB, "cpu_pct": 95.0},
    {"rank": 0, "step": 1, "dur_us": 10_000.0, "data_wait_us": 1_000.0, "forward_us": None,
     "backward_us": None, "optimizer_us": None, "memory_bytes": 520 * MIB,
     "peak_memory_bytes": 610 * MIB, "cpu_pct": 99.0},
]  # fmt: skip


def _traces(figure: Any) -> dict[str, list[Any]]:
    return {trace.name: list(trace.y) for trace in figure.data}


def test_step_time_in_ms_with_slow_steps_marked() -> None:
    slow = [{"rank": 0, "step": 0, "dur_us": 20_000.0, "median_us": 8_000.0, "ratio": 2.5}]
    figure = step_time_figure(ROWS, slow)
    assert _traces(figure) == {
        "step time": [20.0, 10.0],
        "data wait": [5.0, 1.0],
        SLOW_STEP: [20.0],
    }
    assert "2.5x the median" in figure.data[-1].text[0]
    assert figure.layout.yaxis.title.text == "time (ms)"


def test_the_phase_split_of_timed_steps_only() -> None:
    figure = phase_figure(ROWS)
    assert list(figure.data[0].x) == ["step 0"]  # step 1's split was not timed
    # 20 ms = 5 data wait + 4 forward + 8 backward + 1 optimizer + 2 rest.
    assert _traces(figure) == {
        "data wait": [5.0],
        "forward": [4.0],
        "backward": [8.0],
        "optimizer": [1.0],
        "rest of the step": [2.0],
    }
    assert figure.layout.barmode == "stack"
    untimed = phase_figure(ROWS[1:])
    assert not untimed.data and untimed.layout.annotations[0].text == NO_PHASES


def test_memory_in_mib_or_gib_named_for_the_device() -> None:
    cpu = memory_figure(ROWS, "cpu")
    assert _traces(cpu) == {"RSS": [512.0, 520.0], "peak RSS in the step": [600.0, 610.0]}
    assert cpu.layout.yaxis.title.text == "MiB"
    big = [{**row, "memory_bytes": 3 * GIB, "peak_memory_bytes": 4 * GIB} for row in ROWS]
    cuda = memory_figure(big, "cuda")
    assert _traces(cuda)["CUDA allocated"] == [3.0, 3.0]
    assert cuda.layout.yaxis.title.text == "GiB"
    assert memory_unit(GIB - 1) == ("MiB", MIB)


def test_cpu_and_gpu_utilisation_where_sampled() -> None:
    assert _traces(system_figure(ROWS)) == {"CPU %": [95.0, 99.0]}
    assert gpu_sampled(ROWS) == (False, False)
    gpu = [{**r, "gpu0_util_pct": 80.0, "gpu1_util_pct": 40.0} for r in ROWS]
    gpu[1]["gpu0_memory_used_bytes"] = 2 * GIB
    assert list(_traces(system_figure(gpu))) == [
        "CPU %",
        "GPU 0 utilisation %",
        "GPU 1 utilisation %",
    ]
    assert gpu_sampled(gpu) == (True, True)
    assert _traces(gpu_memory_figure(gpu)) == {"GPU 0 memory used": [2.0]}
    unsampled = system_figure([{"step": 0, "dur_us": 1.0}])
    assert not unsampled.data and NOT_SAMPLED in unsampled.layout.annotations[0].text
    assert NOT_SAMPLED in gpu_memory_figure(ROWS).layout.annotations[0].text


def test_one_line_per_rank() -> None:
    ranks = ROWS + [{**row, "rank": 1, "dur_us": row["dur_us"] * 2} for row in ROWS]
    figure = step_time_figure(ranks)
    assert _traces(figure)["step time (rank 1)"] == [40.0, 20.0]
    assert list(phase_figure(ranks).data[0].x) == ["rank 0 step 0", "rank 1 step 0"]


@pytest.mark.parametrize("figure", [step_time_figure, phase_figure, system_figure])
def test_no_steps_draws_a_note(figure: Any) -> None:
    drawn = figure([])
    assert not drawn.data and drawn.layout.annotations


def test_a_long_run_sends_pooled_points() -> None:
    count = 3 * MAX_POINTS + 1  # pooled by 4: MAX_POINTS points at the most
    rows = [
        {
            "step": i,
            "dur_us": 1000.0 * (i % 4),
            "memory_bytes": MIB * (i % 8),
            "peak_memory_bytes": MIB * (i % 8),
        }
        for i in range(count)
    ]
    (line,) = step_time_figure(rows).data
    assert line.name == "step time (mean of 4 steps)"
    assert len(line.x) <= MAX_POINTS and list(line.x[:2]) == [0, 4]
    assert list(line.y[:2]) == [1.5, 1.5]  # (0 + 1 + 2 + 3) ms / 4
    memory = {trace.name: trace for trace in memory_figure(rows, "cpu").data}
    assert list(memory["RSS (mean of 4 steps)"].y[:2]) == [1.5, 5.5]
    assert list(memory["peak RSS in the step (highest of 4 steps)"].y[:2]) == [3.0, 7.0]
    timed = [{**row, "forward_us": 1.0} for row in rows[: 2 * MAX_BARS + 10]]
    bars = phase_figure(timed).data[0]
    assert len(bars.x) <= MAX_BARS and list(bars.x[:2]) == ["steps 0-2", "steps 3-5"]
