"""A step whose loss or gradient is not finite is skipped on the device (no update, counted), and too
many in a row stop the run with a message naming the step and the last checkpoint."""

import csv
import json
import logging
import re

import pytest
import torch

from bertforge.common.errors import TrainingDiverged
from bertforge.stages import run_stage
from pretrain.config import MaskingConfig, ModelConfig, OptimConfig
from pretrain.model import build_model
from pretrain.module import MaskedLMModule
from pretrain.phases import Phase
from tests.conftest import QUICK
from tests.pretrain.conftest import SPECIAL


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


@pytest.mark.parametrize("optimiser", ["adamw", "lamb"])
def test_a_skipped_step_is_as_if_it_never_happened_and_is_not_logged_as_a_loss(optimiser):
    """Good, NaN, good, good trains the weights and the optimiser's step count (LAMB's bias correction) of good,
    good, good; the interval's train/loss is its good steps' mean (not pulled toward 0), its grad norm the latest
    good step's, and an interval of one skipped step logs no loss (NaN), not 0."""
    def fresh():
        torch.manual_seed(0)
        model = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), 100, 0, 16,
                            SPECIAL)
        module = MaskedLMModule(model, MaskingConfig(), OptimConfig(name=optimiser, lr=1e-2, warmup_steps=0),
                                [Phase(0, 16, 0, 10, 4, 4, 1, 1.0, 0)], SPECIAL, 100, {16: 0.9})
        return model, module, module.configure_optimizers()["optimizer"]

    batches = [torch.randint(5, 100, (4, 16), generator=torch.Generator().manual_seed(k)) for k in range(3)]

    def step(module, optimizer, k: int, poison: bool = False) -> None:
        optimizer.zero_grad()
        torch.manual_seed(k)  # the masks of batch k (the masker draws from torch's global generator)
        ids, real = batches[k], module.loss_fn
        if poison:  # the loss itself is NaN, as a diverging forward gives
            module.loss_fn = lambda *args: (real(*args)[0] * float("nan"), real(*args)[1])
        try:
            module.training_step(ids, 0).backward()
        finally:
            module.loss_fn = real
        module.configure_gradient_clipping(optimizer)
        optimizer.step()

    clean_model, clean, clean_opt = fresh()
    for k in range(3):
        step(clean, clean_opt, k)
    model, module, optimizer = fresh()
    step(module, optimizer, 0)
    step(module, optimizer, 1, poison=True)
    step(module, optimizer, 1)
    step(module, optimizer, 2)
    assert all(torch.equal(a, b) for a, b in zip(clean_model.state_dict().values(), model.state_dict().values()))
    assert [int(s["step"]) for s in optimizer.state.values()] == [int(s["step"]) for s in clean_opt.state.values()]
    logged, expected = module.pop_window(), clean.pop_window()
    assert logged["train/skipped_steps"] == 1
    assert logged["train/loss"] == pytest.approx(expected["train/loss"], rel=1e-6)
    assert logged["train/grad_norm"] == pytest.approx(expected["train/grad_norm"], rel=1e-6)
    step(module, optimizer, 0, poison=True)  # an interval of one skipped step
    alone = module.pop_window()
    assert alone["train/loss"] != alone["train/loss"]  # NaN: no loss to log
    assert alone["train/grad_norm"] == pytest.approx(expected["train/grad_norm"], rel=1e-6)


def poisoned(monkeypatch, bad_calls):
    """Make the training loss NaN on the given calls (one call per step here: no accumulation)."""
    import pretrain.module as module

    real, calls = module.sparse_mlm_loss, []

    def loss(*args):
        calls.append(None)
        value, correct = real(*args)
        return (value * float("nan"), correct) if len(calls) in bad_calls else (value, correct)

    monkeypatch.setattr(module, "sparse_mlm_loss", loss)


