"""Training phases resolved from config: sequence length, steps, batch and learning rate of each.

BERT trained 90% of its steps at length 128 and the rest at 512 (EstBERT and gaBERT did the same):
`training.phases` lists such phases; with none, one phase runs at `shards.seq_len`. Every check that
can fail is done here, before any data is read or any model built.
"""

from __future__ import annotations

from dataclasses import dataclass

from bertforge.common.errors import ConfigError
from pretrain.config import OptimConfig, PhaseConfig, TrainingConfig
from pretrain.distributed import batch_layout


@dataclass(frozen=True)
class Phase:
    index: int
    seq_len: int
    start_step: int
    end_step: int
    """Exclusive: the phase runs optimiser steps start_step .. end_step - 1."""
    batch_size: int
    """Sequences per optimiser step, over all devices."""
    micro_batch_size: int
    """Sequences per device per forward pass."""
    accumulation: int
    """Forward/backward passes per optimiser step on each device."""
    lr_scale: float
    """This phase's peak learning rate over optim.lr."""
    warmup_steps: int

    @property
    def steps(self) -> int:
        return self.end_step - self.start_step

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def rewarm(self, step: int) -> float:
        """Multiplier of the phase's own linear re-warm-up at optimiser step `step`."""
        if self.warmup_steps <= 0:
            return 1.0
        return min(1.0, (step - self.start_step + 1) / self.warmup_steps)


def plan_phases(training: TrainingConfig, micro_batch_size: int, optim_cfg: OptimConfig, default_seq_len: int,
                world_size: int = 1) -> list[Phase]:
    """The phases of a run, with steps summing to `training.max_steps`; ConfigError naming the key on
    a batch that does not split into whole micro-batches (`trainer.micro_batch_size`, 0: the largest)
    on `world_size` devices, a negative phase lr, or a phase's re-warm-up (or
    `training.embedding_warmup_steps`) as long as the steps it applies to. `optim.lr` must be above 0
    (`pretrain.optim.check_optim_config`)."""
    specs = training.phases or [None]
    fractions = [spec.fraction if spec else 1.0 for spec in specs]
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise ConfigError(f"training.phases[].fraction are {fractions}: each must be positive and together "
                          "they must add up to 1")
    phases, start = [], 0
    for index, spec in enumerate(specs):
        key = f"training.phases[{index}]" if spec else "training"
        seq_len = spec.seq_len if spec and spec.seq_len else default_seq_len
        end = training.max_steps if index == len(specs) - 1 else start + round(fractions[index] * training.max_steps)
        if end <= start:
            raise ConfigError(f"{key}.fraction={fractions[index]} gives no steps out of training.max_steps="
                              f"{training.max_steps}")
        batch = _sequences_per_step(spec, training, seq_len, key)
        micro, accumulation = _split_batch(batch, micro_batch_size, world_size, key)
        if spec and spec.lr < 0:
            raise ConfigError(f"{key}.lr={spec.lr} is below 0: give the phase's peak learning rate, or 0 for "
                              "optim.lr")
        lr = spec.lr if spec and spec.lr else optim_cfg.lr
        warmup = spec.warmup_steps if spec else 0
        if not 0 <= warmup < end - start:
            raise ConfigError(f"{key}.warmup_steps={warmup} must be at least 0 and below the phase's {end - start} "
                              "steps, or it never reaches its peak learning rate: lower it or raise the phase's "
                              "fraction")
        phases.append(Phase(index, seq_len, start, end, batch, micro, accumulation, lr / optim_cfg.lr, warmup))
        start = end
    if not 0 <= training.embedding_warmup_steps < training.max_steps:
        raise ConfigError(f"training.embedding_warmup_steps={training.embedding_warmup_steps} must be at least 0 and "
                          f"below training.max_steps={training.max_steps}, or the encoder body never trains")
    return phases


def _sequences_per_step(spec: PhaseConfig | None, training: TrainingConfig, seq_len: int, key: str) -> int:
    """The global batch in sequences, from a batch given in sequences or in tokens."""
    tokens = (spec.tokens_per_batch if spec else 0) or (0 if spec and spec.batch_size else training.tokens_per_batch)
    if tokens:
        name = f"{key}.tokens_per_batch" if spec and spec.tokens_per_batch else "training.tokens_per_batch"
        if tokens % seq_len:
            raise ConfigError(f"{name}={tokens} is not a multiple of the sequence length {seq_len}: "
                              f"use {tokens // seq_len * seq_len} or {(tokens // seq_len + 1) * seq_len}")
        return tokens // seq_len
    return (spec.batch_size if spec and spec.batch_size else 0) or training.batch_size


def _split_batch(batch: int, micro: int, world_size: int, key: str) -> tuple[int, int]:
    """(micro batch per device, accumulation steps) so micro x accumulation x world_size == batch."""
    try:
        layout = batch_layout(batch, micro, world_size)  # the multi-device rules live in pretrain/distributed.py
    except ConfigError as err:
        raise ConfigError(f"{key} ({batch} sequences per step): {err}") from None
    return layout.micro_batch_size, layout.accumulation

