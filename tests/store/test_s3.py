"""Trace stores in S3, against moto's S3 server on localhost: the real protocol over HTTP, not
a mocked client. A job writes to s3://, then `trainprof summary` (a subprocess, configured only
through the standard AWS_* variables) and the dashboard's data layer read it back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# moto and s3fs are in the dev extra: a missing one fails here rather than skipping.
import moto.server as moto_server
import orjson
import pytest
import s3fs

from profiler.analysis.run import Run, RunSet
from profiler.events import RunStatus, TrainprofWarning
from profiler.store import RunStore, remote
from profiler.store.remote import RemoteStoreError

BUCKET = "traces"
DOC = b'{"traceEvents": []}'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """moto's S3 server on a free port, found through AWS_ENDPOINT_URL, with one bucket."""
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TRAINPROF_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    try:
        yield fs
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(autouse=True)
def refresh_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "REFRESH_S", 0.0)  # each read lists the store afresh


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "profiler.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _train(out_dir: str, run_name: str) -> Any:
    import torch

    import profiler

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = profiler.schedule(wait=1, warmup=1, active=2)
    with profiler.profile(model, out_dir=out_dir, run_name=run_name, schedule=schedule) as prof:
        for _ in range(6):
            model(torch.randn(4, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    return prof


def test_a_job_writes_to_s3_and_summary_and_the_dashboard_read_it(s3: Any) -> None:
    prof = _train(f"s3://{BUCKET}/team", "job")
    assert prof.store.url == f"s3://{BUCKET}/team/job"
    stored = sorted(key.removeprefix(f"{BUCKET}/team/job/") for key in s3.find(f"{BUCKET}/team"))
    (trace,) = [p.name for p in prof.trace_files]
    assert stored == ["meta/rank.0.json", "meta/run.json", "meta/steps.0.jsonl", trace]
    with s3.open(f"{BUCKET}/team/job/meta/rank.0.json", "rb") as file:
        assert orjson.loads(file.read())["status"] == "complete"

    ran = _cli("summary", f"s3://{BUCKET}/team/job", "--json")
    assert ran.returncode == 0, ran.stderr
    report = orjson.loads(ran.stdout)
    # The report names the file by its URL, not by the local copy read.
    assert [entry["path"] for entry in report["traces"]] == [f"s3://{BUCKET}/team/job/{trace}"]
    assert report["traces"][0]["steps"]["count"] == 2  # the window's two active steps
    assert report["step_logs"] is not None

    from dashboard.app import create_app
    from dashboard.data.overview import run_summary
    from dashboard.data.runs import ROOT_CONFIG_KEY, list_runs

    app = create_app(f"s3://{BUCKET}/team")
    root = app.server.config[ROOT_CONFIG_KEY]
    assert [run.name for run in list_runs(root)] == ["job"]
    data = run_summary(root, "job")
    assert data.errors == () and len(data.summary["traces"]) == 1
    assert len(data.steps) == 6
    # A run that lands in the store later shows up on the next read of the same root.
    _rank_run(f"s3://{BUCKET}/team", "later", ranks=1)
    assert [run.name for run in list_runs(root)] == ["job", "later"]


def _rank_run(root: str, name: str, *, ranks: int) -> list[RunStore]:
    """A run of ``ranks`` ranks, each with one window, written as each rank's process would."""
    stores = [RunStore(root, name, rank=rank) for rank in range(ranks)]
    for store in stores:
        store.create({}, {})
        store.write_trace(store.trace_path(1_000 + store.rank), DOC)
        store.finish(RunStatus.COMPLETE, steps=3)
    return stores


def test_every_ranks_record_reaches_s3_and_reads_merged(s3: Any) -> None:
    zero, one = _rank_run(f"s3://{BUCKET}/ddp", "job", ranks=2)
    # Each rank uploaded its own files only: a rank's staging holds no other rank's files.
    assert [p.name for p in (one.run_dir / "meta").iterdir()] == ["rank.1.json"]
    assert not (one.run_dir / "meta" / "run.json").exists()
    run = Run(f"s3://{BUCKET}/ddp/job")
    assert run.name == "job" and sorted(run.ranks) == [0, 1]
    assert run.status() == "complete"
    assert [p.name for p in run.trace_paths] == sorted(
        p.name for store in (zero, one) for p in store.trace_files
    )
    (listed,) = RunSet(f"s3://{BUCKET}/ddp")
    assert listed.name == "job" and listed.has_meta


def test_a_run_name_taken_in_the_store_is_refused(s3: Any) -> None:
    _rank_run(f"s3://{BUCKET}/taken", "job", ranks=1)
    with pytest.raises(FileExistsError, match="already exists at s3://traces/taken/job"):
        RunStore(f"s3://{BUCKET}/taken", "job").create({}, {})


def test_a_missing_bucket_is_a_clear_error_naming_the_url(s3: Any) -> None:
    url = "s3://no-such-bucket/runs"
    with pytest.raises(RemoteStoreError, match="s3://no-such-bucket/runs/job: no such bucket"):
        RunStore(url, "job").create({}, {})
    with pytest.raises(RemoteStoreError, match="s3://no-such-bucket/runs: no such bucket"):
        RunSet(url)
    ran = _cli("summary", f"{url}/job")
    assert ran.returncode == 2
    assert "s3://no-such-bucket/runs/job: no such bucket" in " ".join(ran.stderr.split())
    ran = _cli("summary", f"s3://{BUCKET}/nothing-here")
    assert ran.returncode == 2
    assert f"s3://{BUCKET}/nothing-here: no such run" in " ".join(ran.stderr.split())


def test_a_root_with_no_run_yet_is_empty_until_one_arrives(s3: Any) -> None:
    root = f"s3://{BUCKET}/not-yet"
    assert list(RunSet(root)) == []  # as a local root not made yet; a run URL stays an error
    with pytest.raises(RemoteStoreError, match=f"{root}/job: no such run"):
        Run(f"{root}/job")
    _rank_run(root, "job", ranks=1)
    assert [run.name for run in RunSet(root)] == ["job"]


def test_an_upload_that_fails_degrades_the_run_and_never_raises(s3: Any) -> None:
    s3.mkdir("doomed")
    store = RunStore("s3://doomed/x", "job")
    store.create({}, {})
    s3.rm("doomed", recursive=True)  # the bucket goes away mid-run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.write_trace(store.trace_path(1_000), DOC)  # the upload fails on its own thread
        store.finish(RunStatus.COMPLETE, steps=1)
    told = [str(w.message) for w in caught if issubclass(w.category, TrainprofWarning)]
    assert any("could not upload" in text and "s3://doomed/x/job" in text for text in told)
    assert any(str(store.run_dir) in text for text in told)  # where the files wait
    meta = orjson.loads(store.run_meta_path.read_bytes())
    assert meta["status"] == "degraded"
    assert "s3://doomed/x/job" in meta["degraded"]["reason"]
    assert store.trace_files[0].is_file()  # kept locally


def test_a_key_leading_outside_the_copy_is_not_written(s3: Any, tmp_path: Path) -> None:
    _rank_run(f"s3://{BUCKET}/keys", "job", ranks=1)
    s3.pipe_file(f"{BUCKET}/keys/job/../../../escape.pt.trace.json.gz", DOC)
    assert any(".." in key for key in s3.find(f"{BUCKET}/keys"))  # S3 keeps the key as is
    copy = remote.local_root(f"s3://{BUCKET}/keys")
    cache = Path(os.environ["TRAINPROF_CACHE_DIR"])
    assert not list(cache.parent.glob("**/escape.pt.trace.json.gz"))
    assert [run.name for run in RunSet(copy)] == ["job"]


def test_memory_urls_round_trip_in_process() -> None:
    import profiler

    root = "memory://trainprof-test/runs"
    (store,) = _rank_run(root, "mem", ranks=1)
    run = Run(f"{root}/mem")
    assert [p.name for p in run.trace_paths] == [p.name for p in store.trace_files]
    assert run.status() == "complete" and run.ranks[0]["steps"] == 3
    traces = profiler.load(f"{root}/mem")
    assert [t.path.name for t in traces.traces] == [p.name for p in store.trace_files]
    # A file:// URL is a local path: no copy, no upload.
    local = RunStore(f"file://{store.run_dir.parent}", "plain")
    assert local.url is None and local.run_dir == store.run_dir.parent / "plain"
