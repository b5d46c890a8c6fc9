"""The command line on bad trace files: one ``error: <file>: <problem>`` line per bad file on
stderr, exit status 2, the good files still reported, never a traceback."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from profiler import cli
from profiler.analysis import summary
from profiler.cli import app

SAMPLE = Path(__file__).resolve().parents[1] / "traces" / "sample"
STEP = {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1,
        "ts": 0, "dur": 1000}  # fmt: skip
BAD_ARGS = {"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": 1, "ts": 3,
            "args": {"Bytes": "lots"}}  # fmt: skip


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """The sample run's two windows, plus three bad files beside them."""
    run_dir = tmp_path / "run"
    shutil.copytree(SAMPLE, run_dir, ignore=shutil.ignore_patterns("cache"))
    (run_dir / "w.3.pt.trace.json.gz").write_bytes(
        gzip.compress(json.dumps({"traceEvents": [STEP, BAD_ARGS]}).encode())
    )
    (run_dir / "w.4.pt.trace.json.gz").write_bytes(b'{"traceEvents": [{"args": ' + b"[" * 50_000)
    (run_dir / "w.5.pt.trace.json.gz").write_bytes(b"\x1f\x8b not really gzip")
    return run_dir


def bad_lines(run_dir: Path) -> list[str]:
    return [
        f"error: {run_dir / 'w.3.pt.trace.json.gz'}: not a Kineto trace: "
        "traceEvents[1].args.Bytes is a string, expected an integer",
        f"error: {run_dir / 'w.4.pt.trace.json.gz'}: JSON nested 50003 levels deep in the text "
        "from byte 16: too deep to decode",
        f"error: {run_dir / 'w.5.pt.trace.json.gz'}: corrupt or truncated gzip: Error -3 while "
        "decompressing data: ",  # and zlib's words, which vary with its version
    ]


def same_lines(actual: str, expected: list[str], tail: str = "") -> bool:
    """``actual``'s lines are ``expected``'s (the gzip one a prefix), each ending in ``tail``."""
    lines = actual.splitlines()
    return len(lines) == len(expected) and all(
        line.startswith(want)
        and line.endswith(tail)
        and (want.endswith(": ") or line == want + tail)
        for line, want in zip(lines, expected, strict=True)
    )


def invoke(*args: str) -> object:
    return CliRunner().invoke(app, [*args, "--no-cache"])


def test_summary_reports_the_good_files_and_names_each_bad_one(run: Path) -> None:
    result = invoke("summary", str(run), "--json")
    assert result.exit_code == 2  # type: ignore[attr-defined]
    report = orjson.loads(result.stdout)  # type: ignore[attr-defined]
    assert len(report["traces"]) == 2
    assert same_lines(result.stderr, bad_lines(run)), result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_summary_goes_on_past_a_missing_path_and_says_when_nothing_is_readable(
    run: Path, tmp_path: Path
) -> None:
    result = invoke("summary", str(tmp_path / "nope"), str(SAMPLE), "--json")
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert len(orjson.loads(result.stdout)["traces"]) == 2  # type: ignore[attr-defined]
    assert f"error: {tmp_path / 'nope'}: no such file or directory" in result.stderr  # type: ignore[attr-defined]
    bad = run / "w.3.pt.trace.json.gz"
    only_bad = invoke("summary", str(bad))
    assert only_bad.exit_code == 2  # type: ignore[attr-defined]
    assert only_bad.stderr.splitlines() == [  # type: ignore[attr-defined]
        bad_lines(run)[0],
        f"error: no readable trace under {bad}",
    ]


def test_summary_names_a_trace_the_analyses_cannot_take(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = summary.top_kernels
    first = sorted(SAMPLE.glob("*.pt.trace.json.gz"))[0]

    def top_kernels(trace: object, **options: object) -> object:
        if trace.path == first:  # type: ignore[attr-defined]
            raise ZeroDivisionError("float division by zero")
        return real(trace, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(summary, "top_kernels", top_kernels)
    result = invoke("summary", str(SAMPLE))
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert result.stderr.splitlines() == [  # type: ignore[attr-defined]
        f"error: {first}: cannot be analysed (ZeroDivisionError: float division by zero)"
    ]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_diff_says_which_run_a_bad_file_belongs_to(run: Path, tmp_path: Path) -> None:
    result = invoke("diff", str(SAMPLE), str(run), "--json")
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert orjson.loads(result.stdout)["steps"]["base"] > 0  # type: ignore[attr-defined]
    assert same_lines(result.stderr, bad_lines(run), " (in the new run)")  # type: ignore[attr-defined]
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(run / "w.5.pt.trace.json.gz", broken / "x.pt.trace.json.gz")
    unreadable_base = invoke("diff", str(broken), str(SAMPLE))
    assert unreadable_base.exit_code == 2  # type: ignore[attr-defined]
    first, last = unreadable_base.stderr.splitlines()  # type: ignore[attr-defined]
    assert first.startswith(f"error: {broken / 'x.pt.trace.json.gz'}: corrupt or truncated gzip")
    assert first.endswith("(in the base run)")
    assert last == f"error: {broken}: no readable trace (the base run of the diff)"
    assert "refused" not in unreadable_base.output  # type: ignore[attr-defined]


def test_a_bad_size_limit_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINPROF_MAX_TRACE_BYTES", "a lot")
    result = invoke("summary", str(SAMPLE))
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert result.stderr.splitlines() == [  # type: ignore[attr-defined]
        "error: TRAINPROF_MAX_TRACE_BYTES='a lot' is not a size (say 16G or 500000000)"
    ]


def test_the_real_command_exits_2_with_one_line_per_bad_file(run: Path) -> None:
    """As a user runs it: a fresh interpreter, a gzip bomb among the files, a small limit."""
    bomb = b"".join([gzip.compress(b'{"traceEvents": [')] + [gzip.compress(b" " * 2**20)] * 64)
    (run / "w.6.pt.trace.json.gz").write_bytes(bomb)
    env = {"TRAINPROF_MAX_TRACE_BYTES": "32M", "PATH": "", "TRAINPROF_CACHE": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "profiler.cli", "summary", str(run), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert len(orjson.loads(result.stdout)["traces"]) == 2
    bomb_line = (
        f"error: {run / 'w.6.pt.trace.json.gz'}: 16 MiB of text from byte 16 with no break "
        "between two events: an event over 16 MiB is not a trace's"
    )
    assert same_lines(result.stderr, [*bad_lines(run), bomb_line]), result.stderr


def test_the_cli_module_leaves_the_dashboard_alone() -> None:
    assert callable(cli.dashboard) and callable(cli._serve)
