"""Per-rank summaries (stored beside the run) and the fan-out over trace files: the summary
built from them equals the one built from the loaded traces, in this process and on a real
Dask LocalCluster started here; stored summaries are read instead of the traces while the
trace and the analysis code are unchanged."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from bench.synth import write_ranks
from profiler.analysis import fanout, rank_summary
from profiler.analysis.fanout import DaskUnavailable, summarize_files
from profiler.analysis.rank_summary import summary_files
from profiler.analysis.summary import summarize, summarize_traces
from profiler.analysis.table import find_trace_files, load
from profiler.cli import app
from profiler.store.chrome_trace import TraceFormatError

HTA = Path(__file__).resolve().parents[1] / "data" / "hta"
RANKS, SLOW_RANK = 4, 2


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synchronous ranks of 1,500 events, rank 2 slow by 5 ms a step."""
    run = tmp_path_factory.mktemp("fanout") / "run"
    write_ranks(run, 1_500, ranks=RANKS, slow_rank=SLOW_RANK, steps=3)
    return run


@pytest.fixture
def two_ranks(tmp_path: Path) -> Path:
    """HTA's two-rank GPU traces as one run."""
    run = tmp_path / "two_ranks"
    run.mkdir()
    for rank in (0, 1):
        shutil.copy(HTA / f"two_ranks_rank-{rank}.json.gz", run)
    return run


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A real Dask scheduler with two single-threaded worker processes."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local.scheduler_address


