"""Each rank writes meta/rank.<rank>.json of its own; readers merge every rank's facts."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from profiler.analysis.run import Run
from profiler.events import RunStatus
from profiler.launch import settle
from profiler.store import RunStore
from profiler.store.liveness import HEARTBEAT_STALE_S, RunState, merge_states

DOC = b'{"traceEvents": []}'


def _ranks(root: Path, count: int = 2) -> list[RunStore]:
    stores = [RunStore(root, "job", rank=rank) for rank in range(count)]
    for store in stores:
        store.create({"rank": store.rank}, {"python": "3"})
    return stores


def _window(store: RunStore, unix_ms: int) -> Path:
    path = store.trace_path(unix_ms)
    store.write_trace(path, DOC)
    return path


def test_every_rank_lists_its_own_files_and_readers_merge_them(tmp_path: Path) -> None:
    zero, one = _ranks(tmp_path)
    files = [_window(zero, 1_000), _window(one, 2_000), _window(one, 3_000)]
    zero.finish(RunStatus.COMPLETE, steps=5)
    one.finish(RunStatus.COMPLETE, steps=4)
    meta_dir = tmp_path / "job" / "meta"
    assert sorted(p.name for p in meta_dir.iterdir()) == ["rank.0.json", "rank.1.json", "run.json"]
    # No rank writes another's file: rank 1 never touches run.json, which lists rank 0 only.
    assert orjson.loads((meta_dir / "run.json").read_bytes())["trace_files"] == [files[0].name]
    run = Run(tmp_path / "job")
    assert sorted(run.ranks) == [0, 1]
    assert run.ranks[0]["trace_files"] == [files[0].name]
    assert run.ranks[1]["trace_files"] == [files[1].name, files[2].name]
    assert [run.ranks[rank]["steps"] for rank in (0, 1)] == [5, 4]
    assert run.meta.meta is not None
    assert run.meta.meta["trace_files"] == sorted(p.name for p in files)
    assert run.meta.meta["config"] == {"rank": 0}  # run.json's own keys stay as written
    assert [p.name for p in run.trace_paths] == sorted(p.name for p in files)
    assert run.status() == "complete" and run.problems() == []


def test_a_failed_rank_fails_the_run_and_is_named(tmp_path: Path) -> None:
    zero, one = _ranks(tmp_path)
    zero.finish(RunStatus.COMPLETE, steps=5)
    one.finish(RunStatus.FAILED, steps=2, error=RuntimeError("NCCL timeout"))
    run = Run(tmp_path / "job")
    assert run.status() == "failed (rank 1: NCCL timeout)"
    assert run.rank_states()[0] == RunState("complete")


def test_a_live_rank_keeps_the_run_running_and_a_silent_one_is_named(tmp_path: Path) -> None:
    zero, one, _ = _ranks(tmp_path, 3)
    zero.finish(RunStatus.COMPLETE, steps=5)
    now = 1_800_000_000.0
    one.heartbeat(now)
    two = tmp_path / "job" / "meta" / "rank.2.json"
    stale = {**orjson.loads(two.read_bytes()), "heartbeat_unix_s": now - HEARTBEAT_STALE_S - 5}
    two.write_bytes(orjson.dumps({**stale, "host": "elsewhere"}))
    label = Run(tmp_path / "job").status(now=now)
    assert label is not None and label.startswith("running (rank 0 complete; rank 2 interrupted")
    assert "no heartbeat since" in label
    one.heartbeat(now - HEARTBEAT_STALE_S - 5)  # rank 1 stops beating too: nobody is running
    label = Run(tmp_path / "job").status(now=now)
    assert label is not None and label.startswith("interrupted (rank 1: no heartbeat since")
    assert "; rank 2: no heartbeat since" in label


def test_a_degraded_rank_degrades_a_finished_run(tmp_path: Path) -> None:
    zero, one = _ranks(tmp_path)
    one.mark_degraded("disk full", at_step=3)
    zero.finish(RunStatus.COMPLETE, steps=5)
    one.finish(RunStatus.DEGRADED, steps=5)
    assert Run(tmp_path / "job").status() == "degraded (rank 1: disk full)"


def test_the_commands_failure_recorded_by_trainprof_run_fails_the_run(tmp_path: Path) -> None:
    zero, one = _ranks(tmp_path)
    zero.finish(RunStatus.COMPLETE, steps=5)
    one.finish(RunStatus.COMPLETE, steps=5)
    settle(zero.run_dir, 3)  # torchrun exited 3 after both ranks recorded their end
    assert Run(tmp_path / "job").status() == "failed (exit status 3)"


def test_a_run_written_before_rank_files_reads_as_rank_zero(tmp_path: Path) -> None:
    (store,) = _ranks(tmp_path, 1)
    path = _window(store, 1_000)
    store.finish(RunStatus.DEGRADED, steps=5)
    store.rank_meta_path.unlink()
    run = Run(tmp_path / "job")
    assert run.has_meta and sorted(run.ranks) == [0]
    assert run.ranks[0]["trace_files"] == [path.name] and run.ranks[0]["config"] == {"rank": 0}
    assert run.status() == "degraded"


def test_rank_files_alone_make_a_run_and_a_bad_one_is_named(tmp_path: Path) -> None:
    _, one, _ = _ranks(tmp_path, 3)
    (tmp_path / "job" / "meta" / "run.json").unlink()  # rank 0 not there yet
    (tmp_path / "job" / "meta" / "rank.2.json").write_bytes(b"{not json")
    one.finish(RunStatus.COMPLETE, steps=1)
    run = Run(tmp_path / "job")
    assert run.has_meta and sorted(run.ranks) == [0, 1]
    assert run.meta.problem is None and run.status() == "running (rank 1 complete)"
    (problem,) = run.problems()
    assert problem.startswith("meta/rank.2.json: corrupt run metadata")


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({"rank 0": RunState("complete"), "rank 1": RunState("complete")}, "complete"),
        ({"rank 0": RunState("complete"), "rank 1": RunState("degraded", "x")}, "degraded"),
        ({"rank 0": RunState("interrupted", "SIGTERM"), "rank 1": RunState("running")}, "running"),
        ({"rank 0": RunState("running"), "rank 1": RunState("failed", "E")}, "failed"),
        ({"rank 0": RunState("interrupted"), "rank 1": RunState("degraded")}, "interrupted"),
        ({"rank 0": RunState("unknown"), "rank 1": RunState("complete")}, "complete"),
        ({}, "unknown"),
    ],
)
def test_the_worst_news_of_any_rank_is_the_runs(states: dict[str, RunState], expected: str) -> None:
    assert merge_states(states).status == expected


def test_a_reason_names_a_few_ranks_then_counts_the_rest() -> None:
    states = {f"rank {rank}": RunState("failed", "OOM") for rank in range(1024)}
    assert merge_states(states).label == (
        "failed (rank 0: OOM; rank 1: OOM; rank 2: OOM; 1021 more)"
    )
