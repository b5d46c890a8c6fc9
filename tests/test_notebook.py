"""``profiler.show``: in a real Jupyter kernel (the dashboard inline), and from a script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import profiler
from profiler.notebook import NOTEBOOK_ORIGINS, free_port, show, split_run
from tests.dashboard.runs import SAMPLE

REPO = Path(__file__).resolve().parents[1]
START_S = 120  # a loaded machine: a kernel, then dash and pandas imported in it


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    shutil.copytree(SAMPLE, root / "nested" / "again")
    return root


def get(url: str) -> tuple[int, dict[str, str], str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, dict(response.headers), response.read().decode()


def test_show_is_the_public_api() -> None:
    assert profiler.show is show
    assert "show" in profiler.__all__


def test_a_run_directory_opens_that_run_under_its_parent(root: Path) -> None:
    assert split_run(root / "sample") == (root.resolve(), "sample")
    assert split_run(root / "nested" / "again") == ((root / "nested").resolve(), "again")
    assert split_run(root) == (root.resolve(), None)
    assert split_run(root / "nested") == ((root / "nested").resolve(), None)  # no traces


def test_bad_arguments_are_refused_before_anything_starts(root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such"):
        show(root / "no-such")
    with pytest.raises(ValueError, match="height"):
        show(root, height=0)
    with pytest.raises(ValueError, match="port"):
        show(root, port=70000)


def test_from_a_script_it_serves_and_prints_the_url(root: Path) -> None:
    port = free_port()
    code = f"import profiler; profiler.show({str(root / 'sample')!r}, port={port})"
    server = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = f"http://127.0.0.1:{port}/?run=sample"
        assert line.strip() == f"trainprof: serving the runs under {root.resolve()} at {url} " + (
            "(Ctrl+C stops)"
        )
        status, headers, page = _wait_for(url, server)
        assert status == 200 and "<title>trainprof</title>" in page
        assert headers["X-Frame-Options"] == "DENY"  # served for a browser: no page frames it
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Any]:
    """A real IPython kernel running this interpreter, and a client to it."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / "trainprof-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "test", "language": "python"})
    )
    specs = KernelSpecManager(kernel_dirs=[str(spec.parent)])
    manager = KernelManager(kernel_spec_manager=specs, kernel_name="trainprof-test")
    manager.start_kernel(cwd=str(REPO))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=START_S)
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_in_a_notebook_kernel_the_dashboard_shows_inline(kernel: Any, root: Path) -> None:
    port = free_port()
    code = f"import profiler\nprofiler.show({str(root / 'sample')!r}, port={port}, height=640)"

    outputs = _execute(kernel, code)

    frames = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(frames) == 1
    assert f'src="http://127.0.0.1:{port}/"' in frames[0] and 'height="640"' in frames[0]
    shown = [o["data"]["text/plain"] for o in outputs if o["msg_type"] == "execute_result"]
    assert shown == [
        f"trainprof dashboard of {root.resolve()} at http://127.0.0.1:{port}/?run=sample"
    ]
    # The kernel goes on serving: the page answers, and the notebook's pages may frame it.
    status, headers, page = get(f"http://127.0.0.1:{port}/")
    assert status == 200 and "<title>trainprof</title>" in page
    assert "X-Frame-Options" not in headers
    policy = headers["Content-Security-Policy"]
    assert f"frame-ancestors {' '.join(NOTEBOOK_ORIGINS)}" in policy


def _execute(client: Any, code: str) -> list[dict[str, Any]]:
    """Run ``code`` in the kernel; its outputs (display data, results), failing on an error."""
    msg_id = client.execute(code)
    outputs: list[dict[str, Any]] = []
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=START_S)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "error":
            pytest.fail("\n".join(content["traceback"]))
        if kind in ("display_data", "execute_result"):
            outputs.append({"msg_type": kind, **content})
        if kind == "status" and content["execution_state"] == "idle":
            return outputs
    pytest.fail(f"the kernel did not finish in {START_S} s")


def _wait_for(url: str, server: subprocess.Popen[str]) -> tuple[int, dict[str, str], str]:
    deadline = time.monotonic() + START_S
    while True:
        try:
            return get(url)
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
