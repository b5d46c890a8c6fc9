"""trainprof summary: the trainprof.summary/1 dict, the JSON the CLI prints, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import profiler
from profiler.analysis.run import Run
from profiler.analysis.summary import merged_recommendations, step_log_report
from profiler.cli import app

TOP_KEYS = {
    "path", "rank", "device", "events", "steps", "step_breakdown_pct", "gpu",
    "temporal_breakdown_pct", "top_ops", "top_kernels", "memory", "recommendations", "trigger",
}  # fmt: skip
BREAKDOWN = {"kernel", "memcpy", "memset", "communication", "runtime", "dataloader", "cpu_exec",
             "other"}  # fmt: skip
REFERENCES = ["alexnet.json.gz", "amd_mi250.json.gz", "cpu_only.json.gz", "triton.json.gz",
              "two_ranks_rank-0.json.gz", "nccl.json.gz"]  # fmt: skip


def check_schema(summary: dict) -> None:
    assert summary["schema"] == "trainprof.summary/1"
    for trace in summary["traces"]:
        assert set(trace) == TOP_KEYS
        assert isinstance(trace["rank"], int) and isinstance(trace["events"], int)
        assert trace["device"] in ("cuda", "cpu", "rocm")
        assert set(trace["steps"]) == {"count", "mean_us", "p50_us", "max_us"}
        assert set(trace["step_breakdown_pct"]) == BREAKDOWN
        assert sum(trace["step_breakdown_pct"].values()) == pytest.approx(100, abs=0.1)
        if trace["gpu"] is not None:
            assert set(trace["gpu"]) == {
                "utilization_pct",
                "sm_efficiency_pct",
                "achieved_occupancy_pct",
                "tensor_core_pct",
            }
        if trace["temporal_breakdown_pct"] is not None:
            assert set(trace["temporal_breakdown_pct"]) == {"idle", "compute", "non_compute"}
        for op in trace["top_ops"]:
            assert set(op) == {"name", "calls", "self_us", "total_us"}
            assert op["self_us"] <= op["total_us"] + 0.01
        for kernel in trace["top_kernels"]:
            assert set(kernel) == {"name", "calls", "total_us", "mean_us"}
        for rec in trace["recommendations"]:
            assert {"id", "severity", "message", "evidence"} <= set(rec)
            assert rec["severity"] in ("high", "medium", "low")


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_traces_summarise_to_the_schema(reference_traces: Path, name: str) -> None:
    summary = profiler.summarize(reference_traces / "hta" / name)
    check_schema(summary)
    (trace,) = summary["traces"]
    assert (trace["gpu"] is None) == (trace["device"] == "cpu")
    if trace["device"] != "cpu":
        assert trace["top_kernels"], "a GPU trace has kernels"


def test_cli_json_is_the_api_dict(reference_traces: Path) -> None:
    path = reference_traces / "hta" / "alexnet.json.gz"
    result = CliRunner().invoke(app, ["summary", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == profiler.summarize(path)


def test_our_slow_loader_run_is_dataloader_bound(train, tmp_path: Path) -> None:
    import time

    import torch

    wait_s = 0.1  # sleep guarantees a floor; no assertion depends on how fast the model runs

    def slow():
        for _ in range(6):
            time.sleep(wait_s)
            yield torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))

    prof = train(steps=6, loader=slow(), out_dir=tmp_path, run_name="slow")
    summary = profiler.summarize(prof.run_dir)
    check_schema(summary)
    (trace,) = summary["traces"]
    assert trace["steps"]["count"] == 2
    wait_us = trace["step_breakdown_pct"]["dataloader"] / 100 * trace["steps"]["mean_us"]
    assert wait_us >= wait_s * 1e6
    rec = next(r for r in trace["recommendations"] if r["id"] == "dataloader_bound")
    # The saving is the measured wait per step.
    assert rec["saving_us_per_step"] == pytest.approx(wait_us, rel=0.01)


def test_bad_file_is_named_exit_2_and_the_rest_still_reported(
    reference_traces: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(reference_traces / "hta" / "triton.json.gz", run / "w.1.pt.trace.json.gz")
    bad = run / "w.2.pt.trace.json.gz"
    bad.write_bytes(b"{not json")
    result = CliRunner().invoke(app, ["summary", str(run), "--json"])
    assert result.exit_code == 2
    assert f"{bad}: invalid or truncated JSON" in result.stderr.replace("\n", "")
    summary = orjson.loads(result.stdout)
    assert [t["path"] for t in summary["traces"]] == [str(run / "w.1.pt.trace.json.gz")]


@pytest.mark.parametrize("content", [b"", b"[1, 2", b'{"a": 1}'])
def test_single_bad_file_exit_2_one_line(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "t.json"
    bad.write_bytes(content)
    result = CliRunner().invoke(app, ["summary", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad}: ")
    assert "Traceback" not in result.output


def test_missing_path_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["summary", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such file or directory" in result.stderr


def test_terminal_report_names_the_finding(reference_traces: Path) -> None:
    result = CliRunner().invoke(
        app, ["summary", str(reference_traces / "hta" / "amd_mi250.json.gz")]
    )
    assert result.exit_code == 0, result.output
    assert "low_gpu_utilization" in result.stdout
    assert "Top kernels" in result.stdout


SAMPLE = Path(__file__).resolve().parents[2] / "traces" / "sample"


def _finding(rule: str, severity: str, saving: float, **evidence: float) -> dict:
    return {"id": rule, "severity": severity, "message": rule, "evidence": evidence,
            "saving_us_per_step": saving, "page": "/"}  # fmt: skip


def test_merged_recommendations_keep_each_rule_once_with_its_range() -> None:
    summary = profiler.summarize(SAMPLE)
    per_file = [rec for t in summary["traces"] for rec in t["recommendations"]]
    assert len(summary["traces"]) == 2 and len(per_file) >= 2  # one finding per window

    merged = merged_recommendations(summary)

    assert sorted(rec["id"] for rec in merged) == sorted({rec["id"] for rec in per_file})
    for rec in merged:
        same = [(r, t) for t in summary["traces"] for r in t["recommendations"]
                if r["id"] == rec["id"]]  # fmt: skip
        assert rec["seen_in"] == [t["path"] for _, t in same]
        worst = max(r["saving_us_per_step"] or 0.0 for r, _ in same)
        assert rec["saving_us_per_step"] == worst
        for key, (low, high) in rec["evidence_range"].items():
            assert low == min(r["evidence"][key] for r, _ in same)
            assert high == max(r["evidence"][key] for r, _ in same)


def test_merged_recommendations_rank_severity_before_saving() -> None:
    traces = [
        {"path": "a", "rank": 0, "recommendations": [_finding("x", "medium", 900.0, pct=10.0)]},
        {"path": "b", "rank": 1, "recommendations": [_finding("x", "high", 5.0, pct=30.0),
                                                     _finding("y", "medium", 1.0)]},
    ]  # fmt: skip

    merged = merged_recommendations({"schema": "trainprof.summary/1", "traces": traces})

    assert [rec["id"] for rec in merged] == ["x", "y"]
    assert (merged[0]["severity"], merged[0]["path"], merged[0]["rank"]) == ("high", "b", 1)
    assert merged[0]["ranks"] == [0, 1] and merged[0]["evidence_range"] == {"pct": [10.0, 30.0]}
    assert merged[1]["evidence_range"] == {}


def write_steps(run_dir: Path, rank: int, records: list[dict]) -> None:
    meta = run_dir / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / f"steps.{rank}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def _step(step: int, dur: float, wait: float | None = None, **more: float) -> dict:
    return {"step": step, "dur_us": dur, "data_wait_us": wait, **more}


def test_step_log_report_of_two_ranks_by_hand(tmp_path: Path) -> None:
    run = tmp_path / "run"
    timed = {"forward_us": 20.0, "backward_us": 50.0, "optimizer_us": 10.0}
    write_steps(run, 0, [
        _step(0, 100.0, 10.0, **timed, peak_memory_bytes=1000),
        _step(1, 300.0, 30.0, peak_memory_bytes=3000),
        {**_step(2, 900.0, 900.0), "completed": False},  # cut short: not counted
    ])  # fmt: skip
    write_steps(run, 1, [_step(0, 200.0), _step(1, 400.0, 40.0, forward_us=40.0)])
    (run / "meta" / "run.json").write_bytes(orjson.dumps({"status": "complete"}))

    logs = profiler.summarize(run)["step_logs"]

    assert (logs["steps"], logs["ranks"], logs["timed_steps"]) == (4, 2, 2)
    assert (logs["mean_us"], logs["p50_us"], logs["max_us"]) == (250.0, 250.0, 400.0)
    assert logs["p90_us"] == 370.0  # between 300 and 400, linearly
    assert logs["data_wait_us"] == pytest.approx(80 / 3, abs=0.005)
    assert logs["data_wait_pct"] == 10.0  # 80 us of the 800 us of the steps that record one
    assert (logs["forward_us"], logs["backward_us"]) == (30.0, 50.0)
    # forward: 60 us of the 500 us of the two steps that timed it; the others, step 0 alone.
    assert logs["phase_pct"] == {"forward": 12.0, "backward": 50.0, "optimizer": 10.0}
    assert logs["peak_memory_bytes"] == 3000
    assert [(s["rank"], s["step"], s["dur_us"], s["data_wait_us"]) for s in
            logs["slowest_steps"]] == [(1, 1, 400.0, 40.0), (0, 1, 300.0, 30.0),
                                       (1, 0, 200.0, None), (0, 0, 100.0, 10.0)]  # fmt: skip
    per_rank = {row["rank"]: row for row in logs["per_rank"]}
    assert (per_rank[0]["steps"], per_rank[0]["mean_us"]) == (2, 200.0)
    assert (per_rank[1]["steps"], per_rank[1]["data_wait_pct"]) == (2, 10.0)
    assert logs["recommendations"][0]["severity"] == "medium"  # 10% > DATALOADER_PCT
    assert logs["runs"] == [str(run)]
    text = CliRunner().invoke(app, ["summary", str(run)], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "Per rank" in text.stdout and "dataloader_bound" in text.stdout
    assert "10.0% of step" in text.stdout  # the data wait's share


@pytest.mark.parametrize(("wait", "severity"), [(5.0, None), (5.01, "medium"), (30.0, "high")])
def test_step_log_dataloader_advice_uses_the_rules_thresholds(
    tmp_path: Path, wait: float, severity: str | None
) -> None:
    from profiler.analysis.rules import DATALOADER_PCT, HIGH_SEVERITY_PCT

    assert (DATALOADER_PCT, HIGH_SEVERITY_PCT) == (5.0, 30.0)  # what the cases are made for
    write_steps(tmp_path, 0, [_step(0, 100.0, wait)])

    report = step_log_report([Run(tmp_path)])

    assert report is not None
    found = [(rec.id, rec.severity) for rec in report.recommendations]
    assert found == ([] if severity is None else [("dataloader_bound", severity)])


def test_no_step_logs_is_none(tmp_path: Path, reference_traces: Path) -> None:
    write_steps(tmp_path, 0, [{"step": 0, "dur_us": None}, {**_step(1, 5.0), "completed": False}])
    assert step_log_report([Run(tmp_path)]) is None
    assert profiler.summarize(reference_traces / "hta" / "cpu_only.json.gz")["step_logs"] is None
