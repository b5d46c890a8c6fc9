"""``/download/<run>/<file>``: a run's trace file served as it lies, from inside the root only."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from dashboard.app import create_app
from dashboard.data.timeline import run_trace_files
from dashboard.download import PERFETTO_HINT, download_href
from tests.dashboard.browser import WAIT_S, open_path, pick
from tests.dashboard.runs import SAMPLE


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A root with the sample run (nested too), a plain JSON trace, a secret outside the root
    that a link in a run points at, and a file in a run that is no trace; and its client."""
    base = tmp_path_factory.mktemp("download")
    root = base / "traces"
    shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
    shutil.copytree(SAMPLE, root / "team" / "nested", ignore=shutil.ignore_patterns("cache"))
    (root / "plain").mkdir()
    (root / "plain" / "w.1.pt.trace.json").write_text(json.dumps({"traceEvents": []}))
    (root / "sample" / "notes.txt").write_text("not a trace")
    shutil.copytree(root / "plain", root / "sample" / ".hidden")
    (root / "sample" / ".hidden" / "w.1.pt.trace.json").rename(
        root / "sample" / ".hidden" / "w.pt.trace.json.gz"
    )
    secret = base / "secret.pt.trace.json.gz"
    secret.write_bytes(gzip.compress(b'{"traceEvents": []}'))
    (root / "sample" / "leak.pt.trace.json.gz").symlink_to(secret)
    return root, create_app(root).server.test_client()


def test_a_trace_file_is_served_as_its_gzip_bytes(served: tuple[Path, Any]) -> None:
    root, client = served
    for run in ("sample", "team/nested"):
        for file in run_trace_files(root, run):
            response = client.get(download_href(run, file))
            assert response.status_code == 200
            assert response.data == (root / run / file).read_bytes()
            assert response.mimetype == "application/gzip"
            assert response.headers["Content-Disposition"] == f"attachment; filename={file}"
            assert "Content-Encoding" not in response.headers  # the browser keeps the gzip
            assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_an_uncompressed_trace_is_served_as_json(served: tuple[Path, Any]) -> None:
    root, client = served
    response = client.get("/download/plain/w.1.pt.trace.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.data == (root / "plain" / "w.1.pt.trace.json").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/download/sample/leak.pt.trace.json.gz",  # a link resolving outside the root
        "/download/sample/notes.txt",  # in the run, not a trace
        "/download/sample/meta/run.json",  # in the run's meta/, not a trace
        "/download/sample/.hidden/w.pt.trace.json.gz",
        "/download/sample/..%2Fsecret.pt.trace.json.gz",
        "/download/..%2Fsecret.pt.trace.json.gz/x",
        "/download/../secret.pt.trace.json.gz",
        "/download/sample/%2E%2E",
        "/download/sample/%2Fetc%2Fpasswd",
        "/download/sample/nope.pt.trace.json.gz",
        "/download/nope/vm.pt.trace.json.gz",
        "/download/sample/x%00.pt.trace.json.gz",
    ],
)
def test_anything_but_a_runs_trace_is_a_404(served: tuple[Path, Any], path: str) -> None:
    _root, client = served
    response = client.get(path)
    assert response.status_code == 404
    assert b"traceEvents" not in response.data


@pytest.mark.parametrize("path", ["/download//etc/passwd", "/download/%2Fetc/passwd"])
def test_an_absolute_path_gets_the_page_shell_not_a_file(
    served: tuple[Path, Any], path: str
) -> None:
    """Flask's path converter takes no leading slash: these reach Dash's page for unknown
    paths (its HTML shell), never a file."""
    _root, client = served
    response = client.get(path)
    assert response.mimetype == "text/html"
    assert "Content-Disposition" not in response.headers
    assert b"root:" not in response.data


def test_a_refused_host_gets_no_file(served: tuple[Path, Any]) -> None:
    root, client = served
    file = run_trace_files(root, "sample")[0]
    response = client.get(download_href("sample", file), headers={"Host": "evil.example"})
    assert response.status_code == 400


def _fetched(dash_duo: Any, href: str) -> Any:
    """Status, content type and first two bytes of ``href`` fetched by the page."""
    script = """const done = arguments[arguments.length - 1];
    fetch(arguments[0]).then(r => r.arrayBuffer().then(b => done(
        [r.status, r.headers.get('content-type'), b.byteLength,
         Array.from(new Uint8Array(b).slice(0, 2))]))).catch(e => done(String(e)));"""
    return dash_duo.driver.execute_async_script(script, href)


@pytest.mark.browser
def test_timeline_links_the_file_shown_for_download(dash_duo: Any, tmp_path: Path) -> None:
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
    files = run_trace_files(root, "sample")
    open_path(dash_duo, root, "/timeline?run=sample")
    dash_duo.wait_for_contains_text("#timeline-download", PERFETTO_HINT, timeout=WAIT_S)
    for file in files:
        if file != files[0]:
            pick(dash_duo, "#timeline-file", file)
            dash_duo.wait_for_contains_text("#timeline-download", file, timeout=WAIT_S)
        links = dash_duo.find_elements("#timeline-download a")
        assert [link.text for link in links] == [f"download {file}"]
        status, kind, size, magic = _fetched(dash_duo, links[0].get_attribute("href"))
        assert (status, kind) == (200, "application/gzip")
        assert size == (root / "sample" / file).stat().st_size
        assert magic == [0x1F, 0x8B]
    assert dash_duo.get_logs() == []
