"""Task heads on top of an encoder's last hidden states.

- `WordTagger`: one label per word (UPOS, XPOS, feats, NER) from the word's pooled vector.
- `BiaffineParser`: Dozat and Manning's deep biaffine scorer. Every word scores every other word, and the
  sentence's first token (the [CLS]/<s> vector) stands for the root, as a head. Each word's relation is
  then labelled from its vector, its head's and their product (a linear layer over the three: a full
  bilinear label layer costs labels x size^2 per word and was 80 % of a step on a CPU). Heads are decoded greedily (best head per
  word, no tree constraint), which is what "UAS/LAS" below measure.
- `TextClassifier`: the first token's vector, one softmax over labels, or a sigmoid per label.
"""

from __future__ import annotations

import torch
from torch import nn

from pretrain.downstream.batches import IGNORE


class WordTagger(nn.Module):
    def __init__(self, hidden: int, n_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_labels)

    def forward(self, hidden_states: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = self.out(self.dropout(batch["pool"].to(hidden_states.dtype) @ hidden_states))
        loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(),
                                           ignore_index=IGNORE)
        return loss, {"labels": logits.argmax(-1)}


class _MLP(nn.Sequential):
    def __init__(self, hidden: int, size: int, dropout: float):
        super().__init__(nn.Linear(hidden, size), nn.GELU(), nn.Dropout(dropout))


class BiaffineParser(nn.Module):
    def __init__(self, hidden: int, n_labels: int, arc_size: int = 256, label_size: int = 128,
                 dropout: float = 0.1):
        super().__init__()
        self.arc_dep, self.arc_head = _MLP(hidden, arc_size, dropout), _MLP(hidden, arc_size, dropout)
        self.label_dep, self.label_head = _MLP(hidden, label_size, dropout), _MLP(hidden, label_size, dropout)
        self.arc_weight = nn.Parameter(torch.zeros(arc_size, arc_size))
        self.head_bias = nn.Linear(arc_size, 1, bias=False)  # how likely a word is a head at all
        self.label = nn.Linear(3 * label_size, n_labels)

    def forward(self, hidden_states: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        words = batch["pool"].to(hidden_states.dtype) @ hidden_states
        nodes = torch.cat([hidden_states[:, :1], words], dim=1)  # node 0 is the root
        dep, head = self.arc_dep(nodes), self.arc_head(nodes)
        scores = (dep @ self.arc_weight @ head.transpose(1, 2) + self.head_bias(head).transpose(1, 2)).float()
        candidates = torch.cat([torch.ones_like(batch["word_mask"][:, :1]), batch["word_mask"]], dim=1)
        scores = scores.masked_fill(~candidates[:, None, :], float("-inf"))[:, 1:]  # dependents: the words
        gold = batch["heads"]
        arc_loss = nn.functional.cross_entropy(scores.flatten(0, 1), gold.flatten(), ignore_index=IGNORE)
        predicted = scores.argmax(-1)
        # Labels from the gold head while training (so the label layer learns from right pairs), the
        # predicted head otherwise.
        chosen = torch.where(gold != IGNORE, gold, predicted) if self.training else predicted
        label_dep, label_head = self.label_dep(nodes[:, 1:]), self.label_head(nodes)
        head_vectors = label_head.gather(1, chosen.clamp(min=0)[..., None].expand(-1, -1, label_head.shape[-1]))
        label_logits = self.label(torch.cat([label_dep, head_vectors, label_dep * head_vectors], -1)).float()
        label_loss = nn.functional.cross_entropy(label_logits.flatten(0, 1), batch["labels"].flatten(),
                                                 ignore_index=IGNORE)
        return arc_loss + label_loss, {"heads": predicted, "labels": label_logits.argmax(-1)}


class TextClassifier(nn.Module):
    def __init__(self, hidden: int, n_labels: int, multi_label: bool, dropout: float = 0.1):
        super().__init__()
        self.multi_label = multi_label
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_labels)

    def forward(self, hidden_states: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = self.out(self.dropout(hidden_states[:, 0])).float()
        if self.multi_label:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"])
            return loss, {"labels": logits > 0}
        loss = nn.functional.cross_entropy(logits, batch["labels"], ignore_index=IGNORE)
        return loss, {"labels": logits.argmax(-1)}


def make_head(task_type: str, hidden: int, n_labels: int, multi_label: bool) -> nn.Module:
    if task_type == "parse":
        return BiaffineParser(hidden, n_labels)
    if task_type == "classify":
        return TextClassifier(hidden, n_labels, multi_label)
    return WordTagger(hidden, n_labels)