def as_json(report: dict[str, object]) -> bytes:
    return orjson.dumps(report, option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize("name", ["synthetic", "two_ranks"])
def test_the_summary_from_per_rank_summaries_is_the_loaded_traces(
    name: str, request: pytest.FixtureRequest
) -> None:
    run: Path = request.getfixturevalue(name)
    fresh = summarize(run)  # builds and stores every per-rank summary
    stored = summarize(run)  # reads them back
    loaded = summarize_traces(load(run, cache=False))[0]
    assert as_json(fresh) == as_json(loaded) == as_json(stored)
    assert fresh["distributed"] is not None
    assert len(fresh["traces"]) == len(find_trace_files(run))


def test_the_slow_rank_is_named_from_the_summaries(synthetic: Path) -> None:
    found = summarize(synthetic)["distributed"]
    assert [s["rank"] for s in found["stragglers"]] == [SLOW_RANK]
    assert found["stragglers"][0]["category"] == "dataloader"
    assert sorted(found["clock_offset_us"]) == [str(rank) for rank in range(RANKS)]


def test_a_stored_summary_is_read_instead_of_the_trace_until_the_trace_changes(
    two_ranks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = summarize(two_ranks)
    loads: list[Path] = []
    real = rank_summary.load_trace

    def counted(path: Path, **options: object) -> object:
        loads.append(Path(path))
        return real(path, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(rank_summary, "load_trace", counted)
    assert as_json(summarize(two_ranks)) == as_json(first)
    assert loads == []
    trace = sorted(find_trace_files(two_ranks))[0]
    stat = trace.stat()
    os.utime(trace, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert as_json(summarize(two_ranks)) == as_json(first)
    assert loads == [trace]
    size = sum(f.stat().st_size for f in summary_files(trace).values())
    assert size < trace.stat().st_size  # kilobytes: what a cross-rank view reads per rank


def test_a_changed_analysis_invalidates_the_stored_summaries(
    two_ranks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summarize(two_ranks)
    trace = sorted(find_trace_files(two_ranks))[0]
    key = rank_summary.summary_key(trace, False)
    assert rank_summary.has_rank_summary(trace, key)
    monkeypatch.setattr(rank_summary, "analysis_fingerprint", lambda: "another version")
    assert not rank_summary.has_rank_summary(trace, rank_summary.summary_key(trace, False))


def test_a_local_cluster_gives_what_this_process_gives(
    synthetic: Path, cluster: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pt.trace.json.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    files = [*find_trace_files(synthetic), bad]
    here = summarize_files(files, cache=False)
    there = summarize_files(files, dask=cluster, cache=False)
    assert [type(r) for r in there] == [type(r) for r in here]
    assert isinstance(there[-1], TraceFormatError)
    assert str(there[-1]) == str(here[-1]) and str(bad) in str(there[-1])
    for mine, theirs in zip(here[:-1], there[:-1], strict=True):
        assert mine.entry == theirs.entry  # type: ignore[union-attr]
        assert mine.rank_steps.equals(theirs.rank_steps)  # type: ignore[union-attr]
        assert mine.collectives.equals(theirs.collectives)  # type: ignore[union-attr]


def test_summary_and_diff_json_are_the_same_with_and_without_dask(
    synthetic: Path, two_ranks: Path, cluster: str
) -> None:
    runner = CliRunner()
    for command in (["summary", str(synthetic)], ["diff", str(two_ranks), str(synthetic)]):
        local = runner.invoke(app, [*command, "--json"])
        remote = runner.invoke(app, [*command, "--json", "--dask", cluster])
        assert local.exit_code == remote.exit_code == 0, remote.output
        assert orjson.loads(local.stdout) == orjson.loads(remote.stdout)


def test_dask_without_distributed_names_the_extra(
    synthetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(DaskUnavailable, match=r"trainprof\[dask\]"):
        summarize_files(find_trace_files(synthetic), dask="local")
    result = CliRunner().invoke(app, ["summary", str(synthetic), "--dask", "local"])
    assert result.exit_code == 2
    assert "pip install 'trainprof[dask]'" in result.stderr
    served = CliRunner().invoke(app, ["dashboard", str(synthetic), "--dask", "local"])
    assert served.exit_code == 2 and "trainprof[dask]" in served.stderr
    # Without --dask, no Dask means this process, whatever the count.
    monkeypatch.setattr(fanout, "LOCAL_CLUSTER_MIN_FILES", 1)
    assert all(not isinstance(r, TraceFormatError) for r in summarize_files(
        find_trace_files(synthetic), cache=False))  # fmt: skip


def test_a_summary_of_few_files_does_not_import_dask(tmp_path: Path) -> None:
    # Importing dask.distributed takes longer than summarising a small trace; only a run of
    # files worth a cluster needs to know whether it is installed.
    pytest.importorskip("distributed")
    trace = shutil.copy(
        Path(__file__).parent.parent / "data" / "hta" / "cpu_only.json.gz", tmp_path
    )
    code = (
        "import sys, profiler; profiler.summarize(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(trace)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_local_cluster_is_chosen_only_for_files_that_need_work(
    two_ranks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("distributed")
    files = find_trace_files(two_ranks)
    monkeypatch.setattr(fanout, "LOCAL_CLUSTER_MIN_BYTES", 2**62)
    monkeypatch.setattr(fanout, "LOCAL_CLUSTER_MIN_FILES", len(files))
    assert fanout._worth_a_cluster(files, False, True) == ((os.cpu_count() or 1) >= 2)
    for file in files:  # store the summaries: nothing left to do
        rank_summary.rank_summary(file)
    assert not fanout._worth_a_cluster(files, False, True)
    assert fanout._worth_a_cluster(files, False, False) == ((os.cpu_count() or 1) >= 2)
    monkeypatch.setattr(fanout, "LOCAL_CLUSTER_MIN_FILES", len(files) + 1)
    assert not fanout._worth_a_cluster(files, False, False)


def assert_same_alignment(got: Any, expected: Any) -> None:
    """Two dashboard ``RunAlignment`` results agree field by field, and name the slow rank."""
    for field in ("files", "clock_offset_us", "file_offsets_us", "method", "stragglers"):
        assert getattr(got, field) == getattr(expected, field), field
    assert got.steps.equals(expected.steps)
    assert [s.rank for s in expected.stragglers] == [SLOW_RANK]


def test_the_dashboard_reads_the_ranks_through_dask_as_it_does_here(
    synthetic: Path, cluster: str
) -> None:
    from dashboard.data import distributed as data

    def both() -> tuple[object, object]:
        data._cached_alignment.cache_clear()
        data._cached_run_distributed.cache_clear()
        root, name = synthetic.parent, synthetic.name
        return data.run_alignment(root, name), data.run_distributed(root, name)

    here_alignment, here_ranks = both()
    data.use_dask(cluster)
    try:
        there_alignment, there_ranks = both()
    finally:
        data.use_dask(None)
        both()
    assert there_ranks == here_ranks
    assert_same_alignment(there_alignment, here_alignment)


def test_the_dashboard_reads_a_many_file_run_from_the_stored_summaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past one Timeline group of files, the dashboard's cross-rank view reads each file's
    per-rank summary (made here where missing, kept beside the run), not the loaded traces, and
    finds the same offsets, steps and straggler; it starts no cluster in its own process."""
    from dashboard.data import distributed as data

    run = tmp_path / "run"
    write_ranks(run, 1_500, ranks=RANKS, slow_rank=SLOW_RANK, steps=3)

    def alignment() -> object:
        data._cached_alignment.cache_clear()
        return data.run_alignment(tmp_path, run.name)

    from_traces = alignment()
    traces = find_trace_files(run)
    assert not any(summary_files(t)["steps"].exists() for t in traces)
    monkeypatch.setattr(data, "SUMMARIES_FROM_FILES", RANKS)
    monkeypatch.setattr(fanout, "_summarize_on_dask", None)  # no cluster: it would raise
    from_summaries = alignment()
    data._cached_alignment.cache_clear()
    assert all(summary_files(t)["steps"].exists() for t in traces)
    assert_same_alignment(from_summaries, from_traces)


def test_the_dashboard_command_hands_its_dask_address_to_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dashboard.app

    made: list[dict[str, object]] = []

    class Served:
        def run(self, **options: object) -> None:
            """Returns at once: the command's part ends here."""

    def create_app(root: Path, **options: object) -> Served:
        made.append(options)
        return Served()

    monkeypatch.setattr(dashboard.app, "create_app", create_app)
    address = "tcp://10.0.0.1:8786"
    result = CliRunner().invoke(app, ["dashboard", str(tmp_path), "--dask", address])
    assert result.exit_code == 0, result.output
    assert made == [{"dask": address}]
