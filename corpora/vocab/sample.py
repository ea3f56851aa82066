"""The deterministic, bounded training sample of the vocab stage.

A first streaming pass over the training split measures it (documents, characters, alphabet); the
sample then keeps each document whose id hashes below the fraction that meets the caps, so it is
spread over the whole corpus, identical on every run, and never held in memory.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import xxhash
from tokenizers.normalizers import Normalizer

from corpora.documents import iter_documents

_SAMPLE_SEED = 7  # independent of the held-out hash (seed 0), so the sample is not biased by it
_BUCKETS = 1 << 32


@dataclass
class TrainingSample:
    """Iterable of training texts; after iteration, `documents` and `chars` say what was yielded."""

    corpus_dir: Path
    heldout_percent: float
    keep_fraction: float
    max_docs: int
    max_chars: int
    split_documents: int = 0
    split_chars: int = 0
    alphabet: set[str] = field(default_factory=set)
    """Distinct characters of the training split as the trainer sees them (after the normaliser), no whitespace."""
    documents: int = 0
    chars: int = 0

    @classmethod
    def plan(cls, corpus_dir: Path, heldout_percent: float, max_docs: int, max_chars: int,
             normalizer: Normalizer | None = None) -> "TrainingSample":
        """Measure the training split in one streaming pass and fix the sampling fraction; the alphabet is
        counted after `normalizer` (the tokenizer's), as the trainer counts it."""
        docs = chars = 0
        alphabet = _Alphabet(normalizer)
        for doc in iter_documents(corpus_dir, "train", heldout_percent):
            text = doc["text"]
            docs, chars = docs + 1, chars + len(text)
            alphabet.update(text)
        fraction = 1.0
        if max_chars and chars > max_chars:
            fraction = min(fraction, max_chars / chars)
        if max_docs and docs > max_docs:
            fraction = min(fraction, max_docs / docs)
        return cls(Path(corpus_dir), heldout_percent, fraction, max_docs, max_chars, docs, chars, alphabet.chars())

    def is_sampled(self, doc_id: str) -> bool:
        return xxhash.xxh64_intdigest(doc_id.encode("utf-8"), seed=_SAMPLE_SEED) % _BUCKETS < self.keep_fraction * _BUCKETS

    def __iter__(self) -> Iterator[str]:
        self.documents = self.chars = 0
        for doc in iter_documents(self.corpus_dir, "train", self.heldout_percent):
            if self.keep_fraction < 1.0 and not self.is_sampled(doc["id"]):
                continue
            if (self.max_docs and self.documents >= self.max_docs) or (self.max_chars and self.chars >= self.max_chars):
                return  # the hash fraction is approximate; the caps are hard
            self.documents, self.chars = self.documents + 1, self.chars + len(doc["text"])
            yield doc["text"]


class _Alphabet:
    """Distinct characters of texts after a normaliser, which may merge, split, drop or change them.

    Normalising every text would cost several times the plan's pass, so a text is normalised only when it
    holds a character not seen before, or one that Unicode composition can merge with the character before
    it (`_composing`): otherwise the normaliser maps its characters one by one, and each was already mapped."""

    def __init__(self, normalizer: Normalizer | None):
        self.normalizer, self.raw, self.normalized = normalizer, set(), set()

    def update(self, text: str) -> None:
        chars = set(text)
        if self.normalizer is None:
            self.raw |= chars
        elif not chars <= self.raw or not chars.isdisjoint(_composing()):
            self.raw |= chars
            self.normalized.update(self.normalizer.normalize_str(text))

    def chars(self) -> set[str]:
        return {ch for ch in (self.normalized if self.normalizer else self.raw) if not ch.isspace()}


@functools.cache
def _composing() -> frozenset[str]:
    """Characters that NFC/NFKC composition can merge into the character before them: every part but the
    first of a canonical decomposition (combining accents, some Indic vowel signs), and Hangul's vowel and
    final jamo (composed by rule, not listed)."""
    found = {chr(code) for code in range(0x1161, 0x1176)} | {chr(code) for code in range(0x11A8, 0x11C3)}
    for code in range(0x110000):
        decomposition = unicodedata.decomposition(chr(code))
        if decomposition and not decomposition.startswith("<"):  # "<compat> ..." is not canonical
            found.update(chr(int(part, 16)) for part in decomposition.split()[1:])
    return frozenset(found)
