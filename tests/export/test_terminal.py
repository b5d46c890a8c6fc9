"""The terminal report of a diff: how a change is written where there is no base to divide by."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from profiler.export.terminal import render_diff


def _row(name: str, base: float, new: float) -> dict[str, Any]:
    delta = new - base
    return {
        "category": name,
        "name": name,
        "base": base,
        "new": new,
        "delta": delta,
        "delta_pct": round(100 * delta / base, 2) if base else None,
    }


def _text(diff: dict[str, Any]) -> str:
    console = Console(width=200, record=True)
    for renderable in render_diff(diff):
        console.print(renderable)
    return console.export_text()


def test_zero_to_zero_is_no_change_and_zero_to_some_is_new() -> None:
    diff = {
        "step_us": _row("step", 100.0, 110.0),
        "categories": [_row("memcpy", 0.0, 0.0), _row("kernel", 0.0, 25.0), _row("cpu", 50, 40)],
        "ops": [],
        "kernels": [],
    }
    lines = {line.split()[0]: line.split() for line in _text(diff).splitlines() if line.strip()}
    assert lines["memcpy"][-1] == "-"
    assert lines["kernel"][-1] == "new"
    assert lines["cpu"][-1] == "-20.0%"
    assert "(+10.0%)" in lines["step"]
