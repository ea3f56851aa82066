"""Optimisers, schedules and phases: decay groups, LAMB's update rule, every schedule's shape, batch
maths and the start-up errors for batches that cannot be split."""

import math

import pytest
import torch

from bertforge.common.errors import ConfigError
from pretrain.config import ModelConfig, OptimConfig, PhaseConfig, TrainingConfig
from pretrain.model import build_model
from pretrain.optim import Lamb, build_optimizer, parameter_groups
from pretrain.phases import plan_phases
from pretrain.schedules import lr_lambda


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_no_weight_decay_on_biases_and_norms(arch):
    model = build_model(ModelConfig(arch=arch), vocab_size=100, pad_token_id=0, seq_len=64,
                        special_ids={"pad": 0, "cls": 2, "sep": 3})
    decay, no_decay = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all("bias" in names[id(p)] or "norm" in names[id(p)].lower() for p in no_decay["params"])
    assert all(p.ndim == 2 for p in decay["params"]) and decay["params"]
    assert any("norm" in names[id(p)].lower() for p in no_decay["params"])
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())  # tied weights counted once, none lost


def test_adamw_is_fused_and_lamb_is_available():
    model = torch.nn.Linear(8, 8)
    adamw = build_optimizer(model, OptimConfig(name="adamw"))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["fused"]
    assert isinstance(build_optimizer(model, OptimConfig(name="lamb")), Lamb)
    with pytest.raises(ConfigError, match="optim.name='sgd'"):
        build_optimizer(model, OptimConfig(name="sgd"))


def test_lamb_step_follows_the_algorithm():
    torch.manual_seed(0)
    w0 = torch.randn(4, 3)
    grads = [torch.randn(4, 3) for _ in range(3)]
    param = torch.nn.Parameter(w0.clone())
    opt = Lamb([{"params": [param], "weight_decay": 0.1}], lr=0.01, betas=(0.9, 0.99), eps=1e-6)
    w, m, v = w0.clone(), torch.zeros(4, 3), torch.zeros(4, 3)
    for t, g in enumerate(grads, start=1):
        param.grad = g.clone()
        opt.step()
        m, v = 0.9 * m + 0.1 * g, 0.99 * v + 0.01 * g * g
        update = (m / (1 - 0.9 ** t)) / ((v / (1 - 0.99 ** t)).sqrt() + 1e-6) + 0.1 * w
        w = w - 0.01 * (w.norm() / update.norm()) * update
    assert torch.allclose(param.detach(), w, atol=1e-6)


def test_lamb_trains_a_regression():
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    y = x @ torch.randn(16, 1)
    model = torch.nn.Linear(16, 1)
    opt = Lamb(model.parameters(), lr=0.05)
    first = None
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * first


def test_schedules_have_their_shapes():
    linear = lr_lambda("linear", warmup_steps=10, max_steps=110)
    assert linear(0) == pytest.approx(0.1) and linear(9) == pytest.approx(1.0)
    assert linear(60) == pytest.approx(0.5) and linear(110) == 0.0
    cosine = lr_lambda("cosine", 10, 110, min_ratio=0.1)
    assert cosine(10) == pytest.approx(1.0) and cosine(60) == pytest.approx(0.55) and cosine(110) == pytest.approx(0.1)
    wsd = lr_lambda("wsd", 10, 110, decay_fraction=0.2)  # decays over the last 22 steps
    assert wsd(50) == 1.0 and wsd(87) == 1.0 and wsd(99) == pytest.approx(0.5) and wsd(110) == 0.0
    inv = lr_lambda("inverse_sqrt", 100, 10_000)
    assert inv(99) == 1.0 and inv(399) == pytest.approx(0.5) and inv(9999) == pytest.approx(0.1)
    steps = [lr_lambda(s, 10, 110)(t) for s in ("linear", "cosine", "wsd") for t in range(10, 110)]
    assert all(0 <= value <= 1 for value in steps)
    with pytest.raises(ConfigError, match="optim.schedule='step'"):
        lr_lambda("step", 10, 100)


def test_bert_phases_split_steps_batches_and_learning_rates():
    training = TrainingConfig(max_steps=1000, batch_size=256, phases=[
        PhaseConfig(seq_len=128, fraction=0.9), PhaseConfig(seq_len=512, fraction=0.1, tokens_per_batch=32768,
                                                            lr=5e-4, warmup_steps=10)])
    first, second = plan_phases(training, 32, OptimConfig(lr=1e-3), default_seq_len=64, world_size=2)
    assert (first.start_step, first.end_step, first.batch_size, first.accumulation) == (0, 900, 256, 4)
    assert (second.start_step, second.end_step, second.batch_size, second.accumulation) == (900, 1000, 64, 1)
    assert second.tokens_per_step == 32768 and second.lr_scale == 0.5
    assert second.rewarm(900) == pytest.approx(0.1) and second.rewarm(950) == 1.0


def test_batch_in_tokens():
    [phase] = plan_phases(TrainingConfig(tokens_per_batch=8192), 0, OptimConfig(), default_seq_len=128)
    assert phase.batch_size == 64 and phase.accumulation == 1
    with pytest.raises(ConfigError, match="training.tokens_per_batch=8000 is not a multiple"):
        plan_phases(TrainingConfig(tokens_per_batch=8000), 0, OptimConfig(), default_seq_len=128)


def test_batch_that_does_not_divide_across_devices_is_refused():
    with pytest.raises(ConfigError, match="not divisible by world size 3"):
        plan_phases(TrainingConfig(batch_size=32), 0, OptimConfig(), default_seq_len=128, world_size=3)
    with pytest.raises(ConfigError, match="trainer.micro_batch_size=12"):
        plan_phases(TrainingConfig(batch_size=32), 12, OptimConfig(), default_seq_len=128)
    with pytest.raises(ConfigError, match="add up to 1"):
        plan_phases(TrainingConfig(phases=[PhaseConfig(fraction=0.5)]), 0, OptimConfig(), default_seq_len=128)


def test_phase_learning_rate_follows_the_run_schedule():
    training = TrainingConfig(max_steps=100, phases=[PhaseConfig(seq_len=64, fraction=0.5),
                                                     PhaseConfig(seq_len=128, fraction=0.5, lr=2e-3, warmup_steps=5)])
    plan = plan_phases(training, 0, OptimConfig(lr=1e-3), default_seq_len=64)
    base = lr_lambda("linear", 0, 100)
    assert math.isclose(plan[1].lr_scale * plan[1].rewarm(52) * base(52), 2.0 * 0.6 * 0.48)
