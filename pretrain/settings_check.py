"""The pretrain stage's settings that name no folder (trainer, checkpoint), checked from the config alone.

They are left out of the stage hash, so a finished pretrain folder is reused whatever they say. The
stage graph runs this check for every command whose plan holds the stage, before any stage runs or is
reused, so `trainer.devices=64` or `trainer.cluster=slurm` outside SLURM fails the same in a fresh work
folder and in one where the run is finished. torch is imported only to look for GPUs
(trainer.accelerator gpu or auto), so a reused command on CPU stays quick.
"""

from __future__ import annotations

from bertforge.common.errors import ConfigError
from pretrain.config import CheckpointConfig, OptimConfig, TrainerConfig, TrainingConfig
from pretrain.distributed import plan_launch
from pretrain.phases import plan_phases


def check_pretrain_settings(trainer: TrainerConfig, training: TrainingConfig, optim: OptimConfig,
                            checkpoint: CheckpointConfig, seq_len: int) -> None:
    """ConfigError naming the key when the run could not start here: devices, strategy and cluster
    against this machine and its environment, the global batch against the world size and the
    micro-batch (`seq_len`: the shards' main row length), the checkpoint settings and the divergence rule."""
    launch = plan_launch(trainer)
    plan_phases(training, trainer.micro_batch_size, optim, seq_len, launch.world_size)
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
