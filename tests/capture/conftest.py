"""Every trace a capture test writes is checked for ranges Perfetto would drop (see nesting.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler.events import TRACE_SUFFIX
from tests.capture.nesting import format_violations, nesting_violations
from tests.conftest import read_trace

# Overlaps between torch's own events (python_function frames crossing its ranges): reported at
# the end of the run, not ours to fix.
_TORCH_OVERLAPS: dict[str, int] = {}


def _traces(root: Path) -> set[Path]:
    return set(root.rglob(f"*{TRACE_SUFFIX}")) if root.exists() else set()


@pytest.fixture(autouse=True, scope="module")
def traces_nest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After each module, every trace file its tests wrote under pytest's temporary directory
    (``tmp_path`` and module fixtures alike): no complete event of ours may overlap another on
    its thread without nesting."""
    root = tmp_path_factory.getbasetemp()
    before = _traces(root)
    yield
    problems = []
    for path in sorted(_traces(root) - before):
        violations = nesting_violations(read_trace(path))
        ours = [v for v in violations if v.ours]
        if ours:
            problems.append(f"{path}: {len(ours)} pairs\n{format_violations(ours)}")
        if len(violations) > len(ours):
            _TORCH_OVERLAPS[path.name] = len(violations) - len(ours)
    assert not problems, "ranges that do not nest:\n" + "\n".join(problems)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TORCH_OVERLAPS:
        terminalreporter.write_line(
            f"nesting: {sum(_TORCH_OVERLAPS.values())} overlaps between torch's own events in "
            f"{len(_TORCH_OVERLAPS)} traces (not trainprof's; reported, not failed)"
        )
