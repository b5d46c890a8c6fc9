"""TrainprofCallback in a real Lightning ``Trainer.fit`` on CPU: the run's files are checked."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import profiler
from profiler.capture.guard import ProfilerStateError
from tests.conftest import read_steps
from tests.integrations.checks import (
    check_complete_run,
    check_failed_run,
    forward_modules,
    ranges,
    run_meta,
    use_jumping_clock,
    within,
)

pl = pytest.importorskip("lightning.pytorch")
from profiler.integrations.lightning import TrainprofCallback  # noqa: E402

pytestmark = pytest.mark.slow

MODULES = {"model": "TinyModule", "net": "Sequential", "net.0": "Linear", "net.1": "ReLU"}
MODULES["net.2"] = "Linear"


class TinyModule(pl.LightningModule):
    """Two Linear layers; raises RuntimeError("boom") in the batch ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        self.fail_at = fail_at
        self.on_validation_batch: Any = lambda: None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if batch_idx == self.fail_at:
            raise RuntimeError("boom")
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.on_validation_batch()  # a test's hook

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(
    tmp_path: Path, callback: TrainprofCallback, model: TinyModule, *, val: int = 0, **trainer: Any
) -> None:
    """Fit ``model`` on random data (with ``val`` validation batches)."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,)))
    val_loader = DataLoader(TensorDataset(torch.randn(4 * val, 8)), batch_size=4) if val else None
    trainer.setdefault("max_steps", 8)
    fitter = pl.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        **trainer,
    )
    with warnings.catch_warnings():
        # Lightning's advice for real runs, and its own use of a deprecated torch API.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*validation_step` but have no `val_dataloader")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        fitter.fit(model, DataLoader(data, batch_size=4), val_loader)


def callback(tmp_path: Path, **kwargs: Any) -> TrainprofCallback:
    kwargs.setdefault("schedule", profiler.schedule(wait=1, warmup=1, active=2))
    return TrainprofCallback(out_dir=tmp_path / "traces", system_metrics=False, **kwargs)


def test_fit_records_every_step_a_window_and_module_ranges(tmp_path: Path) -> None:
    cb = callback(tmp_path, run_name="fit", metadata={"lr": 0.1})
    fit(tmp_path, cb, TinyModule())
    run_dir = tmp_path / "traces" / "fit"
    assert cb.profile is not None and cb.profile.run_dir == run_dir
    trace = check_complete_run(run_dir, steps=8, deep=[2, 3])
    assert forward_modules(trace) == MODULES
    assert trace["trainprof"]["config"]["metadata"] == {"lr": 0.1}
    assert trace["trainprof"]["config"]["models"] == ["TinyModule"]


def test_steps_are_optimizer_steps_with_gradient_accumulation(tmp_path: Path) -> None:
    cb = callback(tmp_path, run_name="accumulate")
    fit(tmp_path, cb, TinyModule(), max_steps=4, accumulate_grad_batches=2)
    trace = check_complete_run(tmp_path / "traces" / "accumulate", steps=4, deep=[2, 3])
    roots = [e for e in ranges(trace, "nn.Module: model ") if e["name"].endswith("(TinyModule)")]
    for step in ranges(trace, "ProfilerStep#"):  # two micro-batches in each step
        assert len(within(roots, step)) == 2, step["name"]


def test_validation_inside_an_epoch_is_no_data_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = use_jumping_clock(monkeypatch)
    model = TinyModule()
    model.on_validation_batch = clock.jump
    cb = callback(tmp_path, run_name="val", schedule=None)
    fit(tmp_path, cb, model, val=2, val_check_interval=3, num_sanity_val_steps=0)
    assert clock.jumps == 2 * 2  # validation ran after steps 2 and 5
    records = read_steps(tmp_path / "traces" / "val" / "meta" / "steps.0.jsonl")
    assert len(records) == 8
    assert all(r["data_wait_us"] * 1000 < clock.JUMP_NS for r in records)


def test_an_exception_in_fit_marks_the_run_failed_and_keeps_the_window(tmp_path: Path) -> None:
    cb = callback(tmp_path, run_name="crash")
    with pytest.raises(RuntimeError, match="^boom$"):
        fit(tmp_path, cb, TinyModule(fail_at=3))
    check_failed_run(tmp_path / "traces" / "crash", failed_at=3, deep=[2, 3])
    assert not cb.session.live


def test_a_second_fit_writes_a_new_run(tmp_path: Path) -> None:
    cb = callback(tmp_path, run_name="again", schedule=None)
    model = TinyModule()
    fit(tmp_path, cb, model, max_steps=2)
    fit(tmp_path, cb, model, max_steps=4)  # a new fit loop: four steps
    assert [p.run_name for p in cb.session.runs] == ["again", "again-2"]
    metas = [run_meta(tmp_path / "traces" / name) for name in ("again", "again-2")]
    assert [(m["status"], m["steps"]) for m in metas] == [("complete", 2), ("complete", 4)]


def test_lightnings_pytorch_profiler_is_refused(tmp_path: Path) -> None:
    """torch cannot run two Kineto sessions: the clash is told before anything is written."""
    cb = callback(tmp_path, run_name="both")
    trainer = pl.Trainer(profiler="pytorch", logger=False, default_root_dir=tmp_path)
    with pytest.raises(ProfilerStateError, match="drop one of them"):
        cb.on_train_start(trainer, TinyModule())
    assert not (tmp_path / "traces" / "both").exists()
