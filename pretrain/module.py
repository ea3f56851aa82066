"""The Lightning module: dynamic masking, a loss on masked positions only, AdamW with warmup."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from pretrain.masking import IGNORE_INDEX, mask_tokens
from pretrain.schedules import lr_lambda


def masked_lm_outputs(model, input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(loss, correct, masked) with the MLM head applied only where labels are set.

    The encoder runs on every position; the vocabulary projection, the biggest matmul of a small
    BERT, runs only on the ~15% masked rows. Full rows need no attention mask.
    """
    hidden = model.bert(input_ids=input_ids).last_hidden_state  # (batch, seq, hidden)
    chosen = labels != IGNORE_INDEX  # (batch, seq)
    # Boolean indexing has a data-dependent size: one host sync per step (fixed-count masking removes it).
    logits = model.cls(hidden[chosen])  # (masked, vocab)
    targets = labels[chosen]  # (masked,)
    loss = F.cross_entropy(logits.float(), targets)
    correct = (logits.argmax(-1) == targets).sum()
    return loss, correct, targets.numel()


class MaskedLMModule(L.LightningModule):
    """Wraps a transformers `*ForMaskedLM`; the wrapped model is what gets exported."""

    def __init__(self, model, masking_cfg, optim_cfg, max_steps: int, mask_id: int,
                 vocab_size: int, special_ids: list[int]):
        super().__init__()
        self.model = model
        self.masking, self.optim, self.max_steps = masking_cfg, optim_cfg, max_steps
        self.mask_id, self.vocab_size = mask_id, vocab_size  # vocab_size: the tokenizer's, not padded
        self.register_buffer("special_ids", torch.tensor(special_ids), persistent=False)

    def training_step(self, input_ids: torch.Tensor, batch_idx: int) -> torch.Tensor:
        masked, labels = mask_tokens(
            input_ids, self.masking.ratio, self.mask_id, self.vocab_size, self.special_ids,
            self.masking.replace_with_mask, self.masking.replace_with_random,
        )
        loss, correct, count = masked_lm_outputs(self.model, masked, labels)
        # Logged tensors stay on the device; Lightning reads them only every log_every_n_steps.
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        self.log("train/masked_accuracy", correct / max(count, 1), on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            # Biases and LayerNorm weights are not decayed (they are not weights to shrink).
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.optim.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.optim.lr, betas=tuple(self.optim.betas), eps=self.optim.eps,
            fused=torch.cuda.is_available(),
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(self.optim.schedule, self.optim.warmup_steps, self.max_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
