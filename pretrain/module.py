"""The Lightning module: dynamic masking on the device, a sparse MLM head, metrics kept on the device.

Nothing in `training_step` reads a value back to the host: the masked count is a constant (from
`pretrain.masking.Masker`), the metrics accumulate in device tensors, and `StepMetricsLogger`
(pretrain/step_metrics.py) reads them once every `logger.log_every_n_steps` steps. Held-out scores
come from `pretrain.heldout`, run by `HeldoutValidation` (pretrain/validation.py).
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FullyShardedDataParallel

from pretrain.masking import IGNORE_INDEX, MaskedBatch, Masker
from pretrain.model import encoder_and_head
from pretrain.objectives import masked_pairs, pair_loss
from pretrain.optim import build_optimizer
from pretrain.phases import Phase
from pretrain.schedules import lr_lambda
from bertforge.common.errors import TrainingDiverged
from pretrain.config import MaskingConfig, OptimConfig


def sparse_mlm_logits(model, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(batch, k, vocab) float32 logits at `positions` (batch, k), the MLM head applied only there.

    The encoder runs on every position; the vocabulary projection, the biggest matmul of a small
    BERT, runs only on the masked ~15-30%. Rows are full, so no attention mask is passed and SDPA
    takes its fastest path. Every shape depends only on the input shapes (static for compile).
    """
    encoder, head = encoder_and_head(model)
    hidden = encoder(input_ids=input_ids).last_hidden_state  # (batch, seq, hidden)
    index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # (batch, k, hidden)
    return head(hidden.gather(1, index)).float()  # (batch, k, vocab)


