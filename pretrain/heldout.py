"""Held-out masked-token loss and accuracy: the one scorer behind `val/*` during training and the
evaluate stage.

Masks are drawn as in training, by the run's `pretrain.masking.Masker` (the same count per row, whole
words, spans, 80/10/10), `MASK_ROWS` rows at a time, each such chunk from a generator of its own seeded by
(`seed`, draw, chunk): every call on the same rows and device scores the same masked positions, however the
rows are cut into batches (`evaluate.batch_size`, a device's micro-batch), so scores compare across steps,
checkpoints and hardware. Sums stay on the device and are read back once, at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bertforge.common.errors import ConfigError
from pretrain.masking import Masker
from pretrain.model import encoder_and_head
from pretrain.module import sparse_mlm_logits


def has_sparse_head(model) -> bool:
    """Whether `pretrain.model.encoder_and_head` can split this model (BERT, RoBERTa, XLM-R, ModernBERT)."""
    try:
        encoder_and_head(model)
    except ConfigError:
        return False
    return True


def masked_logits(model, input_ids: torch.Tensor, positions: torch.Tensor, sparse: bool) -> torch.Tensor:
    """(batch, k, vocab) float32 logits at `positions` (batch, k).

    `sparse`: run the head on those positions only (`has_sparse_head`); otherwise take the model's own
    full logits there, which scores any transformers masked LM.
    """
    if sparse:
        return sparse_mlm_logits(model, input_ids, positions)
    logits = model(input_ids=input_ids).logits  # (batch, seq, vocab)
    index = positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])  # (batch, k, vocab)
    return logits.gather(1, index).float()


MASK_ROWS = 4096
"""Rows masked at once: bounds the masker's memory (a few (rows, seq) tensors) whatever the held-out size."""


def mask_generator(seed: int, draw: int, chunk: int, device) -> torch.Generator:
    """The generator that masks chunk `chunk` (rows chunk*MASK_ROWS on) in draw `draw` of a scoring seeded by `seed`."""
    state = np.random.SeedSequence([seed % 2**64, draw, chunk]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) >> 1)


@torch.no_grad()
def score_heldout(model, batches: Sequence[torch.Tensor], masker: Masker, seed: int,
                  mask_draws: int = 1) -> dict:
    """{"loss": mean cross-entropy over masked tokens, "accuracy": share of them predicted exactly,
    "masked_tokens": how many were scored} of a transformers masked LM on `batches` of (rows, seq) ids (one
    row length), run through the model in batches of the first one's size.

    The rows are masked `mask_draws` times (all rows once, then again) by `masker`, `MASK_ROWS` rows at a time
    from `mask_generator`, on the model's device: the masks depend on the rows, the seed and the draw, not on
    how `batches` cut the rows. Models `encoder_and_head` can split are scored with the head on the masked
    positions only, any other through its full logits. The model runs in eval mode and is left in the mode it
    came in; `masker` is moved to the model's device. One host sync per call, at the end.
    """
    device = next(model.parameters()).device
    masker = masker.to(device)
    sparse = has_sparse_head(model)
    rows = torch.cat(list(batches)) if batches else torch.zeros((0, 0), dtype=torch.int64)
    batch_size = max(1, len(batches[0])) if batches else 1
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    masked = 0  # a Python int: the shapes give it without asking the device
    was_training = model.training
    model.eval()
    try:
        for draw in range(mask_draws):  # several draws: a small held-out split still gives a steady score
            for chunk, start in enumerate(range(0, len(rows), MASK_ROWS)):
                whole = masker(rows[start:start + MASK_ROWS].to(device), mask_generator(seed, draw, chunk, device))
                for first in range(0, len(whole.input_ids), batch_size):
                    part = slice(first, first + batch_size)
                    targets = whole.targets[part]
                    logits = masked_logits(model, whole.input_ids[part], whole.positions[part], sparse)  # (b, k, vocab)
                    loss_sum += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
                    correct += (logits.argmax(-1) == targets).sum()
                    masked += targets.numel()
    finally:
        model.train(was_training)
    loss_total, correct_total = torch.stack([loss_sum, correct.double()]).tolist()  # the one host sync
    return {"loss": loss_total / max(masked, 1), "accuracy": correct_total / max(masked, 1),
            "masked_tokens": masked}


def row_batches(rows: np.ndarray, batch_size: int, max_rows: int = 0) -> list[torch.Tensor]:
    """The first `max_rows` rows (0: all) of a (rows, seq) array as int64 tensors of `batch_size` rows
    (the last one may be shorter), in order."""
    limit = min(max_rows or len(rows), len(rows))
    return [torch.from_numpy(np.asarray(rows[start:min(start + batch_size, limit)], dtype=np.int64))
            for start in range(0, limit, batch_size)]
