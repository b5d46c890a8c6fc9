"""A real TensorBoard server over an exported logdir, asked over HTTP as its web pages ask it."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from profiler.analysis.modules import module_table
from profiler.analysis.summary import trace_summary
from profiler.analysis.table import load_trace
from profiler.events import TRACE_SUFFIX
from profiler.export.tensorboard import export_tensorboard
from tests.conftest import read_steps
from tests.export import SAMPLE_RUN

PLUGIN = "/data/plugin/pytorch_profiler"
STARTUP_S = 90  # the profiler plugin loads runs in background processes
#: The plugin's Overview categories -> ours (profiler.analysis.steps.CATEGORIES).
PLUGIN_CATEGORIES = {
    "Kernel": "kernel",
    "Memcpy": "memcpy",
    "Memset": "memset",
    "Communication": "communication",
    "Runtime": "runtime",
    "DataLoader": "dataloader",
    "CPU Exec": "cpu_exec",
    "Other": "other",
}

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A ``tensorboard`` subprocess on localhost."""

    def __init__(self, logdir: Path, log: Path) -> None:
        self.port = _free_port()
        self._log = log.open("wb")
        code = "import sys; from tensorboard.main import run_main; sys.exit(run_main())"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def get(self, path: str, **query: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
            if response.headers.get("Content-Encoding") == "gzip":  # the plugin's larger views
                body = gzip.decompress(body)
            return json.loads(body)

    def wait_for_run(self, run: str) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "tensorboard exited"
            try:
                if run in self.get(f"{PLUGIN}/runs")["runs"]:
                    return
            except OSError:  # not listening yet
                pass
            time.sleep(0.5)
        raise AssertionError(f"the profiler plugin did not list {run!r} in {STARTUP_S} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module's tests (it takes a few seconds to start)."""
    root = tmp_path_factory.mktemp("tensorboard")
    export_tensorboard(SAMPLE_RUN, root / "tb")
    running = Server(root / "tb", root / "tensorboard.log")
    try:
        running.wait_for_run("sample")
        yield running
    finally:
        running.stop()


def test_profiler_plugin_shows_the_run_and_its_step_breakdown(server: Server) -> None:
    views = server.get(f"{PLUGIN}/views", run="sample")
    assert "Overview" in views
    workers = server.get(f"{PLUGIN}/workers", run="sample", view="Overview")
    assert workers == ["vm_12830"]
    spans = server.get(f"{PLUGIN}/spans", run="sample", worker="vm_12830")
    assert spans == ["1", "2"]
    traces = sorted(SAMPLE_RUN.glob(f"*{TRACE_SUFFIX}"))  # span n is the n-th window
    tag = "trainprof/window/breakdown_pct/dataloader"
    scalars = server.get("/data/plugin/scalars/scalars", run="sample", tag=tag)
    assert [step for _, step, _ in scalars] == [8, 17]  # each window's last step
    for span, trace, scalar in zip(spans, traces, scalars, strict=True):
        overview = server.get(f"{PLUGIN}/overview", run="sample", worker="vm_12830", span=span)
        ours = trace_summary(load_trace(trace))
        rows = overview["steps"]["rows"]
        assert len(rows) == ours["steps"]["count"] == 3
        average = overview["performance"][0]
        assert average["value"] == pytest.approx(ours["steps"]["mean_us"], abs=1)
        shown = {PLUGIN_CATEGORIES[c["name"]]: float(c["extra"]) for c in average["children"]}
        assert set(shown) == {"dataloader", "cpu_exec", "other"}  # a CPU trace
        for category, pct in shown.items():
            # Our data-wait ranges are cpu_op, which the plugin reads: the same numbers.
            assert pct == pytest.approx(ours["step_breakdown_pct"][category], abs=0.02)
        assert scalar[2] == pytest.approx(shown["dataloader"], abs=0.02)  # the Scalars tab


def test_scalars_and_text_tabs_serve_the_export(server: Server) -> None:
    tag = "trainprof/step/data_wait_ms"
    points = server.get("/data/plugin/scalars/scalars", run="sample", tag=tag)
    records = read_steps(SAMPLE_RUN / "meta" / "steps.0.jsonl")
    assert [step for _, step, _ in points] == [r["step"] for r in records]
    for (_, _, value), record in zip(points, records, strict=True):
        assert value == pytest.approx(record["data_wait_us"] / 1000, rel=1e-6)
    texts = server.get("/data/plugin/text/text", run="sample", tag="trainprof/recommendations")
    assert "dataloader_bound" in texts[0]["text"]


def test_module_view_lists_our_modules(server: Server) -> None:
    traces = sorted(SAMPLE_RUN.glob(f"*{TRACE_SUFFIX}"))  # span n is the n-th window
    assert "Module" in server.get(f"{PLUGIN}/views", run="sample")
    for span, trace in zip(("1", "2"), traces, strict=True):
        view = server.get(f"{PLUGIN}/module", run="sample", worker="vm_12830", span=span)
        shown = {row["name"]: row for row in _rows(view["data"])}
        ours = module_table(load_trace(trace)).set_index("path")
        assert sorted(shown) == sorted(
            f"{path} ({row.class_name})" for path, row in ours.iterrows()
        )
        for path, row in ours.iterrows():
            plugin = shown[f"{path} ({row.class_name})"]
            assert plugin["occurences"] == row.calls == 3
            # One microsecond is far above the error of adding ends and starts at the trace's
            # magnitude (an ulp, ~0.001 us, per call), and far below a module's time.
            assert plugin["host_duration"] == pytest.approx(row.forward_us, abs=1.0)
        (root,) = view["data"]
        assert root["name"] == "model (SmallCNN)"
        children = [child["name"] for child in root["children"]]
        assert children == ["features (Sequential)", "classifier (Sequential)"]  # as they ran


def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [found for row in rows for found in (row, *_rows(row["children"]))]
