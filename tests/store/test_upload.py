"""The uploader sends a rank's changed files whole, and a growing one no faster than its size
allows (fake clock); memory:// stands in for the object store (its own tests use S3)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytest.importorskip("fsspec")

from profiler.store.remote import filesystem  # noqa: E402
from profiler.store.upload import RESEND_BYTES_PER_S, Uploader  # noqa: E402


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _uploader(tmp_path: Path, clock: FakeClock) -> tuple[Uploader, str, list[str]]:
    url = f"memory://upload-{uuid.uuid4().hex}/run"
    failures: list[str] = []
    (tmp_path / "meta").mkdir()
    return Uploader(tmp_path, url, failures.append, clock=clock), url, failures


def _stored(url: str, name: str) -> bytes:
    fs, path = filesystem(url)
    return bytes(fs.cat_file(f"{path}/{name}"))


def test_changed_files_go_up_whole_and_temporary_ones_never(tmp_path: Path) -> None:
    uploader, url, failures = _uploader(tmp_path, FakeClock())
    (tmp_path / "w.1.pt.trace.json.gz").write_bytes(b"trace")
    (tmp_path / "meta" / "rank.0.json").write_bytes(b"{}")
    (tmp_path / "meta" / ".vm_1.0.rank.0.json.partial").write_bytes(b"half")
    assert uploader.send_changed() is False
    fs, path = filesystem(url)
    assert sorted(fs.find(path)) == [f"{path}/meta/rank.0.json", f"{path}/w.1.pt.trace.json.gz"]
    (tmp_path / "meta" / "rank.0.json").write_bytes(b'{"status": "complete"}')
    uploader.send_changed()
    assert _stored(url, "meta/rank.0.json") == b'{"status": "complete"}'
    assert failures == [] and uploader.failures == 0


def test_a_growing_file_is_resent_no_faster_than_its_size_allows(tmp_path: Path) -> None:
    clock = FakeClock()
    uploader, url, _ = _uploader(tmp_path, clock)
    log = tmp_path / "meta" / "steps.0.jsonl"
    log.write_bytes(b"x" * (3 * RESEND_BYTES_PER_S))  # may go up again 3 s after it went
    uploader.send_changed(everything=False)
    with log.open("ab") as file:
        file.write(b"more\n")
    clock.now = 2.9
    uploader.send_changed(everything=False)
    assert not _stored(url, "meta/steps.0.jsonl").endswith(b"more\n")
    clock.now = 3.1
    uploader.send_changed(everything=False)
    assert _stored(url, "meta/steps.0.jsonl").endswith(b"more\n")
    with log.open("ab") as file:
        file.write(b"last\n")
    clock.now = 3.2
    uploader.send_changed()  # a flush sends everything, however recent
    assert _stored(url, "meta/steps.0.jsonl").endswith(b"last\n")


def test_flush_waits_for_the_thread_and_close_stops_it(tmp_path: Path) -> None:
    uploader, url, _ = _uploader(tmp_path, FakeClock())
    uploader.start()
    (tmp_path / "meta" / "run.json").write_bytes(b"{}")
    assert uploader.flush(60)
    assert _stored(url, "meta/run.json") == b"{}"
    (tmp_path / "meta" / "run.json").write_bytes(b'{"end": 1}')
    assert uploader.close(60)
    assert _stored(url, "meta/run.json") == b'{"end": 1}'
    uploader._thread.join(60)
    assert not uploader._thread.is_alive()
    assert not uploader.flush(1)  # nothing left to send it: says so at once
