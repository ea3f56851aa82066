"""Learning-rate multipliers (of the peak rate) as functions of the optimiser step.

Every schedule starts with a linear warmup from 1/warmup_steps to 1, then:
  linear        straight down to min_ratio at max_steps (BERT)
  cosine        half a cosine down to min_ratio at max_steps
  wsd           warmup-stable-decay: flat at 1, then linear to min_ratio over the last
                decay_fraction of the steps (so a run can be extended from its stable part)
  inverse_sqrt  sqrt(warmup_steps / step) after warmup (T5/fairseq), never reaching zero
  constant      flat at 1
"""

from __future__ import annotations

import math
from typing import Callable

from bertforge.common.errors import ConfigError

SCHEDULES = ("linear", "cosine", "wsd", "inverse_sqrt", "constant")


def lr_lambda(schedule: str, warmup_steps: int, max_steps: int, min_ratio: float = 0.0,
              decay_fraction: float = 0.1) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each (0-based) optimiser step; ConfigError naming the key on
    an unknown schedule, or a warmup that would not end before `max_steps` (the run would never reach its
    peak rate)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={schedule!r} is not one of {list(SCHEDULES)}")
    if not 0 <= warmup_steps < max_steps:
        raise ConfigError(f"optim.warmup_steps={warmup_steps} must be at least 0 and below training.max_steps="
                          f"{max_steps}, or the learning rate never reaches optim.lr: lower optim.warmup_steps "
                          "(BERT warmed up for 1% of its steps) or raise training.max_steps")
    if not 0.0 <= min_ratio <= 1.0:
        raise ConfigError(f"optim.min_lr_ratio={min_ratio} must lie in [0, 1]")
    if schedule == "wsd" and not 0.0 < decay_fraction <= 1.0:
        raise ConfigError(f"optim.decay_fraction={decay_fraction} must lie in (0, 1] for schedule=wsd")
    decay_steps = max(1, max_steps - warmup_steps)
    decay_start = max_steps - max(1, round(decay_fraction * max_steps))

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = min(1.0, (step - warmup_steps) / decay_steps)  # share of the post-warmup steps done
        if schedule == "linear":
            return min_ratio + (1.0 - min_ratio) * (1.0 - done)
        if schedule == "cosine":
            return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * done))
        if schedule == "wsd":
            if step < decay_start:
                return 1.0
            tail = min(1.0, (step - decay_start) / max(1, max_steps - decay_start))
            return min_ratio + (1.0 - min_ratio) * (1.0 - tail)
        if schedule == "inverse_sqrt":
            return math.sqrt(max(1, warmup_steps) / (step + 1))
        return 1.0

    return multiplier
