"""The TensorBoard export, read back with TensorBoard's own reader (EventAccumulator)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from profiler.analysis.summary import BREAKDOWN_KEYS, merged_recommendations, trace_summary
from profiler.analysis.table import load_trace
from profiler.cli import app
from profiler.events import TRACE_SUFFIX, TrainprofWarning
from profiler.export import tensorboard_files
from profiler.export.live import LiveWriter
from profiler.export.tensorboard import ExportError, export_tensorboard, step_scalars
from profiler.store import TraceFormatError
from tests import peers
from tests.conftest import read_steps, read_trace
from tests.export import SAMPLE_RUN, expected_step_scalars, read_scalars, read_texts
from tests.export.test_tensorboard_modules import assert_only_module_ranges_changed

REL = 1e-6  # TensorBoard keeps scalars as float32
GPU_METRICS = ("utilization_pct", "sm_efficiency_pct", "achieved_occupancy_pct", "tensor_core_pct")


def assert_points(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [step for step, _ in got] == [step for step, _ in want]
    for (step, value), (_, expected) in zip(got, want, strict=True):
        assert value == pytest.approx(expected, rel=REL, abs=1e-9), f"step {step}"


def snapshot(directory: Path) -> dict[str, bytes]:
    files = (p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A copy of the committed demo run that a test may damage."""
    return Path(shutil.copytree(SAMPLE_RUN, tmp_path / "runs" / "sample"))


def test_every_step_has_its_scalars(tmp_path: Path) -> None:
    result = export_tensorboard(SAMPLE_RUN, tmp_path / "tb")
    assert result.run_dir == tmp_path / "tb" / "sample" and result.steps == 20
    records = read_steps(SAMPLE_RUN / "meta" / "steps.0.jsonl")
    expected = expected_step_scalars(records)
    scalars = read_scalars(result.run_dir)
    assert set(expected) <= set(scalars)
    assert [step for step, _ in scalars["trainprof/step/time_ms"]] == list(range(20))
    for tag, points in expected.items():
        assert_points(scalars[tag], points)
    # cpu_pct is sampled: steps before the first sample have none, and get no point.
    assert len(expected["trainprof/system/cpu_pct"]) < 20


def test_window_scalars_are_the_analysis_numbers(tmp_path: Path) -> None:
    scalars = read_scalars(export_tensorboard(SAMPLE_RUN, tmp_path / "tb").run_dir)
    traces = sorted(SAMPLE_RUN.glob(f"*{TRACE_SUFFIX}"))
    windows = [read_trace(path)["trainprof"]["window"]["last_step"] for path in traces]
    assert windows == [8, 17]
    summaries = list(zip(windows, [trace_summary(load_trace(p)) for p in traces], strict=True))
    for category in BREAKDOWN_KEYS:
        want = [(step, s["step_breakdown_pct"][category]) for step, s in summaries]
        assert_points(scalars[f"trainprof/window/breakdown_pct/{category}"], want)
    want = [(step, s["steps"]["mean_us"] / 1000) for step, s in summaries]
    assert_points(scalars["trainprof/window/step_time_ms"], want)
    assert scalars["trainprof/window/breakdown_pct/dataloader"][0][1] > 50  # a slow input pipeline
    assert not [tag for tag in scalars if tag.startswith("trainprof/window/gpu/")]  # CPU run


def test_recommendations_are_a_text_summary(tmp_path: Path) -> None:
    texts = read_texts(export_tensorboard(SAMPLE_RUN, tmp_path / "tb").run_dir)
    ((step, text),) = texts["trainprof/recommendations"]
    assert step == 19
    summary = {"traces": [trace_summary(load_trace(p)) for p in SAMPLE_RUN.glob("*.gz")]}
    findings = merged_recommendations(summary)
    assert [f["id"] for f in findings] == ["dataloader_bound"]
    assert f"- **high** `dataloader_bound`: {findings[0]['message']}" in text
    assert "run `sample` (complete): 20 steps" in text


