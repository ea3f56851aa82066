"""Held-out validation during training: `val/loss` and `val/masked_accuracy` every N optimiser steps.

Scoring is `pretrain.heldout.score_heldout` (the evaluate stage's scorer too), on the same rows with
the same masks every time, so the curve compares like with like.
"""

from __future__ import annotations

from contextlib import nullcontext

import lightning as L
import torch

from pretrain.heldout import score_heldout
from pretrain.step_metrics import StepMetricsLogger


class HeldoutValidation(L.Callback):
    """Scores `batches` (held-out (rows, seq) ids) every `every_n_steps` optimiser steps and at the last
    step (0: never), and logs the scores to every logger of the trainer.

    Masks follow the module's own masking (`pl_module.masker`) at `ratio`, drawn from `seed`. The time
    it takes runs under `step_metrics.untimed`, when given, so it is not counted as training throughput.
    """

    def __init__(self, batches: list[torch.Tensor], every_n_steps: int, ratio: float, seed: int,
                 step_metrics: StepMetricsLogger | None = None, mask_draws: int = 1):
        self.batches, self.every, self.ratio, self.seed = batches, every_n_steps, ratio, seed
        self.step_metrics, self.mask_draws = step_metrics, mask_draws
        self.validated_step = -1
        self.history: list[dict] = []  # every validation row ({"step", "val/loss", "val/masked_accuracy"})

    def on_train_start(self, trainer, pl_module) -> None:
        # A resumed run's first micro-batches end at the step it resumed from: validated before that step's
        # checkpoint was saved (checkpoints are written after the other callbacks of the step).
        self.validated_step = trainer.global_step

    def due(self, step: int, max_steps: int) -> bool:
        """Whether optimiser step `step` (steps done) is one to validate at, and not yet validated."""
        if not (self.every and self.batches) or step in (0, self.validated_step):
            return False  # step 0 and repeats: micro-batches of an accumulating step see the same step
        return step % self.every == 0 or step >= max_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.due(step, trainer.max_steps):
            return
        self.validated_step = step
        with self.step_metrics.untimed(pl_module.device) if self.step_metrics is not None else nullcontext():
            masker = pl_module.masker.at_ratio(self.ratio)
            scores = score_heldout(pl_module.model, self.batches, masker, self.seed, self.mask_draws)
            metrics = {"val/loss": scores["loss"], "val/masked_accuracy": scores["accuracy"]}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        self.history.append({"step": step, **metrics})
