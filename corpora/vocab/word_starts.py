"""Which vocabulary entries begin a word: the table whole-word masking looks token ids up in.

Subword vocabularies mark word boundaries in one of two ways, and the tokenizer says which:
  continuation prefix  WordPiece (and BPE trained with `continuing_subword_prefix`) spell a piece that
                       continues a word as "##ing": every token without the prefix starts a word.
  word-start marker    SentencePiece-style Unigram/BPE (Metaspace pre-tokenizer, "▁") and byte-level
                       BPE (ByteLevel pre-tokenizer, "Ġ" for the space byte) prefix the piece that
                       follows a space: only tokens with the marker start a word. Byte-level BPE also
                       gives a line break or tab a token of its own ("Ċ", "ĉ") and the word after it no
                       "Ġ": a token of whitespace alone starts a word too, so the break opens the next
                       word's unit ("Ċ" "BhÃŃ") as the space in "Ġword" does, instead of the word joining
                       the one before the break.
Special tokens always count as word starts (they are never masked).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders

from bertforge.common.errors import ConfigError

BYTE_LEVEL_SPACE = "\u0120"  # "Ġ": the printable stand-in ByteLevel uses for the space byte
_BYTE_LEVEL_DECODER = decoders.ByteLevel()  # "Ċ" -> "\n"; a token of partial UTF-8 decodes to "\ufffd"


def word_start_table(tokenizer: Tokenizer, padded_size: int | None = None) -> np.ndarray:
    """(vocab,) bool: True where the token begins a word. Padded rows (never produced) are True."""
    spec = json.loads(tokenizer.to_str())
    starts_word = _start_rule(spec)
    size = max(padded_size or 0, tokenizer.get_vocab_size())
    table = np.ones(size, dtype=bool)
    for token, index in tokenizer.get_vocab(with_added_tokens=False).items():
        table[index] = starts_word(token)
    for added in spec.get("added_tokens", []):
        table[added["id"]] = True
    return table


def load_word_start_table(tokenizer_json: Path, padded_size: int | None = None) -> np.ndarray:
    """`word_start_table` of a saved `tokenizer.json`."""
    return word_start_table(Tokenizer.from_file(str(tokenizer_json)), padded_size)


def word_markers(spec: dict) -> tuple[str | None, str | None]:
    """(continuation prefix, word-start marker) of a tokenizer.json: at most one is set; neither for a
    vocabulary without either convention (WordLevel). The ByteLevel marker is BYTE_LEVEL_SPACE."""
    model = spec.get("model") or {}
    prefix = model.get("continuing_subword_prefix")
    if model.get("type") == "WordPiece" or prefix:
        return prefix or "##", None
    for node in _walk(spec.get("pre_tokenizer")):
        if node.get("type") == "Metaspace":
            return None, node.get("replacement", "\u2581")
        if node.get("type") == "ByteLevel":
            return None, BYTE_LEVEL_SPACE
    return None, None


def _start_rule(spec: dict) -> Callable[[str], bool]:
    """Whether a vocabulary entry (as the model spells it) begins a word, by the tokenizer's convention."""
    prefix, marker = word_markers(spec)
    if prefix:
        return lambda token: not token.startswith(prefix)
    if marker == BYTE_LEVEL_SPACE:
        return _byte_level_starts_word
    if marker:
        return lambda token: token.startswith(marker)
    raise ConfigError(
        f"masking.whole_word=true: cannot tell word starts in this {(spec.get('model') or {}).get('type')} tokenizer "
        "(no continuation prefix, no Metaspace or ByteLevel pre-tokenizer); set masking.whole_word=false")


def _byte_level_starts_word(token: str) -> bool:
    """A byte-level token after a space ("Ġword"), or of whitespace alone ("Ċ", "ĉ", "ĠĊ"). ByteLevel's
    regex split never leaves whitespace at the end of a token holding other text, so every token that ends
    in whitespace is whitespace alone, and the word after it falls in the unit that token opens."""
    return token.startswith(BYTE_LEVEL_SPACE) or _BYTE_LEVEL_DECODER.decode([token]).isspace()


def _walk(node):
    """Every pre-tokenizer inside a (possibly nested) Sequence."""
    if not isinstance(node, dict):
        return
    yield node
    for child in node.get("pretokenizers", []):
        yield from _walk(child)
