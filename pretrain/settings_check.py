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
    """ConfigError naming the key for an `impl` value torch would refuse late (num_workers) or read as
    another one (an unknown matmul precision)."""
    if impl.num_workers < 0:
        raise ConfigError(f"impl.num_workers={impl.num_workers}: give 0 (load in the training process) or more")
    if impl.matmul_precision not in MATMUL_PRECISIONS:
        raise ConfigError(f"impl.matmul_precision={impl.matmul_precision!r}: choose one of "
                          f"{', '.join(MATMUL_PRECISIONS)}")


def check_pretrain_settings(trainer: TrainerConfig, training: TrainingConfig, optim: OptimConfig,
                            checkpoint: CheckpointConfig, seq_len: int, model: ModelConfig,
                            masking: MaskingConfig) -> None:
    """ConfigError naming the key when the run could not start here: devices, strategy and cluster
    against this machine and its environment, the optimiser (name, lr, betas, eps) and its schedule
    (name, warmup against training.max_steps), the global batch against the world size and the
    micro-batch (`seq_len`: the shards' main row length), each phase's lr and re-warm-up, the checkpoint
    settings and the divergence rule, a from-scratch architecture against every phase's length, and
    the masking ratios."""
    if str(trainer.precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision={trainer.precision!r}: choose one of {', '.join(PRECISIONS)} "
                          "(32 on CPU, bf16-mixed on GPUs that support it)")
    launch = plan_launch(trainer)
    check_optim_config(optim)  # before the phases: they divide by optim.lr
    lr_lambda(optim.schedule, optim.warmup_steps, training.max_steps, optim.min_lr_ratio, optim.decay_fraction)
    phases = plan_phases(training, trainer.micro_batch_size, optim, seq_len, launch.world_size)
    if not model.init_from:  # a continued model's size is its checkpoint's
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