def test_traces_are_placed_for_the_profiler_plugin(tmp_path: Path) -> None:
    result = export_tensorboard(SAMPLE_RUN, tmp_path / "tb")
    sources = sorted(SAMPLE_RUN.glob(f"*{TRACE_SUFFIX}"))
    assert sorted(result.trace_files) == [result.run_dir / p.name for p in sources]
    for source in sources:  # our forward ranges made the plugin's module events, nothing else
        ranges = assert_only_module_ranges_changed(source, result.run_dir / source.name)
        assert len(ranges) == 45  # 15 modules, 3 steps
    assert peers.tb_plugin_runs(tmp_path / "tb") == {"sample": ["vm_12830"]}
    overview = peers.tb_plugin_overview(result.run_dir, span="2")
    assert overview["steps"] == ["15", "16", "17"]


def test_a_plain_torch_profiler_trace(reference_traces: Path, tmp_path: Path) -> None:
    source = reference_traces / "hta" / "two_ranks_rank-0.json.gz"
    result = export_tensorboard(source, tmp_path / "tb")
    assert result.run_name == "two_ranks_rank-0" and (result.steps, result.windows) == (0, 1)
    (placed,) = result.trace_files
    assert placed.name == "two_ranks_rank-0.1.pt.trace.json.gz"
    assert placed.read_bytes() == source.read_bytes()
    scalars = read_scalars(result.run_dir)
    assert all(tag.startswith("trainprof/window/") for tag in scalars)  # no per-step metrics
    summary = trace_summary(load_trace(source))
    for metric in GPU_METRICS:  # at its last ProfilerStep#N
        assert_points(scalars[f"trainprof/window/gpu/{metric}"], [(552, summary["gpu"][metric])])
    assert_points(scalars["trainprof/window/breakdown_pct/kernel"], [(552, 44.49)])
    assert "two_ranks_rank-0" in peers.tb_plugin_runs(tmp_path / "tb")


