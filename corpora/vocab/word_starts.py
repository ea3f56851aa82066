"""Which vocabulary entries begin a word: the table whole-word masking looks token ids up in.

Subword vocabularies mark word boundaries in one of two ways, and the tokenizer says which:
  continuation prefix  WordPiece (and BPE trained with `continuing_subword_prefix`) spell a piece that
                       continues a word as "##ing": every token without the prefix starts a word.
  word-start marker    SentencePiece-style Unigram/BPE (Metaspace pre-tokenizer, "▁") and byte-level
                       BPE (ByteLevel pre-tokenizer, "Ġ" for the space byte) prefix the piece that
                       follows a space: only tokens with the marker start a word.
Special tokens always count as word starts (they are never masked).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from bertforge.common.errors import ConfigError

BYTE_LEVEL_SPACE = "\u0120"  # "Ġ": the printable stand-in ByteLevel uses for the space byte


def word_start_table(tokenizer: Tokenizer, padded_size: int | None = None) -> np.ndarray:
    """(vocab,) bool: True where the token begins a word. Padded rows (never produced) are True."""
    spec = json.loads(tokenizer.to_str())
    prefix, marker = _conventions(spec)
    size = max(padded_size or 0, tokenizer.get_vocab_size())
    table = np.ones(size, dtype=bool)
    for token, index in tokenizer.get_vocab(with_added_tokens=False).items():
        table[index] = not token.startswith(prefix) if prefix else token.startswith(marker)
    for added in spec.get("added_tokens", []):
        table[added["id"]] = True
    return table


def load_word_start_table(tokenizer_json: Path, padded_size: int | None = None) -> np.ndarray:
    """`word_start_table` of a saved `tokenizer.json`."""
    return word_start_table(Tokenizer.from_file(str(tokenizer_json)), padded_size)


def _conventions(spec: dict) -> tuple[str | None, str | None]:
    """(continuation prefix, word-start marker): exactly one of them is set."""
    model = spec.get("model") or {}
    prefix = model.get("continuing_subword_prefix")
    if model.get("type") == "WordPiece":
        return prefix or "##", None
    if prefix:
        return prefix, None
    for node in _walk(spec.get("pre_tokenizer")):
        if node.get("type") == "Metaspace":
            return None, node.get("replacement", "\u2581")
        if node.get("type") == "ByteLevel":
            return None, BYTE_LEVEL_SPACE
    raise ConfigError(
        f"masking.whole_word=true: cannot tell word starts in this {model.get('type')} tokenizer (no "
        "continuation prefix, no Metaspace or ByteLevel pre-tokenizer); set masking.whole_word=false")


def _walk(node):
    """Every pre-tokenizer inside a (possibly nested) Sequence."""
    if not isinstance(node, dict):
        return
    yield node
    for child in node.get("pretokenizers", []):
        yield from _walk(child)