def test_a_nan_at_a_known_step_is_skipped_and_training_finishes(make_cfg, monkeypatch, shards_work):
    poisoned(monkeypatch, {3})
    folder = run_stage(make_cfg("pretrain", [*QUICK, "training.max_steps=6", "optim.warmup_steps=2", "logger.log_every_n_steps=1",
                                             "logger.progress_bar=false"], work_dir=shards_work), "pretrain")
    with open(folder / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/skipped_steps")]
    assert [int(float(r["train/skipped_steps"])) for r in rows] == [0, 0, 1, 0, 0, 0]
    # the interval of the skipped step alone has no loss to log (NaN, not 0); every other one is finite
    assert [torch.isfinite(torch.tensor(float(r["train/loss"]))).item() for r in rows] == [True, True, False, True,
                                                                                            True, True]


def test_too_many_bad_steps_in_a_row_stop_the_run_and_say_where(make_cfg, monkeypatch, shards_work):
    poisoned(monkeypatch, set(range(3, 100)))
    cfg = make_cfg("pretrain", [*QUICK, "training.max_steps=20", "logger.log_every_n_steps=1", "optim.max_bad_steps=4",
                                "checkpoint.every_n_steps=2", "logger.progress_bar=false"], work_dir=shards_work)
    with pytest.raises(TrainingDiverged, match=r"4 optimiser steps in a row up to step 6 .* last checkpoint is .*ckpt"):
        run_stage(cfg, "pretrain")


def lr_and_loss(folder):
    with open(folder / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        return {int(r["step"]): (float(r["train/lr"]), float(r["train/loss"]))
                for r in csv.DictReader(handle) if r.get("train/lr")}


ROLLBACK = [*QUICK, "training.max_steps=12", "optim.warmup_steps=2", "logger.log_every_n_steps=1",
            "checkpoint.every_n_steps=2", "checkpoint.keep_last=2", "logger.progress_bar=false",
            "optim.max_bad_steps=3"]


def test_rollback_goes_back_to_the_checkpoint_before_the_bad_steps_at_a_lower_rate(make_cfg, monkeypatch, shards_work):
    """NaN at steps 7-9: the run goes back to step 6's checkpoint and trains steps 7-12 again with the
    learning rate halved; up to step 6 it is the clean run, and the manifest says what happened."""
    clean = lr_and_loss(run_stage(make_cfg("pretrain", ROLLBACK, work_dir=shards_work), "pretrain"))
    poisoned(monkeypatch, {7, 8, 9})
    folder = run_stage(make_cfg("pretrain", [*ROLLBACK, "optim.on_divergence=rollback"], work_dir=shards_work),
                       "pretrain")
    rolled = lr_and_loss(folder)
    assert sorted(rolled) == list(range(1, 13))  # each step once: the diverged rows were set aside
    assert all(rolled[step] == clean[step] for step in range(1, 7))
    assert all(rolled[step][0] == pytest.approx(clean[step][0] / 2, rel=1e-6) for step in range(7, 13))
    assert all(torch.isfinite(torch.tensor(rolled[step][1])) for step in range(7, 13))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["rollbacks"] == [{"at_step": 9, "to_step": 6, "lr_scale": 0.5}]


def test_rollbacks_are_bounded_then_the_run_stops_and_says_so(make_cfg, monkeypatch, shards_work):
    poisoned(monkeypatch, set(range(3, 100)))  # bad from step 3: back to step 2 once, bad again, stop at step 4
    cfg = make_cfg("pretrain", [*ROLLBACK, "optim.on_divergence=rollback", "optim.max_rollbacks=1",
                                "optim.max_bad_steps=2", "checkpoint.every_n_steps=1"], work_dir=shards_work)
    with pytest.raises(TrainingDiverged, match=r"up to step 4 .* after 1 rollbacks \(optim.max_rollbacks=1; the "
                                               r"learning rate was x0.5\)"):
        run_stage(cfg, "pretrain")


def test_a_run_that_dies_after_a_rollback_resumes_from_the_rollback_point(make_cfg, monkeypatch, shards_work,
                                                                        caplog):
    """NaN at steps 7-9, back to step 6, and the process dies at the retrained step 7, before it saves:
    rerunning the command resumes from step 6, not from the abandoned attempt's last.ckpt (step 8, whose
    steps 7-8 were skipped, never trained), which is kept aside."""
    import pretrain.module as module

    real, calls = module.sparse_mlm_loss, []

    def loss(*args):
        calls.append(None)
        if len(calls) == 10:  # the first retrained step
            raise RuntimeError("the process dies")
        value, correct = real(*args)
        return (value * float("nan"), correct) if len(calls) in {7, 8, 9} else (value, correct)

    monkeypatch.setattr(module, "sparse_mlm_loss", loss)
    cfg = make_cfg("pretrain", [*ROLLBACK, "optim.on_divergence=rollback"], work_dir=shards_work)
    with pytest.raises(RuntimeError, match="the process dies"):
        run_stage(cfg, "pretrain")
    monkeypatch.setattr(module, "sparse_mlm_loss", real)
    with caplog.at_level(logging.INFO, logger="bertforge.pretrain"):
        folder = run_stage(cfg, "pretrain")
    assert re.search(r"resuming from \S+/checkpoints/step6\.ckpt at step 6", caplog.text), caplog.text
    assert sorted(lr_and_loss(folder)) == list(range(1, 13))
    aside = sorted(p.name for p in (folder / "checkpoints" / "abandoned-rollback1").iterdir())
    assert aside == ["last.ckpt", "step8.ckpt"]
