"""Sentence-pair objectives (training.objective=mlm_nsp|mlm_sop): BERT's two pre-training heads trained jointly.

The model is a transformers `BertForPreTraining`: the encoder with its pooler, the MLM head
(`cls.predictions`) and a two-way pair head on the pooled [CLS] vector (`cls.seq_relationship`). Its
export loads as `BertForPreTraining` and, dropping the pair head, as `AutoModelForMaskedLM`. The pair
head predicts "B is a random next segment" (NSP, label 1) or "A and B are swapped" (SOP, label 1):
the same head and loss, only the shards' examples differ. Pair rows are padded, so the encoder gets
their attention mask and token types; the MLM head still runs on the masked positions only. Rows score
different numbers of masked tokens, so the MLM loss is normalised per row, not per micro-batch (`pair_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import BertForPreTraining

from bertforge.common.errors import ConfigError
from pretrain.init_from import PAIR_HEAD
from pretrain.masking import IGNORE_INDEX, MaskedBatch


def as_pretraining_model(mlm_model, attention: str = "sdpa") -> BertForPreTraining:
    """A BertForPreTraining with `mlm_model`'s encoder and MLM head (its weights); the pooler and pair head are
    new (a continued run then carries its checkpoint's over: `pretrain.init_from.carry_pair_head`)."""
    if mlm_model.config.model_type != "bert":
        raise ConfigError(f"a sentence-pair objective needs a BERT model, not {mlm_model.config.model_type!r}: "
                          "use training.objective=mlm")
    config = mlm_model.config.__class__.from_dict(mlm_model.config.to_dict())
    config.architectures = None
    model = BertForPreTraining._from_config(config, attn_implementation=attention)
    missing, unexpected = model.load_state_dict(mlm_model.state_dict(), strict=False)
    new = [k for k in missing if not k.startswith(PAIR_HEAD)]
    if new or unexpected:
        raise RuntimeError(f"weights that do not carry over to BertForPreTraining: {new or unexpected}")
    return model


def masked_pairs(rows: dict, masker, special_ids: torch.Tensor) -> MaskedBatch:
    """The masked batch of pair rows: the shards' static masks when present, else drawn now.

    Every row has the k masked slots of a full row, in random order (static shapes). As in Google's
    create_pretraining_data.py, a row masks round(ratio x its tokens), [CLS] and both [SEP] counted (its
    len(tokens)), at least one and at most k: the slots past its own count, and any that fell on padding, are
    left as they were and not scored (target -100)."""
    if "positions" in rows:
        batch = MaskedBatch(rows["input_ids"], rows["positions"], rows["targets"])
    else:
        batch = masker(rows["input_ids"])  # torch's global RNG, reseeded per micro-batch
    tokens = rows["attention_mask"].sum(1, keepdim=True)  # the whole pair, [CLS] and two [SEP] included
    own_count = (tokens * masker.ratio).round().clamp(min=1)  # (batch, 1); the slots cap it at k
    slot = torch.arange(batch.positions.shape[1], device=batch.positions.device)
    unscored = torch.isin(batch.targets, special_ids) | (slot >= own_count)  # (batch, k)
    input_ids = batch.input_ids.scatter(1, batch.positions, torch.where(unscored, batch.targets,
                                                                         batch.input_ids.gather(1, batch.positions)))
    return MaskedBatch(input_ids, batch.positions, batch.targets.masked_fill(unscored, IGNORE_INDEX))


@dataclass
class PairLoss:
    """One micro-batch of pair rows: the loss to differentiate and the sums its metrics are made of."""

    loss: torch.Tensor  # MLM cross-entropy summed over the scored slots / (rows x k), + the pair loss
    scored_loss_sum: torch.Tensor  # MLM cross-entropy summed over the scored slots (detached)
    pair_loss: torch.Tensor  # the pair head's mean cross-entropy over the rows (detached)
    correct: torch.Tensor  # correct masked predictions
    pair_correct: torch.Tensor  # correct pair predictions


def pair_loss(model, batch: MaskedBatch, rows: dict) -> PairLoss:
    """MLM + pair loss of a BertForPreTraining on a micro-batch of pair rows.

    Pair rows score different numbers of tokens, so a mean over each micro-batch's scored tokens would weigh
    a token by how many others its micro-batch scores: the loss and gradient of one global batch would
    change with trainer.micro_batch_size. The MLM sum is divided by rows x k (the slots of a full row)
    instead, a constant per row: Lightning's mean over micro-batches and DDP's over ranks then give the
    sum over the global batch / (its rows x k), whatever the cut. Full rows score all k, as plain MLM does;
    a short row's fewer scored tokens make the MLM term a little smaller than a mean over scored tokens (what
    `MaskedLMModule.pop_window` logs as train/loss)."""
    out = model.bert(input_ids=batch.input_ids, attention_mask=rows["attention_mask"],
                     token_type_ids=rows["token_type_ids"])
    hidden = out.last_hidden_state  # (batch, seq, hidden)
    index = batch.positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # (batch, k, hidden)
    logits = model.cls.predictions(hidden.gather(1, index)).float()  # (batch, k, vocab)
    scored_sum = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE_INDEX,
                                 reduction="sum")
    pair_logits = model.cls.seq_relationship(out.pooler_output).float()  # (batch, 2)
    pair = F.cross_entropy(pair_logits, rows["pair_label"])
    return PairLoss(loss=scored_sum / batch.targets.numel() + pair, scored_loss_sum=scored_sum.detach(),
                    pair_loss=pair.detach(), correct=(logits.argmax(-1) == batch.targets).sum(),
                    pair_correct=(pair_logits.argmax(-1) == rows["pair_label"]).sum())
