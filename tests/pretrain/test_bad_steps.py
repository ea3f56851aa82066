"""A step whose loss or gradient is not finite is skipped on the device (no update, counted), and too
many in a row stop the run with a message naming the step and the last checkpoint."""

import csv

import pytest
import torch

from bertforge.common.errors import TrainingDiverged
from bertforge.stages import run_stage
from pretrain.config import MaskingConfig, ModelConfig, OptimConfig
from pretrain.model import build_model
from pretrain.module import MaskedLMModule
from pretrain.phases import Phase
from tests.conftest import QUICK

SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


@pytest.mark.parametrize("optimiser", ["adamw", "lamb"])
def test_a_nan_step_leaves_weights_and_optimiser_state_alone(optimiser):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), 100, 0, 16,
                        SPECIAL)
    module = MaskedLMModule(model, MaskingConfig(), OptimConfig(name=optimiser, lr=1e-2, warmup_steps=0),
                            [Phase(0, 16, 0, 10, 4, 4, 1, 1.0, 0)], SPECIAL, 100, {16: 0.9})
    optimizer = module.configure_optimizers()["optimizer"]
    ids = torch.randint(5, 100, (4, 16))

    def step(poison: bool) -> None:
        optimizer.zero_grad()
        loss = module.training_step(ids, 0)
        (loss * float("nan") if poison else loss).backward()
        module.configure_gradient_clipping(optimizer)
        optimizer.step()

    step(poison=False)  # moments exist
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in optimizer.state.values()]
    step(poison=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(moments, optimizer.state.values()))
    step(poison=False)  # and training goes on
    assert not torch.equal(before["bert.encoder.layer.0.output.dense.weight"],
                           model.state_dict()["bert.encoder.layer.0.output.dense.weight"])
    window = module.pop_window()
    assert window["train/skipped_steps"] == 1 and window["train/grad_norm"] > 0


def poisoned(monkeypatch, bad_calls):
    """Make the training loss NaN on the given calls (one call per step here: no accumulation)."""
    import pretrain.module as module

    real, calls = module.sparse_mlm_loss, []

    def loss(*args):
        calls.append(None)
        value, correct = real(*args)
        return (value * float("nan"), correct) if len(calls) in bad_calls else (value, correct)

    monkeypatch.setattr(module, "sparse_mlm_loss", loss)


def test_a_nan_at_a_known_step_is_skipped_and_training_finishes(make_cfg, monkeypatch):
    poisoned(monkeypatch, {3})
    folder = run_stage(make_cfg("pretrain", [*QUICK, "training.max_steps=6", "logger.log_every_n_steps=1",
                                             "logger.progress_bar=false"]), "pretrain")
    with open(folder / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/skipped_steps")]
    assert [int(float(r["train/skipped_steps"])) for r in rows] == [0, 0, 1, 0, 0, 0]
    assert all(torch.isfinite(torch.tensor(float(r["train/loss"]))) for r in rows)


def test_too_many_bad_steps_in_a_row_stop_the_run_and_say_where(make_cfg, monkeypatch):
    poisoned(monkeypatch, set(range(3, 100)))
    cfg = make_cfg("pretrain", [*QUICK, "training.max_steps=20", "logger.log_every_n_steps=1", "optim.max_bad_steps=4",
                                "checkpoint.every_n_steps=2", "logger.progress_bar=false"])
    with pytest.raises(TrainingDiverged, match=r"4 optimiser steps in a row up to step 6 .* last checkpoint is .*ckpt"):
        run_stage(cfg, "pretrain")
