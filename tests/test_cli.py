"""The command line, run as a user would run it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
from typer.testing import CliRunner

from profiler.cli import app
from profiler.demo import BATCH_LATENCY_NS
from profiler.events import TRACE_SUFFIX
from tests.conftest import read_steps, read_trace


def test_demo_writes_a_run_and_says_where(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--steps", "12", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "demo"
    traces = sorted(run_dir.glob(f"*{TRACE_SUFFIX}"))
    assert len(traces) == 2  # two windows of three active steps
    assert str(run_dir) in result.output.replace("\n", "")
    meta = orjson.loads((run_dir / "meta" / "run.json").read_bytes())
    assert meta["status"] == "complete" and meta["steps"] == 12
    steps = read_steps(run_dir / "meta" / "steps.0.jsonl")
    assert len(steps) == 12
    # The input pipeline is slow on purpose: no batch is ready before its deadline.
    assert all(s["data_wait_us"] * 1000 >= BATCH_LATENCY_NS for s in steps)
    trace = read_trace(traces[0])
    names = {e.get("name", "") for e in trace["traceEvents"]}
    assert "nn.Module: features.0 (Conv2d)" in names
    assert any(n.startswith("enumerate(DataLoader)#") for n in names)
    # Rerunning replaces the earlier demo run instead of refusing the name.
    again = CliRunner().invoke(app, ["demo", "--steps", "3", "--out", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert orjson.loads((run_dir / "meta" / "run.json").read_bytes())["steps"] == 3


def test_demo_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "--steps", "2", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a run made by `trainprof demo`" in result.output.replace("\n", " ")
    assert "Traceback" not in result.output
    assert (tmp_path / "demo" / "notes.txt").read_text() == "mine"


def test_demo_never_replaces_a_run_it_did_not_make(train, tmp_path: Path) -> None:
    train(steps=2, schedule=None, out_dir=tmp_path, run_name="mine")
    result = CliRunner().invoke(
        app, ["demo", "--steps", "2", "--out", str(tmp_path), "--run-name", "mine"]
    )
    assert result.exit_code == 2
    assert (tmp_path / "mine" / "meta" / "steps.0.jsonl").exists()


def test_demo_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--steps", "2", "--out", str(tmp_path), "--run-name", "../up"]
    )
    assert result.exit_code == 2
    assert "error: run_name must be a plain directory name" in result.output
    assert "Traceback" not in result.output


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "profiler.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout


def test_reporting_path_does_not_import_torch() -> None:
    code = "import sys, profiler, profiler.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _FakeApp:
    """Stands in for the Dash app: records how it was asked to serve, or fails like a busy port."""

    def __init__(self, root: Path, error: OSError | None) -> None:
        self.root, self.error, self.served = root, error, None

    def run(self, **options: object) -> None:
        if self.error is not None:
            raise self.error
        self.served = options


def _fake_dashboard(monkeypatch, error: OSError | None = None) -> list[_FakeApp]:
    import dashboard.app

    made: list[_FakeApp] = []
    monkeypatch.setattr(
        dashboard.app,
        "create_app",
        lambda root: made.append(_FakeApp(Path(root), error)) or made[-1],
    )
    return made


def test_demo_dashboard_serves_the_new_run(tmp_path: Path, monkeypatch) -> None:
    made = _fake_dashboard(monkeypatch)
    args = ["demo", "--steps", "3", "--out", str(tmp_path), "--dashboard", "--port", "8123"]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    (served,) = made
    assert served.root == tmp_path and (tmp_path / "demo" / "meta" / "run.json").is_file()
    assert served.served == {"host": "127.0.0.1", "port": 8123, "debug": False}
    assert "http://127.0.0.1:8123/?run=demo" in result.output.replace("\n", "")


def test_dashboard_reports_a_busy_port_and_a_missing_root(tmp_path: Path, monkeypatch) -> None:
    _fake_dashboard(monkeypatch, OSError(98, "Address already in use"))
    busy = CliRunner().invoke(app, ["dashboard", str(tmp_path), "--port", "8124"])
    assert busy.exit_code == 2
    assert "cannot serve on 127.0.0.1:8124: Address already in use" in busy.output

    missing = CliRunner().invoke(app, ["dashboard", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such directory" in missing.output


def test_summary_writes_the_columnar_cache_unless_told_not_to(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[1] / "traces" / "sample"
    run = tmp_path / "sample"
    shutil.copytree(sample, run, ignore=shutil.ignore_patterns("cache"))

    plain = CliRunner().invoke(app, ["summary", str(run), "--json", "--no-cache"])
    assert plain.exit_code == 0, plain.output
    assert not (run / "meta" / "cache").exists()

    cached = CliRunner().invoke(app, ["summary", str(run), "--json"])
    assert cached.exit_code == 0, cached.output
    assert any((run / "meta" / "cache").glob("*.parquet"))
    again = CliRunner().invoke(app, ["summary", str(run), "--json"])  # read from the cache
    assert orjson.loads(again.output) == orjson.loads(cached.output) == orjson.loads(plain.output)


def test_the_gate_sets_the_real_process_exit_status(reference_traces: Path) -> None:
    """As CI runs it: a fresh interpreter's exit status and the one verdict line on stderr."""
    hta = reference_traces / "hta"
    args = [sys.executable, "-m", "profiler.cli", "diff", str(hta / "two_ranks_rank-0.json.gz"),
            str(hta / "two_ranks_rank-1.json.gz"), "--json", "--fail-above"]  # fmt: skip
    tripped = subprocess.run([*args, "0"], capture_output=True, text=True, timeout=300)
    assert tripped.returncode == 1, tripped.stderr
    gate = orjson.loads(tripped.stdout)["gate"]
    assert tripped.stderr.splitlines() == [f"gate: {gate['reason']}"]
    passed = subprocess.run([*args, "100"], capture_output=True, text=True, timeout=300)
    assert passed.returncode == 0, passed.stderr
    assert not orjson.loads(passed.stdout)["gate"]["tripped"]
