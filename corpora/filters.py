"""Document filters as datatrove steps. Each returns a named reason so removals are reported."""

from __future__ import annotations

import re

import xxhash
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

_SPACE = re.compile(r"\s+")


class LengthFilter(BaseFilter):
    """Keeps documents within word and character bounds (whitespace words: no language assumed)."""

    name = "📏 length"

    def __init__(self, min_words: int = 0, max_words: int = 0, min_chars: int = 0, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_words, self.max_words, self.min_chars = min_words, max_words, min_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        words = len(doc.text.split())
        if words < self.min_words:
            return False, "too_few_words"
        if self.max_words and words > self.max_words:
            return False, "too_many_words"
        if len(doc.text) < self.min_chars:
            return False, "too_few_chars"
        return True


def normalised_text_hash(text: str) -> int:
    """64-bit hash of the text with case folded and whitespace runs collapsed."""
    return xxhash.xxh64_intdigest(_SPACE.sub(" ", text.casefold()).strip().encode("utf-8"))


class ExactDedupFilter(BaseFilter):
    """Drops a document whose normalised text was already seen in this task; the first copy stays.

    Memory: 8 bytes (plus set overhead) per kept document.
    """

    name = "🫂 exact dedup"

    def __init__(self, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self._seen: set[int] = set()

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        digest = normalised_text_hash(doc.text)
        if digest in self._seen:
            return False, "exact_duplicate"
        self._seen.add(digest)
        return True