def sparse_mlm_loss(model, input_ids: torch.Tensor, positions: torch.Tensor,
                    targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, number of correct predictions) with the MLM head applied only at `positions`."""
    logits = sparse_mlm_logits(model, input_ids, positions)  # (batch, k, vocab)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    correct = (logits.argmax(-1) == targets).sum()
    return loss, correct


class MaskedLMModule(L.LightningModule):
    """Wraps a transformers `*ForMaskedLM`; the wrapped model is what gets exported.

    `plan` is the list of `pretrain.phases.Phase`; the learning rate follows `optim.schedule` over
    all steps, scaled and re-warmed per phase. For the first `embedding_warmup_steps` the encoder body
    (all but the token embeddings) keeps learning rate 0.
    """

    def __init__(self, model, masking_cfg: MaskingConfig, optim_cfg: OptimConfig, plan: list[Phase],
                 special_ids: dict[str, int], vocab_size: int,
                 maskable_share: dict[int, float], word_starts: torch.Tensor | None = None, compile_backend: str = "",
                 embedding_warmup_steps: int = 0):
        super().__init__()
        # from_pretrained (model.init_from) returns a model in eval mode, and Lightning keeps each submodule's
        # mode: without train() here, continued pretraining ran with dropout off.
        self.model = model.train()
        self.optim, self.plan = optim_cfg, plan
        self.embedding_warmup_steps = embedding_warmup_steps
        # A submodule, so its vocabulary tables follow the model to the device. `maskable_share`: row
        # length -> share of non-special tokens in the shards; `vocab_size`: the tokenizer's, not padded.
        self.masker = Masker.from_config(masking_cfg, special_ids, vocab_size, maskable_share, word_starts)
        # dynamic=False: one graph per input shape (one per phase length), never a dynamic-shape graph.
        # The bound method looks `self.model` up at call time, so a strategy that wraps it still works.
        self.loss_fn = torch.compile(self.masked_loss, backend=compile_backend, dynamic=False) \
            if compile_backend else self.masked_loss
        self.window = None  # device-side sums since the last log, see `pop_window`
        self.reset_window()
        # optim.on_divergence=rollback: the learning-rate factor of the rollbacks so far and what each did.
        # Saved in every checkpoint, so a run resumed after a rollback keeps the lower rate.
        self.lr_scale, self.rollbacks = 1.0, []
        self.rolling_back = False  # set by `roll_back`: the checkpoint about to be loaded predates it

    def masked_loss(self, input_ids: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor):
        """`sparse_mlm_loss` of the wrapped model (the function torch.compile traces)."""
        return sparse_mlm_loss(self.model, input_ids, positions, targets)

    def training_step(self, rows, batch_idx: int) -> torch.Tensor:
        if isinstance(rows, dict):  # sentence pairs (training.objective=mlm_nsp|mlm_sop)
            return self.pair_step(rows)
        if isinstance(rows, (list, tuple)):  # static masking: (masked ids, positions, targets) from the shards
            batch = MaskedBatch(*rows)
        else:
            batch = self.masker(rows)  # torch's global RNG, reseeded per micro-batch (MicroBatchSeeding)
        input_ids = batch.input_ids
        loss, correct = self.loss_fn(batch.input_ids, batch.positions, batch.targets)
        # Accumulate on the device: no .item() here (that would wait for the GPU every step).
        self.window["loss_sum"] += torch.nan_to_num(loss.detach(), nan=0.0, posinf=0.0, neginf=0.0)
        self.window["finite"] += torch.isfinite(loss.detach())  # a skipped step's loss is not averaged in as 0
        self.window["correct"] += correct
        self.window["masked"] += batch.targets.numel()
        self.window["tokens"] += input_ids.numel()
        return loss

    def pair_step(self, rows: dict) -> torch.Tensor:
        """MLM + the pair head (NSP or SOP) on padded sentence-pair rows (`pretrain.objectives`)."""
        batch = masked_pairs(rows, self.masker, self.masker.special_ids)
        terms = pair_loss(self.model, batch, rows)
        # Logged as the MLM mean over the interval's scored tokens + the pair head's mean (see `pop_window`).
        finite = {"nan": 0.0, "posinf": 0.0, "neginf": 0.0}
        self.window["scored_loss_sum"] += torch.nan_to_num(terms.scored_loss_sum, **finite)
        self.window["pair_loss_sum"] += torch.nan_to_num(terms.pair_loss, **finite)
        good = torch.isfinite(terms.loss.detach())
        self.window["finite"] += good
        self.window["finite_masked"] += (batch.targets != IGNORE_INDEX).sum() * good
        self.window["correct"] += terms.correct
        self.window["pair_correct"] += terms.pair_correct
        self.window["masked"] += (batch.targets != IGNORE_INDEX).sum()  # the scored positions
        self.window["pairs"] += rows["pair_label"].numel()
        self.window["tokens"] += batch.input_ids.numel()
        return terms.loss

    def on_train_start(self) -> None:
        if self.rolling_back:  # the restored rates are the old ones: apply the new factor from this step on
            scheduler = self.lr_schedulers()
            for group, base, rate in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * rate(scheduler.last_epoch)
            self.window["bad_run"].zero_()
            self.rolling_back = False
        self.reset_window()  # now on the training device

    def roll_back(self, at_step: int, to_step: int, factor: float) -> None:
        """Go on from the checkpoint of `to_step` (loaded next) with the learning rate times `factor`."""
        self.lr_scale *= factor
        self.rollbacks.append({"at_step": at_step, "to_step": to_step, "lr_scale": self.lr_scale})
        self.rolling_back = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bertforge_rollbacks"] = {"lr_scale": self.lr_scale, "rollbacks": list(self.rollbacks)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if not self.rolling_back:  # a resume: the rollbacks before it still hold
            saved = checkpoint.get("bertforge_rollbacks", {})
            self.lr_scale, self.rollbacks = saved.get("lr_scale", 1.0), list(saved.get("rollbacks", []))

    def reset_window(self) -> None:
        zero = torch.zeros((), device=self.device)
        # carried across log intervals: a run of bad steps, and the latest good step's gradient norm
        bad_run = self.window["bad_run"] if self.window else zero.clone()
        grad_norm = self.window["grad_norm"] if self.window else zero.clone()
        self.window = {"loss_sum": zero.clone(), "correct": zero.clone(), "grad_norm": grad_norm.to(self.device),
                       "skipped": zero.clone(), "bad_run": bad_run.to(self.device),
                       "masked": zero.clone(), "tokens": 0, "pair_correct": zero.clone(), "pairs": 0,
                       "scored_loss_sum": zero.clone(), "pair_loss_sum": zero.clone(), "finite": zero.clone(),
                       "finite_masked": zero.clone()}

    def pop_window(self) -> dict:
        """Metrics since the last call, as Python numbers. This is the one host sync per log interval."""
        w = self.window
        sums = torch.stack([w["loss_sum"], w["correct"], w["masked"], w["grad_norm"], w["skipped"], w["bad_run"],
                            w["pair_correct"], w["loss_sum"].new_tensor(w["pairs"]), w["scored_loss_sum"],
                            w["pair_loss_sum"], w["finite"], w["finite_masked"]])
        ranks = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Loss and accuracy of the whole global batch, not of this rank's slice: one all-reduce per
            # log interval (every rank calls this at the same steps).
            torch.distributed.all_reduce(sums)
            ranks = torch.distributed.get_world_size()
        (loss_sum, correct, masked, grad_norm_sum, skipped, bad_run, pair_correct, pairs,
         scored_loss_sum, pair_loss_sum, finite, finite_masked) = sums.tolist()  # host sync
        # Norms, skips and runs of bad steps are the same on every rank: gradients were reduced before them.
        grad_norm, skipped, bad_run = grad_norm_sum / ranks, round(skipped / ranks), round(bad_run / ranks)
        self.reset_window()
        if bad_run >= max(1, self.optim.max_bad_steps):
            last = getattr(getattr(self._trainer, "checkpoint_callback", None), "last_model_path", "") or "none yet"
            raise TrainingDiverged(
                f"{bad_run} optimiser steps in a row up to step {self.global_step} had a non-finite loss or gradient "
                f"and were skipped (optim.max_bad_steps={self.optim.max_bad_steps}): stopped. The weights were not "
                f"updated by them; the last checkpoint is {last}. Lower optim.lr or raise optim.warmup_steps "
                "(or set optim.on_divergence=rollback), then rerun the same command (checkpoint.resume=false to "
                "start over)", step=self.global_step, bad_steps=bad_run)
        # Plain MLM: every micro-batch scores the same number of tokens, so the mean of their means is the mean
        # over every masked token of the interval (all ranks). Only finite micro-batches count: a skipped step's
        # loss is no 0, and an interval of skipped steps only has no loss (NaN).
        loss = loss_sum / finite if finite else math.nan
        if pairs:  # NSP / SOP: rows score different numbers of tokens; the same mean, over the scored ones
            loss = scored_loss_sum / max(finite_masked, 1) + pair_loss_sum / finite if finite else math.nan
        metrics = {"train/loss": loss, "train/masked_accuracy": correct / max(masked, 1),
                   "train/grad_norm": grad_norm, "train/skipped_steps": skipped, "tokens": w["tokens"]}
        if pairs:  # NSP / SOP: accuracy of the pair head
            metrics["train/pair_accuracy"] = pair_correct / pairs
        return metrics

    def body_parameters(self) -> set[int]:
        """Ids of the encoder's parameters other than the token embeddings: what
        `training.embedding_warmup_steps` holds still (empty when it is 0)."""
        if not self.embedding_warmup_steps:
            return set()
        encoder, _ = encoder_and_head(self.model)
        embeddings = id(self.model.get_input_embeddings().weight)
        return {id(p) for p in encoder.parameters() if id(p) != embeddings}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip to `optim.grad_clip`, keep the norm (on the device) for logging, and make the optimiser skip
        a step whose norm is not finite, all without a host sync."""
        inner = getattr(optimizer, "optimizer", optimizer)
        trainer = self._trainer  # None when a test calls this directly
        scaler = getattr(trainer.precision_plugin, "scaler", None) if trainer is not None else None
        if scaler is not None and getattr(inner, "_step_supports_amp_scaling", False):
            # fp16: Lightning leaves the gradients of an optimiser that unscales inside its step (fused AdamW)
            # multiplied by the loss scale. Unscaled here, the norm is the true one and the clip means what
            # it says; the scaler then tells the fused step they are unscaled already.
            scaler.unscale_(inner)
        root = trainer.strategy.model if trainer is not None else None
        if isinstance(root, FullyShardedDataParallel):
            # Each rank holds a shard of the gradients: the norm of the whole model needs them all, which
            # FSDP's own clip computes (an all-reduce); it clips by it, or, with no clip, only measures it.
            norm = root.clip_grad_norm_(self.optim.grad_clip if self.optim.grad_clip > 0 else float("inf"))
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
            if self.optim.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(self.model.parameters(), self.optim.grad_clip, norm)
        bad = ~torch.isfinite(norm)
        # Fused AdamW (and our LAMB) skip the whole update on the device where `found_inf` is 1: the hook
        # AMP's GradScaler uses. Under fp16 mixed precision the scaler sets it again itself.
        inner.found_inf = bad.float()
        self.window["grad_norm"] = torch.where(bad, self.window["grad_norm"], norm.detach())  # the latest good one
        self.window["skipped"] += bad
        self.window["bad_run"] = torch.where(bad, self.window["bad_run"] + 1, 0.0)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.optim, self.body_parameters())
        schedule = lr_lambda(self.optim.schedule, self.optim.warmup_steps, self.plan[-1].end_step,
                             self.optim.min_lr_ratio, self.optim.decay_fraction)

        def multiplier(step: int) -> float:
            phase = next((p for p in self.plan if step < p.end_step), self.plan[-1])
            return schedule(step) * phase.lr_scale * phase.rewarm(step) * self.lr_scale

        def frozen_body(step: int) -> float:
            # Learning rate 0 (so no update and no weight decay) rather than requires_grad=False: DDP and
            # FSDP see the same parameters throughout, and a resumed run gets it from the step alone.
            return 0.0 if step < self.embedding_warmup_steps else multiplier(step)

        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [frozen_body if group["body"] else multiplier for group in optimizer.param_groups])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
