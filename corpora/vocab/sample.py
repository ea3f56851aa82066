"""The deterministic, bounded training sample of the vocab stage.

A first streaming pass over the training split measures it (documents, characters, alphabet); the
sample then keeps each document whose id hashes below the fraction that meets the caps, so it is
spread over the whole corpus, identical on every run, and never held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import xxhash

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
    documents: int = 0
    chars: int = 0

    @classmethod
    def plan(cls, corpus_dir: Path, heldout_percent: float, max_docs: int, max_chars: int,
             lowercase: bool = False) -> "TrainingSample":
        """Measure the training split in one streaming pass and fix the sampling fraction."""
        docs = chars = 0
        alphabet: set[str] = set()
        for doc in iter_documents(corpus_dir, "train", heldout_percent):
            text = doc["text"]
            docs, chars = docs + 1, chars + len(text)
            alphabet.update(text.lower() if lowercase else text)
        alphabet -= {" ", "\n", "\t", "\r"}
        fraction = 1.0
        if max_chars and chars > max_chars:
            fraction = min(fraction, max_chars / chars)
        if max_docs and docs > max_docs:
            fraction = min(fraction, max_docs / docs)
        return cls(Path(corpus_dir), heldout_percent, fraction, max_docs, max_chars, docs, chars, alphabet)

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
