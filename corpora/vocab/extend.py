"""Extending an existing vocabulary with domain tokens, for continued pretraining (LEGAL-BERT-FP style).

The most useful new tokens are the domain's words that the existing tokenizer splits the most
often: each candidate word scores `frequency x (pieces - 1)`, the subwords saved if it became one
token. Words are counted and scored as the model sees them in running text: a pre-token with its
word-start marker where the tokenizer has one ("Ġagus" for ByteLevel BPE, "▁agus" for Metaspace), so a
word that is already one token after a space is never added, and a word's pieces are its pieces in
context. Existing ids never move, so a checkpoint's embedding rows stay valid; only new rows are
added at the end (resize the model's embeddings to the new size).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterable

from tokenizers import AddedToken, Tokenizer

_MAX_CANDIDATES = 200_000  # most frequent words scored; rarer ones cannot save many subwords
_UNK_PENALTY = 10.0  # the tokenizers Unigram model scores an unknown piece at (lowest score - 10)
_SCORE_MARGIN = 1e-4  # a new Unigram entry beats its word's old pieces by this much, and barely anything else


def count_words(tokenizer: Tokenizer, texts: Iterable[str]) -> Counter:
    """Frequencies of words as `tokenizer`'s model sees them: after its normaliser, split by its
    pre-tokenizer, each with the marker its pre-tokenizer gives it ("Ġ" or "▁" at a word start; a
    word at the start of a text can have none). Pieces that are only whitespace are not counted."""
    counts: Counter = Counter()
    for text in texts:
        normalized = tokenizer.normalizer.normalize_str(text) if tokenizer.normalizer else text
        if tokenizer.pre_tokenizer is None:
            counts.update(normalized.split())
            continue
        counts.update(piece for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
    for piece in [p for p in counts if not text_of(tokenizer, p).strip()]:
        del counts[piece]
    return counts


def text_of(tokenizer: Tokenizer, token: str) -> str:
    """The text a model-form token stands for ("Ġagus" -> " agus" for ByteLevel, "▁agus" -> "agus")."""
    return tokenizer.decoder.decode([token]) if tokenizer.decoder else token


def choose_new_tokens(tokenizer: Tokenizer, counts: Counter, n_tokens: int) -> list[dict]:
    """The `n_tokens` words (`count_words`' keys) that save the most subwords, each with its frequency and
    its piece count in running text; `text` is what the token stands for where that differs from it."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    scored = []
    for word, frequency in counts.most_common(_MAX_CANDIDATES):
        text = text_of(tokenizer, word)
        if word in vocab or len(text.strip()) < 2 or not any(ch.isalpha() for ch in text):
            continue
        pieces = len(tokenizer.model.tokenize(word))  # as encoding a text splits this word: no second normalising
        if pieces > 1:
            scored.append({"token": word, **({"text": text.strip()} if text != word else {}),
                           "frequency": frequency, "pieces_before": pieces,
                           "subwords_saved": frequency * (pieces - 1)})
    scored.sort(key=lambda c: (-c["subwords_saved"], c["token"]))
    return scored[:n_tokens]


def add_tokens(tokenizer: Tokenizer, tokens: list[str]) -> Tokenizer:
    """A copy of `tokenizer` with `tokens` (`choose_new_tokens`' model-form words) appended at the end of the
    id space as real vocabulary entries, existing ids untouched; each then encodes as one token where its
    word occurs in running text.

    WordPiece: plain entries (a new word also serves as the first piece of longer words, as a BERT
    vocab.txt entry would). BPE: entries matched as whole words (`ignore_merges`: a word found in the
    vocabulary is taken as it is, before any merge; a BPE entry without merges would otherwise never fire).
    Unigram: entries scored just above the best split of their word, so they win there and change other
    words as little as possible. Other models, and a WordPiece whose added tokens sit inside its id range,
    take whole-word added tokens.
    """
    data = json.loads(tokenizer.to_str())
    model = data["model"]
    next_id = tokenizer.get_vocab_size(with_added_tokens=True)
    if model["type"] == "WordPiece" and _model_size(model) == next_id:
        for offset, token in enumerate(tokens):
            model["vocab"][token] = next_id + offset
    elif model["type"] in ("BPE", "Unigram"):
        _fill_added_ids(data, next_id)
        if model["type"] == "BPE":
            model["ignore_merges"] = True
            model["vocab"].update({token: next_id + offset for offset, token in enumerate(tokens)})
        else:
            model["vocab"] += [[token, _unigram_score(tokenizer, model, token)] for token in tokens]
    else:
        extended = Tokenizer.from_str(tokenizer.to_str())
        extended.add_tokens([AddedToken(t, single_word=True, normalized=True) for t in tokens])
        return extended
    return Tokenizer.from_str(json.dumps(data))


def _model_size(model: dict) -> int:
    vocab = model.get("vocab", {})
    return max(vocab.values(), default=-1) + 1 if isinstance(vocab, dict) else len(vocab)


def _fill_added_ids(data: dict, next_id: int) -> None:
    """Make the model's ids run up to `next_id`, so new entries follow with no gap: an added token past the
    model's vocabulary (a special token, say) is entered at its own id, as a piece no text reaches the
    model as (the added tokens are split off first); a Unigram takes it at the lowest score."""
    model = data["model"]
    added = {t["id"]: t["content"] for t in data.get("added_tokens", [])}
    for token_id in range(_model_size(model), next_id):
        if token_id not in added:
            raise ValueError(f"tokenizer.json: id {token_id} is neither in the {model['type']} vocabulary nor "
                             "an added token; extend a tokenizer whose ids have no gaps")
        if model["type"] == "BPE":
            model["vocab"][added[token_id]] = token_id
        else:
            model["vocab"].append([added[token_id], min(score for _, score in model["vocab"])])


def _unigram_score(tokenizer: Tokenizer, model: dict, token: str) -> float:
    """A score just above that of `token`'s best split by the old pieces (Unigram scores are log-probabilities
    summed along a split), so the new entry is the best split of its own word."""
    scores = [score for _, score in model["vocab"]]
    unk_score = min(scores) - _UNK_PENALTY
    best = sum(unk_score if piece.id == model.get("unk_id") else scores[piece.id]
               for piece in tokenizer.model.tokenize(token))
    return best + _SCORE_MARGIN
