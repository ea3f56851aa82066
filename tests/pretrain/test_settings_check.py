"""The pre-run check of the pretrain settings: a bad model, optimiser, schedule or masking value fails
from the config alone, naming the key, before the corpus, vocab and shards stages run (hours on a real
corpus), and every preset the README shows passes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertforge.common.errors import ConfigError
from bertforge.stages import check_settings
from pretrain.config import LoggerConfig, MaskingConfig, OptimConfig
from pretrain.masking import Masker
from pretrain.settings_check import check_pretrain_settings

REPO = Path(__file__).resolve().parents[2]


def check(cfg) -> None:
    """The pretrain stage's pre-run check with every section it can judge from the config alone."""
    check_pretrain_settings(cfg.trainer, cfg.training, cfg.optim, cfg.checkpoint, cfg.shards.seq_len,
                            model=cfg.model, masking=cfg.masking)


@pytest.mark.parametrize("override, message", [
    ("model.max_position_embeddings=32", "sequence length 64 exceeds model.max_position_embeddings=32"),
    ("model.num_heads=3", "model.hidden_size=128 is not divisible by model.num_heads=3"),
    ("model.arch=bret", r"model.arch='bret' is not one of \['bert', 'roberta', 'modernbert'\]"),
])
def test_a_model_that_cannot_train_fails_before_any_stage(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        check(make_cfg("run", ["experiment=demo_ga", override]))


def test_every_phase_length_must_fit_the_model(make_cfg):
    # two_phase trains its last 10% at 512: a model of 256 positions fails on that phase, not only on shards.seq_len
    cfg = make_cfg("pretrain", ["training=two_phase", "shards.seq_len=128", "model.max_position_embeddings=256"])
    with pytest.raises(ConfigError, match="sequence length 512 exceeds model.max_position_embeddings=256"):
        check(cfg)


def test_a_continued_model_takes_its_size_from_its_checkpoint(make_cfg):
    # model.init_from replaces the architecture keys (the checkpoint's positions are checked when it is loaded)
    check(make_cfg("run", ["experiment=demo_ga", "model.init_from=org/some-bert", "model.num_heads=3"]))


@pytest.mark.parametrize("override, message", [
    ("optim.schedule=cosin", r"optim.schedule='cosin' is not one of \['linear', 'cosine', 'wsd'"),
    ("optim.name=adam", r"optim.name='adam' is not one of \['adamw', 'lamb'\]"),
    ("optim.lr=0", "optim.lr=0.0 must be above 0"),
    ("optim.lr=-1", "optim.lr=-1.0 must be above 0"),
    ("optim.betas=[0.9]", r"optim.betas=\[0.9\] must be two values in \[0, 1\)"),
    ("optim.betas=[0.9,1.0]", r"optim.betas=\[0.9, 1.0\] must be two values"),
    ("optim.eps=0", "optim.eps=0.0 must be above 0"),
    ("optim.warmup_steps=-1", "optim.warmup_steps=-1 must be at least 0"),
    ("optim.warmup_steps=500", "optim.warmup_steps=500 must be at least 0 and below training.max_steps=500"),
    ("training.phases=[{fraction:0.5},{fraction:0.5,lr:-1e-3}]", r"training.phases\[1\].lr=-0.001 is below 0"),
    ("training.phases=[{fraction:0.9},{fraction:0.1,warmup_steps:50}]",
     r"training.phases\[1\].warmup_steps=50 must be at least 0 and below the phase's 50 steps"),
    ("training.embedding_warmup_steps=500",
     "training.embedding_warmup_steps=500 must be at least 0 and below training.max_steps=500"),
    ("trainer.precision=bf17", "trainer.precision='bf17': choose one of 64, 32, 16, bf16, "),
    ("impl.num_workers=-1", r"impl.num_workers=-1: give 0 \(load in the training process\) or more"),
    ("impl.matmul_precision=fastest", "impl.matmul_precision='fastest': choose one of highest, high, medium"),
])
def test_optimiser_and_schedule_errors_fail_in_the_pre_run_check(make_cfg, override, message):
    # check_settings is what every command runs before any stage runs or is reused
    cfg = make_cfg("run", ["experiment=demo_ga", override])
    with pytest.raises(ConfigError, match=message):
        check_settings(cfg, "publish")


@pytest.mark.parametrize("overrides, message", [
    (["masking.ratio=1.5"], "masking.ratio=1.5 must lie strictly between 0 and 1"),
    (["masking.ratio=0"], "masking.ratio=0.0 must lie strictly between 0 and 1"),
    (["masking.ratio=1.0"], "masking.ratio=1.0 must lie strictly between 0 and 1"),
    (["masking.eval_ratio=0"], "masking.eval_ratio=0.0 must lie strictly between 0 and 1"),
    (["masking.replace_with_mask=1.2", "masking.replace_with_random=0"], "masking.replace_with_mask=1.2 must lie in"),
    (["masking.replace_with_random=-0.1"], r"masking.replace_with_random=-0.1 must lie in \[0, 1\]"),
    (["masking.replace_with_mask=0.95", "masking.replace_with_random=0.2"],
     r"masking.replace_with_mask=0.95 \+ masking.replace_with_random=0.2 is above 1"),
    (["masking.span_mean_len=0.5"], "masking.span_mean_len=0.5 must be at least 1"),
    (["masking.max_predictions_per_seq=-1"], "masking.max_predictions_per_seq=-1 must be 0"),
])
def test_masking_errors_fail_before_any_stage(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check(make_cfg("run", ["experiment=demo_ga", *overrides]))


def test_static_masking_ratios_fail_while_the_shards_are_planned(make_cfg):
    """Static masks are drawn by the shards stage: `bertforge shards` checks their ratios before it builds."""
    from bertforge.stages import plan

    with pytest.raises(ConfigError, match="masking.ratio=1.5 must lie strictly between 0 and 1"):
        plan(make_cfg("shards", ["experiment=demo_ga", "masking.static=true", "masking.ratio=1.5"]), "shards")


@pytest.mark.parametrize("override, message", [
    # each once failed only after corpus, vocab and shards were built: torch's dropout error, ZeroDivisionError in
    # throughput/mfu mid-training, RuntimeError from set_num_threads; num_heads=0 a ZeroDivisionError while planning
    ("model.dropout=2", r"model.dropout=2.0: give a probability from 0 up to \(not including\) 1"),
    ("model.dropout=-0.1", "model.dropout=-0.1: give a probability"),
    ("model.attention_dropout=1", "model.attention_dropout=1.0: give a probability .*null: model.dropout"),
    ("model.num_heads=0", "model.num_heads=0: give at least 1"),
    ("model.num_layers=0", "model.num_layers=0: give at least 1"),
    ("model.intermediate_size=-1", "model.intermediate_size=-1: give at least 1"),
    ("trainer.peak_tflops=0", r"trainer.peak_tflops=0.0: give the peak dense TFLOP/s of one device, above 0"),
    ("trainer.peak_tflops=-989", "trainer.peak_tflops=-989.0: give the peak"),
    ("impl.cpu_threads=-2", r"impl.cpu_threads=-2: give 0 \(torch's default, all cores\) or a thread count"),
    # Lightning's seed_everything refused these at the start of training
    ("training.seed=-1", "training.seed=-1: give a whole number from 0 to 4294967295"),
    ("training.seed=4294967296", "training.seed=4294967296: give a whole number"),
    ("model=modernbert_tiny", None),
    ("model=modernbert_tiny model.local_attention_window=0", r"model.local_attention_window=0: give at least 2"),
])
def test_a_size_dropout_or_speed_setting_that_cannot_work_fails_in_the_pre_run_check(make_cfg, override, message):
    cfg = make_cfg("run", ["experiment=demo_ga", *override.split()])
    if message is None:  # the setting's valid neighbour passes
        check_settings(cfg, "pretrain")
        return
    with pytest.raises(ConfigError, match=message):
        check_settings(cfg, "pretrain")


def test_a_bad_dropout_is_refused_for_a_model_from_scratch_only(make_cfg):
    with pytest.raises(ConfigError, match="model.dropout=2.0"):
        check(make_cfg("run", ["experiment=demo_ga", "model.dropout=2"]))
    # model.init_from loads the checkpoint's architecture and dropouts: model.dropout is not used
    check(make_cfg("run", ["experiment=demo_ga", "model.init_from=org/some-bert", "model.dropout=2"]))


@pytest.mark.parametrize("settings, message", [
    ({"val_every_n_steps": -5}, "logger.val_every_n_steps=-5: give 0 \\(no validation during training\\)"),
    ({"val_every_n_steps": 10, "val_batches": -1}, "logger.val_batches=-1 leaves no held-out rows to score"),
])
def test_validation_that_cannot_mean_what_it_says_is_refused(settings, message):
    from pretrain.settings_check import check_logger_config  # not yet wired into a stage's checks

    check_logger_config(LoggerConfig())  # the defaults, and val_batches=0 (every held-out row), pass
    check_logger_config(LoggerConfig(val_every_n_steps=10, val_batches=0))
    with pytest.raises(ConfigError, match=message):
        check_logger_config(LoggerConfig(**settings))


def test_the_later_checks_name_the_key_too():
    # Training builds its masker and optimiser through the same checks (no torch ValueError, no silent 1-per-row)
    with pytest.raises(ConfigError, match="masking.ratio=0 must lie strictly between 0 and 1"):
        Masker.from_config(MaskingConfig(ratio=0), {"pad": 0, "cls": 1, "sep": 2, "mask": 3}, 100, {64: 1.0})
    from torch import nn

    from pretrain.optim import build_optimizer

    with pytest.raises(ConfigError, match="optim.lr=-1 must be above 0"):
        build_optimizer(nn.Linear(2, 2), OptimConfig(lr=-1))


def test_bert_masking_split_may_leave_no_token_unchanged(make_cfg):
    check(make_cfg("run", ["experiment=demo_ga", "masking.replace_with_mask=0.9", "masking.replace_with_random=0.1"]))


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO / "conf" / "optim").glob("*.yaml")))
@pytest.mark.parametrize("training", ["default", "two_phase"])
def test_every_optimiser_preset_passes_with_the_default_steps(make_cfg, preset, training):
    # README: `bertforge pretrain optim=lamb` (and the adamw presets) with the default training.max_steps
    cfg = make_cfg("pretrain", [f"optim={preset}", f"training={training}"])
    check_settings(cfg, "pretrain")
    check(cfg)


def test_lamb_warms_up_for_28_percent_of_the_default_run(make_cfg):
    cfg = make_cfg("pretrain", ["optim=lamb"])
    assert cfg.optim.warmup_steps / cfg.training.max_steps == pytest.approx(2000 / 7038, abs=0.005)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_passes(make_cfg, experiment):
    cfg = make_cfg("run", [f"experiment={experiment}"])
    check_settings(cfg, "publish")
    check(cfg)