def test_a_directory_of_plain_traces_one_per_rank(reference_traces: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    # One gzipped as it came, one plain JSON as some tools write.
    shutil.copy(reference_traces / "hta" / "two_ranks_rank-0.json.gz", plain / "rank0.json.gz")
    data = (reference_traces / "hta" / "two_ranks_rank-1.json.gz").read_bytes()
    (plain / "rank1.json").write_bytes(gzip.decompress(data))
    result = export_tensorboard(plain, tmp_path / "tb", run_name="ddp")
    names = sorted(p.name for p in result.trace_files)
    assert names == ["rank0.1.pt.trace.json.gz", "rank1.1.pt.trace.json.gz"]
    assert (
        gzip.decompress((result.run_dir / names[1]).read_bytes())
        == (plain / "rank1.json").read_bytes()
    )
    rank1 = trace_summary(load_trace(plain / "rank1.json"))
    scalars = read_scalars(result.run_dir / "rank1")  # rank 0 at the top, others below
    assert_points(
        scalars["trainprof/window/gpu/utilization_pct"], [(552, rank1["gpu"]["utilization_pct"])]
    )
    assert len(read_scalars(result.run_dir)["trainprof/window/gpu/utilization_pct"]) == 1
    assert peers.tb_plugin_runs(tmp_path / "tb")["ddp"][-2:] == ["rank0", "rank1"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_reexport_replaces_and_never_duplicates(
    sample: Path, tmp_path: Path, monkeypatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(tensorboard_files, "_exchange", lambda first, second: False)
    logdir = tmp_path / "tb"
    first = export_tensorboard(sample, logdir)
    (first.run_dir / "stale.txt").write_text("from an older export")
    second = export_tensorboard(sample, logdir)
    assert len(list(second.run_dir.glob("events.out.tfevents.*"))) == 1
    assert not (second.run_dir / "stale.txt").exists()
    scalars = read_scalars(second.run_dir)
    assert [s for s, _ in scalars["trainprof/step/time_ms"]] == list(range(20))
    assert [s for s, _ in scalars["trainprof/window/step_time_ms"]] == [8, 17]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "tb"]  # no staging left
    assert sorted(p.name for p in logdir.iterdir()) == ["sample"]


def _truncate_trace(run: Path) -> Path:
    path = sorted(run.glob(f"*{TRACE_SUFFIX}"))[1]
    path.write_bytes(path.read_bytes()[:5000])
    return path


def _corrupt_step_line(run: Path) -> Path:
    path = run / "meta" / "steps.0.jsonl"
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join([*lines[:7], lines[7][:40], *lines[8:]]) + b"\n")
    return path


def _corrupt_run_json(run: Path) -> Path:
    path = run / "meta" / "run.json"
    path.write_bytes(b'{"schema": "trainprof.run/1", "status": ')
    return path


@pytest.mark.parametrize(
    ("damage", "error", "problem"),
    [
        (_truncate_trace, TraceFormatError, "corrupt or truncated gzip"),
        (_corrupt_step_line, ExportError, ":8: corrupt step record"),
        (_corrupt_run_json, ExportError, "corrupt run metadata"),
    ],
)
def test_a_corrupt_run_changes_nothing(
    sample: Path, tmp_path: Path, damage, error: type[Exception], problem: str
) -> None:
    logdir = tmp_path / "tb"
    export_tensorboard(sample, logdir)
    before = snapshot(logdir)
    bad = damage(sample)
    with pytest.raises(error) as raised:
        export_tensorboard(sample, logdir)
    assert str(bad) in str(raised.value) and problem in str(raised.value)
    assert snapshot(logdir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "tb"]


def test_a_missing_run_or_an_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        export_tensorboard(tmp_path / "nope", tmp_path / "tb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="not a run"):
        export_tensorboard(tmp_path / "empty", tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_cli_exports_and_reports_bad_input(sample: Path, tmp_path: Path) -> None:
    logdir = tmp_path / "tb"
    ok = CliRunner().invoke(app, ["export-tensorboard", str(sample), "--logdir", str(logdir)])
    assert ok.exit_code == 0, ok.output
    assert "exported 20 steps and 2 capture window(s)" in ok.output
    bad = _truncate_trace(sample)
    failed = CliRunner().invoke(
        app, ["export-tensorboard", str(sample), "--logdir", str(logdir), "--name", "again"]
    )
    assert failed.exit_code == 2
    assert f"error: {bad}: corrupt or truncated gzip" in failed.output.replace("\n", "")
    assert "Traceback" not in failed.output
    assert sorted(p.name for p in logdir.iterdir()) == ["sample"]
    missing = CliRunner().invoke(app, ["export-tensorboard", "nope", "--logdir", str(logdir)])
    assert missing.exit_code == 2 and "nope: no such file or directory" in missing.output
    named = ["export-tensorboard", str(SAMPLE_RUN), "--logdir", str(logdir), "--name", "../x"]
    assert CliRunner().invoke(app, named).exit_code == 2


def test_the_export_path_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from profiler.export.tensorboard import export_tensorboard; "
        f"export_tensorboard({str(SAMPLE_RUN)!r}, {str(tmp_path)!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_step_scalars_of_a_gpu_record() -> None:
    record = {
        "step": 3, "dur_us": 2500.0, "data_wait_us": 0.0, "forward_us": None, "deep": True,
        "gpu0_util_pct": 87.0, "gpu1_util_pct": 0.0, "gpu0_memory_used_bytes": 1e9,
    }  # fmt: skip
    assert step_scalars(record) == {
        "trainprof/step/time_ms": 2.5,
        "trainprof/step/data_wait_ms": 0.0,
        "trainprof/gpu/0/utilization_pct": 87.0,
        "trainprof/gpu/1/utilization_pct": 0.0,
    }


def test_live_writer_shows_steps_before_it_is_closed(tmp_path: Path) -> None:
    records = read_steps(SAMPLE_RUN / "meta" / "steps.0.jsonl")
    writer = LiveWriter(tmp_path, "live")
    try:
        writer.add_steps(records[:5])
        scalars = read_scalars(tmp_path / "live")  # flushed at each batch: readable now
        assert_points(
            scalars["trainprof/step/time_ms"],
            expected_step_scalars(records[:5])["trainprof/step/time_ms"],
        )
    finally:
        writer.close()


def test_live_mode_writes_the_same_as_the_command(train, tmp_path: Path) -> None:
    logdir = tmp_path / "tb"
    prof = train(steps=6, tensorboard_logdir=logdir, run_name="live")
    live = logdir / "live"
    records = read_steps(prof.store.steps_path)
    scalars = read_scalars(live)
    for tag, points in expected_step_scalars(records).items():
        assert_points(scalars[tag], points)
    assert [s for s, _ in scalars["trainprof/window/step_time_ms"]] == [3]  # active steps 2-3
    assert [p.name for p in live.glob(f"*{TRACE_SUFFIX}")] == [p.name for p in prof.trace_files]
    assert "run `live` (complete): 6 steps" in read_texts(live)["trainprof/recommendations"][0][1]
    again = export_tensorboard(prof.run_dir, tmp_path / "cli")
    assert read_scalars(again.run_dir) == scalars
    assert read_texts(again.run_dir) == read_texts(live)


def test_a_crash_in_the_loop_still_leaves_the_export(train, tmp_path: Path) -> None:
    logdir = tmp_path / "tb"
    with pytest.raises(RuntimeError, match="boom"):
        train(steps=6, fail_at=3, tensorboard_logdir=logdir, run_name="crash")
    scalars = read_scalars(logdir / "crash")
    assert [s for s, _ in scalars["trainprof/step/time_ms"]] == [0, 1, 2]  # 3 never finished
    assert [s for s, _ in scalars["trainprof/window/step_time_ms"]] == [3]
    ((_, text),) = read_texts(logdir / "crash")["trainprof/recommendations"]
    assert "run `crash` (failed)" in text


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("import sys; sys.exit('no room left')", "no room left"),
        ("import time; time.sleep(600)", "took over 1 s and was stopped"),
    ],
)
def test_a_failed_export_is_one_warning_and_the_live_scalars_stay(
    train, tmp_path: Path, monkeypatch, code: str, why: str
) -> None:
    from profiler.capture import tensorboard_live

    # The child that stands in for `trainprof export-tensorboard` fails, or never ends.
    monkeypatch.setattr(tensorboard_live, "export_command", lambda *_: [sys.executable, "-c", code])
    monkeypatch.setattr(tensorboard_live, "EXPORT_TIMEOUT_S", 1.0)
    logdir = tmp_path / "tb"
    with pytest.warns(TrainprofWarning) as caught:
        prof = train(steps=6, tensorboard_logdir=logdir, run_name="live")
    (warning,) = [w for w in caught if issubclass(w.category, TrainprofWarning)]
    assert "could not export the run to TensorBoard" in str(warning.message)
    assert why in str(warning.message)
    meta = orjson.loads((prof.run_dir / "meta" / "run.json").read_bytes())
    assert meta["status"] == "complete"  # the run itself is whole
    scalars = read_scalars(logdir / "live")
    assert [s for s, _ in scalars["trainprof/step/time_ms"]] == list(range(6))
    assert "trainprof/window/step_time_ms" not in scalars  # only the full export writes these


def test_event_file_checksums_are_tensorboards() -> None:
    import random

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    from profiler.export.event_file import masked_crc32c

    rng = random.Random(0)
    messages = [rng.randbytes(rng.randint(0, 400)) for _ in range(200)] + [b"", b"\x00" * 8]
    assert masked_crc32c(messages).tolist() == [reference(m) for m in messages]
