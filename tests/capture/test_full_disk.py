"""A disk that fills up mid-run: training finishes every step, the run says ``degraded``.

Two variants: a real one on a 2 MB tmpfs filled to the last byte by the training script (needs
root and a sandbox that allows ``mount``; skipped with the reason otherwise), and a simulated
one that always runs, where every write of the store fails with ENOSPC from step 3 on.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from profiler.events import TrainprofWarning
from profiler.store import step_log, trace_store
from tests.capture.helpers import meta_of, run_child, summary
from tests.conftest import read_steps

STEPS = 40  # enough 200-byte lines to outgrow the step log's last 4 KB page on the full disk
FULL_FROM = 3
NO_SPACE = "No space left on device"


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for the test, or a skip saying why it cannot be."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def check_degraded_run(run_dir: Path) -> list[dict[str, Any]]:
    meta = meta_of(run_dir)
    assert meta["status"] == "degraded" and meta["steps"] == STEPS
    assert NO_SPACE in meta["degraded"]["reason"]
    assert meta["trace_files"] == []
    log = run_dir / "meta" / "steps.0.jsonl"
    assert log.read_bytes().endswith(b"\n")  # whole lines only
    steps = read_steps(log)
    assert [s["step"] for s in steps] == list(range(len(steps)))
    return steps


def test_a_real_full_disk(tiny_tmpfs: Path) -> None:
    config = {"out": str(tiny_tmpfs), "steps": STEPS, "fill_after": FULL_FROM}
    result = run_child({**config, "flush_every_step": True})
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = summary(result.stdout)
    assert outcome["steps"] == STEPS and outcome["error"] is None
    (warning,) = outcome["warnings"]
    assert NO_SPACE in warning and str(tiny_tmpfs / "r") in warning
    steps = check_degraded_run(tiny_tmpfs / "r")
    # The log ran out of room part-way (its last page filled): what it holds is whole.
    assert FULL_FROM <= len(steps) < STEPS


def test_a_simulated_full_disk(train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from profiler.capture import step_metrics

    monkeypatch.setattr(step_metrics, "FLUSH_INTERVAL_NS", 0)
    full = {"now": False}
    write, replace = step_log.os.write, trace_store.atomic_write

    def os_write(fd: int, data: bytes) -> int:
        if full["now"]:
            raise OSError(errno.ENOSPC, NO_SPACE)
        return write(fd, data)

    def atomic_write(path: Path, data: bytes) -> None:
        if full["now"]:
            raise OSError(errno.ENOSPC, NO_SPACE)
        replace(path, data)

    monkeypatch.setattr(step_log.os, "write", os_write)
    monkeypatch.setattr(trace_store, "atomic_write", atomic_write)

    def loader() -> Iterator[Any]:
        import torch

        for step in range(STEPS):
            full["now"] = step >= FULL_FROM
            yield torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))

    with pytest.warns(TrainprofWarning, match=NO_SPACE) as caught:
        prof = train(steps=STEPS, loader=loader(), out_dir=tmp_path, run_name="sim")
    assert len([w for w in caught if w.category is TrainprofWarning]) == 1
    assert prof.step_num == STEPS
    steps = check_degraded_run(tmp_path / "sim")
    assert [s["step"] for s in steps] == [0, 1, 2]  # the disk fills as batch 3 is fetched
