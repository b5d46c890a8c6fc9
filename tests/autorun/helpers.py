"""Running ``trainprof run`` as a user would, on the scripts in ``scripts/`` (no trainprof in
them), and reading what it left."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from profiler.events import TRACE_SUFFIX
from tests.conftest import read_steps, read_trace

SCRIPTS = Path(__file__).resolve().parent / "scripts"
ROOT = Path(__file__).resolve().parents[2]
# Generous: each run imports torch (seconds on a loaded 2-core machine), several at once.
RUN_TIMEOUT_S = 300


def trainprof_run(options: list[str], command: list[str], out: Path) -> list[str]:
    """The ``trainprof run`` command line (``python`` in ``command`` is this interpreter)."""
    command = [sys.executable if word == "python" else word for word in command]
    cli = [sys.executable, "-m", "profiler.cli", "run", "--out", str(out)]
    return [*cli, *options, "--", *command]


def start(options: list[str], command: list[str], out: Path) -> subprocess.Popen[str]:
    """Start ``trainprof run`` in ``scripts/`` (its output captured)."""
    return subprocess.Popen(
        trainprof_run(options, command, out),
        cwd=SCRIPTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass(frozen=True)
class Ran:
    """One ``trainprof run`` that ended: its exit status, output and run directory."""

    returncode: int
    stdout: str
    stderr: str
    run_dir: Path

    @property
    def meta(self) -> dict[str, Any]:
        return orjson.loads((self.run_dir / "meta" / "run.json").read_bytes())

    def steps(self, rank: int = 0) -> list[dict[str, Any]]:
        return read_steps(self.run_dir / "meta" / f"steps.{rank}.jsonl")

    @property
    def trace_files(self) -> list[Path]:
        return sorted(self.run_dir.glob(f"*{TRACE_SUFFIX}"))

    def event_names(self, path: Path) -> set[str]:
        return {event.get("name", "") for event in read_trace(path)["traceEvents"]}

    def own_lines(self) -> list[str]:
        """trainprof's own lines on stderr."""
        return [line for line in self.stderr.splitlines() if line.startswith("trainprof:")]


def finish(child: subprocess.Popen[str], run_dir: Path) -> Ran:
    """Wait for a started ``trainprof run``."""
    try:
        stdout, stderr = child.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        stdout, stderr = child.communicate()
        raise AssertionError(f"trainprof run timed out\n{stderr[-3000:]}") from None
    return Ran(child.returncode, stdout, stderr, run_dir)
