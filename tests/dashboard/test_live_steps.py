"""A live Overview: each poll reads only the new bytes of the step logs and sends only the new
steps, so its cost is flat in the run's length (counted, not timed)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import dash
import pytest
from plotly.utils import PlotlyJSONEncoder

from dashboard.app import create_app
from dashboard.data.live import new_steps, overview_version
from dashboard.figures.overview import series_ids, step_metrics_extension, step_metrics_figure
from tests.dashboard.runs import SAMPLE

NEW = 10  # steps logged between two polls


def _line(step: int, rank: int = 0) -> str:
    return json.dumps({"step": step, "dur_us": 1000.0 + step % 10, "data_wait_us": 10.0}) + "\n"


def _run(root: Path, steps: int) -> Path:
    """The sample run with a step log of ``steps`` lines."""
    run = root / f"run{steps}"
    shutil.copytree(SAMPLE, run, ignore=shutil.ignore_patterns("cache"))
    (run / "meta" / "steps.0.jsonl").write_text("".join(_line(s) for s in range(steps)))
    return run


def _append(run: Path, text: str, rank: int = 0) -> None:
    with (run / "meta" / f"steps.{rank}.jsonl").open("a") as out:
        out.write(text)


def _poll_cost(root: Path, steps: int) -> tuple[int, int, int]:
    """Bytes read past the new lines, lines parsed and rows returned by the poll after ``NEW``
    more steps, on a run that had ``steps``."""
    run = _run(root, steps)
    first = new_steps(root, run.name)
    assert len(first.rows) == steps and first.bytes_read == first.offsets["steps.0.jsonl"]
    added = "".join(_line(s) for s in range(steps, steps + NEW))
    _append(run, added)
    chunk = new_steps(root, run.name, first.offsets)
    assert [r["step"] for r in chunk.rows] == list(range(steps, steps + NEW))
    return chunk.bytes_read - len(added.encode()), chunk.lines, len(chunk.rows)


def test_a_poll_costs_the_same_at_1k_and_100k_steps(tmp_path: Path) -> None:
    short, long = _poll_cost(tmp_path, 1_000), _poll_cost(tmp_path, 100_000)

    # Only the new lines are read and parsed, however long the log already is.
    assert short == long == (0, NEW, NEW)


def test_a_line_being_written_waits_for_the_next_poll(tmp_path: Path) -> None:
    run = _run(tmp_path, 3)
    seen = new_steps(tmp_path, run.name).offsets
    half = _line(3)[:12]
    _append(run, half)

    waiting = new_steps(tmp_path, run.name, seen)
    assert waiting.rows == () and waiting.offsets == seen

    _append(run, _line(3)[12:] + "not json\n")
    done = new_steps(tmp_path, run.name, waiting.offsets)
    assert [r["step"] for r in done.rows] == [3] and (done.lines, done.skipped) == (2, 1)


def test_a_rewritten_log_is_read_again_from_its_start(tmp_path: Path) -> None:
    run = _run(tmp_path, 50)
    seen = new_steps(tmp_path, run.name).offsets
    (run / "meta" / "steps.0.jsonl").write_text(_line(0))

    chunk = new_steps(tmp_path, run.name, seen)

    assert chunk.restarted and [r["step"] for r in chunk.rows] == [0]


def test_values_that_are_not_numbers_are_dropped_from_their_row(tmp_path: Path) -> None:
    run = _run(tmp_path, 0)
    _append(run, '{"step": 1, "dur_us": 5, "data_wait_us": "x", "memory_bytes": [1]}\n')

    (row,) = new_steps(tmp_path, run.name).rows

    assert row == {"step": 1, "dur_us": 5, "rank": 0}


def test_the_extension_names_the_traces_it_extends() -> None:
    rows = [{"step": 1, "dur_us": 5.0, "rank": 0}, {"step": 1, "dur_us": 6.0, "rank": 1}]
    shown = series_ids(rows)
    assert shown == ["0:dur_us", "1:dur_us"]
    assert len(step_metrics_figure(rows).data) == len(shown)

    update, indices = step_metrics_extension([{"step": 2, "dur_us": 7.0, "rank": 1}], shown) or (
        {},
        [],
    )
    assert (update, indices) == ({"x": [[2]], "y": [[pytest.approx(0.007)]]}, [1])  # in ms
    assert step_metrics_extension([], shown) == ({"x": [], "y": []}, [])
    # A value first recorded now needs a new trace: the figure is drawn again.
    assert step_metrics_extension([{"step": 2, "dur_us": 1.0, "data_wait_us": 1.0}], shown) is None


def test_new_steps_leave_the_overview_version_alone(tmp_path: Path) -> None:
    run = _run(tmp_path, 5)
    before = overview_version(tmp_path, run.name)
    _append(run, _line(5))
    assert overview_version(tmp_path, run.name) == before

    window = sorted(run.glob("*.json.gz"))[0]
    shutil.copy(window, window.with_name("host_9.1800000000000.pt.trace.json.gz"))
    assert overview_version(tmp_path, run.name) != before
    assert overview_version(tmp_path, "nope") is None


def _overview() -> Any:
    return sys.modules[next(p for p in dash.page_registry.values() if p["path"] == "/")["module"]]


def _poll_response(root: Path, steps: int) -> tuple[Any, int]:
    """The extend callback's ``extendData`` after ``NEW`` steps on a run of ``steps``, its
    step numbers counted from ``steps``, and the size of the whole answer as Dash sends it."""
    run = _run(root, steps)
    app = create_app(root)
    overview = _overview()
    with app.server.app_context():
        rows = new_steps(root, run.name)
        cursor = overview.step_cursor(run.name, rows.rows, rows)
        _append(run, "".join(_line(s) for s in range(steps, steps + NEW)))
        answer = overview.extend_steps(1, cursor)
        assert overview.extend_steps(2, answer[2]) == (dash.no_update,) * 3  # nothing new
    (update, indices), figure, new_cursor = answer
    assert figure is dash.no_update and new_cursor["points"] == [steps + NEW] * 2
    relative = {"x": [[x - steps for x in xs] for xs in update["x"]], "y": update["y"]}
    sent = json.dumps([update, indices, new_cursor], cls=PlotlyJSONEncoder)
    return (relative, indices), len(sent)


def test_a_poll_sends_only_the_new_steps(tmp_path: Path) -> None:
    (short, short_bytes), (long, long_bytes) = (
        _poll_response(tmp_path, 1_000),
        _poll_response(tmp_path, 100_000),
    )

    assert short == long and short[1] == [0, 1]
    assert short[0]["x"] == [list(range(NEW))] * 2
    # The same answer but for the numbers' extra digits (steps, point counts, the offset and
    # the run's name): a few hundred bytes at 1k steps as at 100k.
    assert long_bytes < 600 and long_bytes - short_bytes < 64


@pytest.mark.parametrize("change", ["new rank", "rewritten"])
def test_a_new_rank_or_a_rewritten_log_redraws_the_figure(tmp_path: Path, change: str) -> None:
    run = _run(tmp_path, 20)
    app = create_app(tmp_path)
    overview = _overview()
    with app.server.app_context():
        rows = new_steps(tmp_path, run.name)
        cursor = overview.step_cursor(run.name, rows.rows, rows)
        if change == "new rank":
            _append(run, _line(0, rank=1), rank=1)
        else:
            (run / "meta" / "steps.0.jsonl").write_text(_line(0))
        extend, figure, new_cursor = overview.extend_steps(1, cursor)
    assert extend is dash.no_update and figure.data
    expected = ["0:dur_us", "0:data_wait_us"] + (
        ["1:dur_us", "1:data_wait_us"] * (change == "new rank")
    )
    assert new_cursor["series"] == expected
