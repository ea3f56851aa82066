"""Extending an existing vocabulary with domain tokens, for continued pretraining (LEGAL-BERT-FP style).

The most useful new tokens are the domain's words that the existing tokenizer splits the most
often: each candidate word scores `frequency x (pieces - 1)`, the subwords saved if it became one
token. Existing ids never move, so a checkpoint's embedding rows stay valid; only new rows are
added at the end (resize the model's embeddings to the new size).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterable

from tokenizers import AddedToken, Tokenizer

_MAX_CANDIDATES = 200_000  # most frequent words scored; rarer ones cannot save many subwords


def count_words(tokenizer: Tokenizer, texts: Iterable[str]) -> Counter:
    """Frequencies of words as `tokenizer` sees them: after its normaliser, split by its pre-tokenizer."""
    counts: Counter = Counter()
    for text in texts:
        normalized = tokenizer.normalizer.normalize_str(text) if tokenizer.normalizer else text
        if tokenizer.pre_tokenizer is None:
            counts.update(normalized.split())
            continue
        # Offsets point into `normalized`; byte-level and Metaspace pieces carry marker characters.
        counts.update(normalized[start:end].strip()
                      for _, (start, end) in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
    counts.pop("", None)
    return counts


def choose_new_tokens(tokenizer: Tokenizer, counts: Counter, n_tokens: int) -> list[dict]:
    """The `n_tokens` words that save the most subwords, with their frequency and piece count."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    candidates = [w for w, _ in counts.most_common(_MAX_CANDIDATES)
                  if len(w) > 1 and w not in vocab and any(ch.isalpha() for ch in w)]
    scored = []
    for start in range(0, len(candidates), 4096):
        batch = candidates[start:start + 4096]
        for word, encoding in zip(batch, tokenizer.encode_batch(batch, add_special_tokens=False)):
            pieces = len(encoding.ids)
            if pieces > 1:
                scored.append({"token": word, "frequency": counts[word], "pieces_before": pieces,
                               "subwords_saved": counts[word] * (pieces - 1)})
    scored.sort(key=lambda c: (-c["subwords_saved"], c["token"]))
    return scored[:n_tokens]


def add_tokens(tokenizer: Tokenizer, tokens: list[str]) -> Tokenizer:
    """A copy of `tokenizer` with `tokens` appended at the end of the id space, existing ids untouched.

    WordPiece vocabularies take them as real vocabulary entries (so a new word also serves as the
    first piece of longer words, as a BERT vocab.txt entry would); other models take them as
    whole-word added tokens, since a BPE or Unigram entry without merges or scores would never fire.
    """
    data = json.loads(tokenizer.to_str())
    next_id = tokenizer.get_vocab_size(with_added_tokens=True)
    model_ids = data["model"].get("vocab", {})
    dense = isinstance(model_ids, dict) and max(model_ids.values(), default=-1) + 1 == next_id
    if data["model"]["type"] == "WordPiece" and dense:
        for offset, token in enumerate(tokens):
            model_ids[token] = next_id + offset
        return Tokenizer.from_str(json.dumps(data))
    extended = Tokenizer.from_str(tokenizer.to_str())
    extended.add_tokens([AddedToken(t, single_word=True, normalized=True) for t in tokens])
    return extended
