"""Examples to tensors: subword ids from the model's own fast tokenizer, and for word tasks the map
from subwords back to words, so heads predict one label per word whatever the vocabulary.

A word that gets no subword inside `max_length` (cut off, or a character the tokenizer drops) cannot be
predicted: it is marked unreached, scored as wrong and counted, never silently left out of the score.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from pretrain.downstream.readers import Sentence, Text

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    word_of_token: list[int]
    """Per subword: the index of its word, or -1 (special tokens, text tasks)."""
    labels: list[int] | list[float]
    """Word tasks: a label id per word (IGNORE for an unreached word or a label train never had);
    classify: one id, or a multi-hot vector for multi-label tasks."""
    heads: list[int] | None
    n_words: int
    reached: int
    """Words that have at least one subword inside max_length."""


def encode_words(tokenizer, sentence: Sentence, label_ids: dict[str, int], max_length: int) -> Encoded:
    """The sentence's words joined by spaces and encoded as running text, each subword mapped to its word
    by character offsets. A tokenizer given the words one by one (`is_split_into_words`) can encode them
    otherwise than the text it was pretrained on: a byte-level BPE without prefix spaces drops the space
    marker of every word but the first ("Google", not "ĠGoogle")."""
    text, word_starts = _joined(sentence.words)
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    word_of_token = [-1 if sequence is None else _word_at(word_starts, start)
                     for sequence, (start, _end) in zip(enc.sequence_ids(), enc["offset_mapping"], strict=True)]
    reached = len({w for w in word_of_token if w >= 0})
    labels = [label_ids.get(tag, IGNORE) for tag in sentence.tags]
    # Heads and labels of unreached words are ignored in the loss; scoring counts them wrong.
    got = set(word_of_token)
    labels = [label if i in got else IGNORE for i, label in enumerate(labels)]
    heads = None
    if sentence.heads is not None:
        heads = [h if i in got and (h == 0 or h - 1 in got) else IGNORE for i, h in enumerate(sentence.heads)]
    return Encoded(enc["input_ids"], word_of_token, labels, heads, len(sentence.words), reached)


def _joined(words: list[str]) -> tuple[str, list[int]]:
    """The words as one line with a space between each, and the character where each word starts."""
    starts, at = [], 0
    for word in words:
        starts.append(at)
        at += len(word) + 1
    return " ".join(words), starts


def _word_at(word_starts: list[int], char: int) -> int:
    """The word a subword starting at `char` belongs to. The space before a word counts as that word's
    own: byte-level BPE and Metaspace put the space marker on the word that follows ("Ġ" alone before
    ")" when the vocabulary has no "Ġ)"), and some tokenizers' offsets include that space."""
    return max(bisect.bisect_right(word_starts, char + 1) - 1, 0)


def encode_text(tokenizer, text: Text, label_ids: dict[str, int], max_length: int, multi_label: bool) -> Encoded:
    enc = tokenizer(text.text, truncation=True, max_length=max_length)
    if multi_label:
        labels = [0.0] * len(label_ids)
        for label in text.labels:
            if label in label_ids:
                labels[label_ids[label]] = 1.0
    else:
        labels = [label_ids.get(text.labels[0], IGNORE)]
    return Encoded(enc["input_ids"], [-1] * len(enc["input_ids"]), labels, None, 0, 0)


def collate(items: list[Encoded], pad_id: int, pooling: str) -> dict[str, torch.Tensor]:
    """Pad a batch. Word tasks also get `pool`, a (batch, words, tokens) matrix whose rows average the
    word's subwords (pooling=mean) or pick its first one (pooling=first): word vectors = pool @ hidden."""
    length = max(len(it.input_ids) for it in items)
    batch = {
        "input_ids": torch.full((len(items), length), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(items), length), dtype=torch.long),
    }
    for b, it in enumerate(items):
        batch["input_ids"][b, :len(it.input_ids)] = torch.tensor(it.input_ids)
        batch["attention_mask"][b, :len(it.input_ids)] = 1
    if items[0].n_words == 0:  # text classification
        dtype = torch.float if isinstance(items[0].labels[0], float) else torch.long
        labels = torch.tensor([it.labels for it in items], dtype=dtype)
        batch["labels"] = labels if dtype == torch.float else labels[:, 0]
        return batch
    words = max(it.n_words for it in items)
    word_of_token = torch.full((len(items), length), -1, dtype=torch.long)
    labels = torch.full((len(items), words), IGNORE, dtype=torch.long)
    heads = torch.full((len(items), words), IGNORE, dtype=torch.long)
    word_mask = torch.zeros((len(items), words), dtype=torch.bool)
    for b, it in enumerate(items):
        word_of_token[b, :len(it.word_of_token)] = torch.tensor(it.word_of_token)
        labels[b, :it.n_words] = torch.tensor(it.labels)
        word_mask[b, :it.n_words] = True
        if it.heads is not None:
            heads[b, :it.n_words] = torch.tensor(it.heads)
    used = word_of_token >= 0
    if pooling == "first":  # a word's subwords are consecutive: its first is where the word id changes
        previous = torch.cat([torch.full((len(items), 1), -1), word_of_token[:, :-1]], dim=1)
        used &= word_of_token != previous
    b_idx, t_idx = used.nonzero(as_tuple=True)
    pool = torch.zeros((len(items), words, length))
    pool[b_idx, word_of_token[b_idx, t_idx], t_idx] = 1.0
    pool = pool / pool.sum(-1, keepdim=True).clamp(min=1.0)
    batch.update(pool=pool, labels=labels, word_mask=word_mask)
    if items[0].heads is not None:
        batch["heads"] = heads
    return batch
