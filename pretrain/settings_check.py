"""The pretrain stage's settings checked from the config alone, before any stage runs or is reused.

Trainer and checkpoint name no folder (they are left out of the stage hash), so a finished pretrain folder
is reused whatever they say: checked here, `trainer.devices=64` or `trainer.cluster=slurm` outside SLURM
fails the same in a fresh work folder and in one where the run is finished. The model, masking, optimiser
and schedule settings are checked here too, so a typo fails at once, not after the corpus, vocab and shards
stages have run. Each check is the one training runs itself (model, masking, optim, schedules), asked
early; what needs the vocabulary or the shards is checked when they exist. None of them touches a device
or a file, so a reused command stays quick.
"""

from __future__ import annotations

from bertforge.common.errors import ConfigError
from pretrain.config import (
    CheckpointConfig,
    LoggerConfig,
    MaskingConfig,
    ModelConfig,
    OptimConfig,
    TrainerConfig,
    TrainingConfig,
)
from pretrain.distributed import plan_launch
from pretrain.masking import check_masking_config
from pretrain.model import check_model_config
from pretrain.optim import check_optim_config
from pretrain.phases import plan_phases
from pretrain.schedules import lr_lambda


# Lightning's accepted `precision` strings (lightning.fabric.connector._PRECISION_INPUT), spelt here so this
# module imports no heavy library: an unknown one failed only after corpus, vocab and shards had been built.
PRECISIONS = ("64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed",
              "transformer-engine", "transformer-engine-float16")
MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's


def check_impl_config(impl) -> None:
    """ConfigError naming the key for an `impl` value torch would refuse late (num_workers, cpu_threads) or
    read as another one (an unknown matmul precision)."""
    if impl.num_workers < 0:
        raise ConfigError(f"impl.num_workers={impl.num_workers}: give 0 (load in the training process) or more")
    if impl.matmul_precision not in MATMUL_PRECISIONS:
        raise ConfigError(f"impl.matmul_precision={impl.matmul_precision!r}: choose one of "
                          f"{', '.join(MATMUL_PRECISIONS)}")
    if impl.cpu_threads < 0:  # torch.set_num_threads refuses it only once training starts
        raise ConfigError(f"impl.cpu_threads={impl.cpu_threads}: give 0 (torch's default, all cores) or a thread "
                          "count (1 on a busy, shared CPU)")


def check_model_numbers(model: ModelConfig) -> None:
    """ConfigError naming the key for a from-scratch size that builds no model (a count below 1; a zero
    num_heads would end the divisibility check in a ZeroDivisionError) or a dropout that is not a
    probability below 1 (torch refuses it only after corpus, vocab and shards are built; 1 drops every
    activation, so nothing is learnt)."""
    for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
        if getattr(model, key) < 1:
            raise ConfigError(f"model.{key}={getattr(model, key)}: give at least 1")
    if model.arch == "modernbert" and model.local_attention_window < 2:  # half of it on each side of a token
        raise ConfigError(f"model.local_attention_window={model.local_attention_window}: give at least 2 tokens "
                          "(ModernBERT: 128)")
    for key, value in (("dropout", model.dropout), ("attention_dropout", model.attention_dropout)):
        if value is not None and not 0 <= value < 1:  # also refuses NaN
            raise ConfigError(f"model.{key}={value}: give a probability from 0 up to (not including) 1 "
                              "(BERT: 0.1)" + ("; null: model.dropout" if key == "attention_dropout" else ""))


def check_logger_config(logger: LoggerConfig) -> None:
    """ConfigError naming the key for a held-out validation setting that cannot mean what it says: a negative
    interval (the modulo would read it as its absolute value) or a negative batch count (no rows are
    scored, so no val/* row is ever logged)."""
    if logger.val_every_n_steps < 0:
        raise ConfigError(f"logger.val_every_n_steps={logger.val_every_n_steps}: give 0 (no validation during "
                          "training) or a step count")
    if logger.val_batches < 0:
        raise ConfigError(f"logger.val_batches={logger.val_batches} leaves no held-out rows to score: give a batch "
                          "count (e.g. 4)")


def check_pretrain_settings(trainer: TrainerConfig, training: TrainingConfig, optim: OptimConfig,
                            checkpoint: CheckpointConfig, seq_len: int, model: ModelConfig,
                            masking: MaskingConfig) -> None:
    """ConfigError naming the key when the run could not start here: devices, strategy and cluster
    against this machine and its environment, the optimiser (name, lr, betas, eps) and its schedule
    (name, warmup against training.max_steps), the global batch against the world size and the
    micro-batch (`seq_len`: the shards' main row length), each phase's lr and re-warm-up, the checkpoint
    settings and the divergence rule, a from-scratch architecture (sizes, dropouts, every phase's length),
    the masking ratios and trainer.peak_tflops."""
    if str(trainer.precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision={trainer.precision!r}: choose one of {', '.join(PRECISIONS)} "
                          "(32 on CPU, bf16-mixed on GPUs that support it)")
    if not trainer.peak_tflops > 0:  # throughput/mfu divides by it, mid-training
        raise ConfigError(f"trainer.peak_tflops={trainer.peak_tflops}: give the peak dense TFLOP/s of one device, "
                          "above 0 (989: H100 SXM bf16)")
    if not 0 <= training.seed < 2**32:  # Lightning's seed_everything and numpy's generators refuse it mid-run
        raise ConfigError(f"training.seed={training.seed}: give a whole number from 0 to {2**32 - 1}")
    launch = plan_launch(trainer)
    check_optim_config(optim)  # before the phases: they divide by optim.lr
    lr_lambda(optim.schedule, optim.warmup_steps, training.max_steps, optim.min_lr_ratio, optim.decay_fraction)
    phases = plan_phases(training, trainer.micro_batch_size, optim, seq_len, launch.world_size)
    if not model.init_from:  # a continued model's size is its checkpoint's
        check_model_numbers(model)  # before check_model_config divides by model.num_heads
        for phase in phases:
            check_model_config(model, phase.seq_len)
    check_masking_config(masking)
    if checkpoint.every_n_steps < 1:
        raise ConfigError(f"checkpoint.every_n_steps={checkpoint.every_n_steps} must be at least 1")
    if checkpoint.keep_last < 0:
        raise ConfigError(f"checkpoint.keep_last={checkpoint.keep_last} must be 0 or more")
    outside = [step for step in checkpoint.pin_steps if not 1 <= step <= training.max_steps]
    if outside:
        raise ConfigError(f"checkpoint.pin_steps={list(checkpoint.pin_steps)}: {outside} not between 1 and "
                          f"training.max_steps={training.max_steps}")
    if optim.on_divergence not in ("stop", "rollback"):
        raise ConfigError(f"optim.on_divergence={optim.on_divergence!r}: choose stop or rollback")
    if optim.on_divergence == "rollback" and not (0 < optim.rollback_lr_factor < 1 and optim.max_rollbacks >= 1):
        raise ConfigError(f"optim.on_divergence=rollback needs 0 < optim.rollback_lr_factor < 1 (it is "
                          f"{optim.rollback_lr_factor}) and optim.max_rollbacks >= 1 (it is {optim.max_rollbacks})")
