"""Sentence-pair objectives (training.objective=mlm_nsp|mlm_sop): BERT's two pre-training heads trained jointly.

The model is a transformers `BertForPreTraining`: the encoder with its pooler, the MLM head
(`cls.predictions`) and a two-way pair head on the pooled [CLS] vector (`cls.seq_relationship`). Its
export loads as `BertForPreTraining` and, dropping the pair head, as `AutoModelForMaskedLM`. The pair
head predicts "B is a random next segment" (NSP, label 1) or "A and B are swapped" (SOP, label 1):
the same head and loss, only the shards' examples differ. Pair rows are padded, so the encoder gets
their attention mask and token types; the MLM head still runs on the masked positions only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertForPreTraining

from bertforge.common.errors import ConfigError
from pretrain.masking import IGNORE_INDEX, MaskedBatch


def as_pretraining_model(mlm_model, attention: str = "sdpa") -> BertForPreTraining:
    """A BertForPreTraining with `mlm_model`'s encoder and MLM head (its weights); pooler and pair head new."""
    if mlm_model.config.model_type != "bert":
        raise ConfigError(f"a sentence-pair objective needs a BERT model, not {mlm_model.config.model_type!r}: "
                          "use training.objective=mlm")
    config = mlm_model.config.__class__.from_dict(mlm_model.config.to_dict())
    config.architectures = None
    model = BertForPreTraining._from_config(config, attn_implementation=attention)
    missing, unexpected = model.load_state_dict(mlm_model.state_dict(), strict=False)
    new = [k for k in missing if not k.startswith(("bert.pooler.", "cls.seq_relationship."))]
    if new or unexpected:
        raise RuntimeError(f"weights that do not carry over to BertForPreTraining: {new or unexpected}")
    return model


def masked_pairs(rows: dict, masker, special_ids: torch.Tensor) -> MaskedBatch:
    """The masked batch of pair rows: the shards' static masks when present, else drawn now.

    Every row has the k masked slots of a full row, in random order (static shapes). As in Google's
    create_pretraining_data.py, a row masks round(ratio x its tokens), at least one: the slots past its own
    count, and any that fell on padding, are left as they were and not scored (target -100)."""
    if "positions" in rows:
        batch = MaskedBatch(rows["input_ids"], rows["positions"], rows["targets"])
    else:
        batch = masker(rows["input_ids"])  # torch's global RNG, reseeded per micro-batch
    tokens = rows["attention_mask"].sum(1, keepdim=True) - 3  # A and B: all but [CLS] and two [SEP]
    own_count = (tokens * masker.ratio).round().clamp(min=1)  # (batch, 1)
    slot = torch.arange(batch.positions.shape[1], device=batch.positions.device)
    unscored = torch.isin(batch.targets, special_ids) | (slot >= own_count)  # (batch, k)
    input_ids = batch.input_ids.scatter(1, batch.positions, torch.where(unscored, batch.targets,
                                                                         batch.input_ids.gather(1, batch.positions)))
    return MaskedBatch(input_ids, batch.positions, batch.targets.masked_fill(unscored, IGNORE_INDEX))


def pair_loss(model, batch: MaskedBatch, rows: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(MLM loss + pair loss, correct masked predictions, correct pair predictions) of a BertForPreTraining."""
    out = model.bert(input_ids=batch.input_ids, attention_mask=rows["attention_mask"],
                     token_type_ids=rows["token_type_ids"])
    hidden = out.last_hidden_state  # (batch, seq, hidden)
    index = batch.positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # (batch, k, hidden)
    logits = model.cls.predictions(hidden.gather(1, index)).float()  # (batch, k, vocab)
    mlm = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE_INDEX)
    pair_logits = model.cls.seq_relationship(out.pooler_output).float()  # (batch, 2)
    pair = F.cross_entropy(pair_logits, rows["pair_label"])
    correct = (logits.argmax(-1) == batch.targets).sum()
    pair_correct = (pair_logits.argmax(-1) == rows["pair_label"]).sum()
    return mlm + pair, correct, pair_correct
