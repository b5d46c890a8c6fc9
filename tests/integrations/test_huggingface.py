"""TrainprofCallback in a real Hugging Face ``Trainer.train`` on CPU: the run's files are checked.

The model is built from a tiny config (no download).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import profiler
from profiler.events import TrainprofWarning
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

transformers = pytest.importorskip("transformers")
from profiler.integrations.huggingface import TrainprofCallback  # noqa: E402

pytestmark = pytest.mark.slow

CONFIG = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "vocab_size": 100,
    "max_position_embeddings": 32,
}
# A few of the model's submodules, by qualified name, and their classes.
SOME_MODULES = {
    "model": "Exploding",
    "bert": "BertModel",
    "bert.embeddings.word_embeddings": "Embedding",
    "bert.encoder.layer.0.attention.self.query": "Linear",
    "classifier": "Linear",
}


class Exploding(transformers.BertForSequenceClassification):
    """Raises RuntimeError("boom") in its forward number ``fail_at`` (0-based)."""

    fail_at = -1
    on_eval_batch: Any = staticmethod(lambda: None)  # a test's hook

    def forward(self, input_ids: Any = None, labels: Any = None, **kwargs: Any) -> Any:
        if not self.training:
            self.on_eval_batch()
            return super().forward(input_ids=input_ids, labels=labels, **kwargs)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls - 1 == self.fail_at:
            raise RuntimeError("boom")
        return super().forward(input_ids=input_ids, labels=labels, **kwargs)


def dataset(size: int = 64) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return [
        {"input_ids": torch.randint(1, 100, (16,)), "labels": torch.tensor(i % 2)}
        for i in range(size)
    ]


def train(
    tmp_path: Path,
    callback: TrainprofCallback,
    fail_at: int = -1,
    on_eval_batch: Any = None,
    **args: Any,
) -> Any:
    """Train on random tokens; ``args`` go to ``TrainingArguments``."""
    torch.manual_seed(0)
    model = Exploding(transformers.BertConfig(**CONFIG))
    model.fail_at = fail_at
    if on_eval_batch is not None:
        model.on_eval_batch = on_eval_batch
    args.setdefault("max_steps", 8)
    trainer = transformers.Trainer(
        model=model,
        args=transformers.TrainingArguments(
            output_dir=str(tmp_path / "hf"),
            per_device_train_batch_size=4,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            dataloader_num_workers=0,
            **args,
        ),
        train_dataset=dataset(),
        eval_dataset=dataset(8),
        callbacks=[callback],
    )
    trainer.train()
    return trainer


def callback(tmp_path: Path, **kwargs: Any) -> TrainprofCallback:
    kwargs.setdefault("schedule", profiler.schedule(wait=1, warmup=1, active=2))
    return TrainprofCallback(out_dir=tmp_path / "traces", system_metrics=False, **kwargs)


def test_train_records_every_step_a_window_and_module_ranges(tmp_path: Path) -> None:
    cb = callback(tmp_path, run_name="hf")
    trainer = train(tmp_path, cb)
    run_dir = tmp_path / "traces" / "hf"
    assert cb.profile is not None and cb.profile.run_dir == run_dir
    trace = check_complete_run(run_dir, steps=8, deep=[2, 3])
    modules = forward_modules(trace)
    assert {path: modules.get(path) for path in SOME_MODULES} == SOME_MODULES
    assert trace["trainprof"]["config"]["models"] == ["Exploding"]
    assert not set(trainer.__dict__) & {"_run_epoch", "training_step"}  # the watch is gone


def test_steps_are_optimizer_steps_with_gradient_accumulation(tmp_path: Path) -> None:
    cb = callback(tmp_path, run_name="accumulate")
    train(tmp_path, cb, max_steps=4, gradient_accumulation_steps=2)
    trace = check_complete_run(tmp_path / "traces" / "accumulate", steps=4, deep=[2, 3])
    roots = [e for e in ranges(trace, "nn.Module: model ") if not e["name"].endswith(".backward")]
    for step in ranges(trace, "ProfilerStep#"):  # two micro-batches in each step
        assert len(within(roots, step)) == 2, step["name"]


def test_evaluation_between_steps_is_no_data_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = use_jumping_clock(monkeypatch)
    cb = callback(tmp_path, run_name="eval", schedule=None)
    # transformers < 4.41 spells it evaluation_strategy (the extra allows 4.40).
    fields = transformers.TrainingArguments.__dataclass_fields__
    strategy = "eval_strategy" if "eval_strategy" in fields else "evaluation_strategy"
    train(tmp_path, cb, on_eval_batch=clock.jump, **{strategy: "steps"}, eval_steps=3)
    assert clock.jumps >= 2  # evaluation ran during training, at least after steps 3 and 6
    records = read_steps(tmp_path / "traces" / "eval" / "meta" / "steps.0.jsonl")
    assert len(records) == 8
    assert all(r["data_wait_us"] * 1000 < clock.JUMP_NS for r in records)


def test_an_exception_in_training_marks_the_run_failed_and_keeps_the_window(
    tmp_path: Path,
) -> None:
    cb = callback(tmp_path, run_name="crash")
    with pytest.raises(RuntimeError, match="^boom$"):
        train(tmp_path, cb, fail_at=3)
    check_failed_run(tmp_path / "traces" / "crash", failed_at=3, deep=[2, 3])
    assert not cb.session.live


def test_without_run_epoch_each_training_step_is_watched() -> None:
    """Releases before transformers 5 run the epoch inline: training_step is watched there."""
    from profiler.integrations.huggingface import _watch

    class OldTrainer:
        def training_step(self, fail: bool) -> str:
            if fail:
                raise RuntimeError("boom")
            return "ok"

    trainer, failures = OldTrainer(), []
    unwatch = _watch(trainer, failures.append)
    assert "training_step" in trainer.__dict__ and trainer.training_step(False) == "ok"
    with pytest.raises(RuntimeError, match="^boom$"):
        trainer.training_step(True)
    assert [str(e) for e in failures] == ["boom"]
    unwatch()
    assert "training_step" not in trainer.__dict__


def test_outside_a_trainer_it_warns_and_a_run_left_open_is_closed_as_failed(
    tmp_path: Path,
) -> None:
    """Hooks called with no Trainer on the stack: no watch (told once), and a run whose
    training never reached on_train_end is marked failed when the next one begins."""
    cb = callback(tmp_path, run_name="bare", schedule=None)
    model = torch.nn.Linear(2, 2)
    with pytest.warns(TrainprofWarning, match="could not find the Trainer"):
        cb.on_train_begin(None, None, None, model=model)
    cb.on_step_begin(None, None, None)
    cb.on_step_end(None, None, None)
    with pytest.warns(TrainprofWarning):
        cb.on_train_begin(None, None, None, model=model)  # the first run never ended
    cb.on_train_end(None, None, None)
    first, second = (run_meta(tmp_path / "traces" / name) for name in ("bare", "bare-2"))
    assert first["status"] == "failed" and first["steps"] == 1
    assert first["error"]["message"] == "training ended without on_train_end"
    assert second["status"] == "complete" and not cb.session.live
