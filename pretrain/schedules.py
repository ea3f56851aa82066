"""Learning-rate multipliers as functions of the optimiser step."""

from __future__ import annotations

from typing import Callable

from corpora.errors import ConfigError


def lr_lambda(schedule: str, warmup_steps: int, max_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each step: linear warmup, then the named decay."""

    def linear(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (max_steps - step) / max(1, max_steps - warmup_steps))

    schedules = {"linear": linear}
    if schedule not in schedules:
        raise ConfigError(f"optim.schedule={schedule!r} is not one of {sorted(schedules)}")
    return schedules[schedule]
