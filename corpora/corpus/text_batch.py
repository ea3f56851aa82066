"""A batch of documents as one array of code points, for rules and hashes computed in numpy passes.

Per-document Python over words (split, casefold, Counter, n-gram tuples, a regex per rule) was most
of the corpus stage's time. Here the texts of a batch are joined (NUL between them) and read as
UTF-32 code points; what each character is (its class for the quality rules, whether it is a space
or a word character, its case-folded form) is looked up in tables of the Basic Multilingual Plane
built once per process, and anything above it one by one in Python. Which document a position
belongs to comes from the texts' lengths; a NUL inside a text (possible only with
`normalise.remove_control_chars` off) counts as a space.

Tokens are runs: whitespace-separated words (what `str.split()` gives) and Unicode words (what
`re`'s `\\w+` finds). A run's hash is a polynomial in its code points, read off one prefix sum of
the whole batch and mixed by murmur3's finaliser, so equal runs hash equally wherever they stand.

Case folding here maps one code point to one (`str.casefold` where that gives one character,
otherwise `str.lower`): `ß` stays `ß`. `expands` marks the documents where that differs from
`str.casefold`, for callers that must match it exactly.
"""

from __future__ import annotations

import unicodedata
from functools import cached_property, lru_cache

import numpy as np

SEPARATOR = "\x00"
# The metadata key under which a step that read a document in a TextBatch leaves (batch, row), so
# that later steps reuse the batch and what was computed on it (keys starting with "_" are working
# data and never written out).
BATCH_KEY = "_batch"
_BMP = 0x10000
CATEGORIES = ("L", "Lu", "N", "P", "S", "Z", "C")  # the classes of `quality_filters.char_class`
_NOT_TEXT = len(CATEGORIES)  # the separator's category: counted nowhere
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd constant (golden ratio) combining hashes


def fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser: every input bit affects every output bit."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xFF51AFD7ED558CCD)
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xC4CEB9FE1A85EC53)
        return x ^ (x >> np.uint64(33))


def combine(hashes: np.ndarray, owner: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, starts) of every run of `n` consecutive items that belong to one owner, in order:
    each run's combined hash and the index of its first item (its owner is `owner[starts]`)."""
    span = len(hashes) - n + 1
    if span <= 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    combined = hashes[:span].copy()
    with np.errstate(over="ignore"):
        for offset in range(1, n):
            combined = combined * _MIX + hashes[offset:offset + span]
    starts = np.flatnonzero(owner[:span] == owner[n - 1:])
    return combined[starts], starts


# per code point, one byte: its category (bits 0-2, an index into CATEGORIES) and four flags
SPACE, WORD, LETTER, EXPANDS = 8, 16, 32, 64
# SPACE: str.isspace(); WORD: re's \w (str.isalnum() or "_"); LETTER: \w but not \d nor "_", what
# makes a word alphabetic for the quality rules; EXPANDS: str.casefold() gives more than one character


def _describe(c: str) -> tuple[int, int]:
    """(flags byte, case-folded code point) of one character."""
    cat = unicodedata.category(c)
    flags = 1 if cat in ("Lu", "Lt") else CATEGORIES.index(cat[0]) if cat[0] in "LNPSZ" else 6
    word = c.isalnum() or c == "_"
    flags |= (SPACE if c.isspace() else 0) | (WORD if word else 0)
    flags |= LETTER if word and not c.isdecimal() and c != "_" else 0
    folded = c.casefold()
    if len(folded) != 1:
        flags |= EXPANDS
        folded = c.lower() if len(c.lower()) == 1 else c
    return flags, ord(folded)


@lru_cache(maxsize=1)
def char_tables() -> tuple[np.ndarray, np.ndarray]:
    """(flags, fold) for every BMP code point (about 0.1 s, once per process)."""
    flags, fold = zip(*(_describe(chr(i)) for i in range(_BMP)))
    flags, fold = np.array(flags, dtype=np.uint8), np.array(fold, dtype=np.uint32)
    flags[0] = _NOT_TEXT | SPACE  # the separator between documents
    return flags, fold


_BASE = 0x100000001B3  # odd, so invertible modulo 2**64 (the 64-bit FNV prime)
_MAX_POWERS = 1 << 22  # longer inputs are hashed a run at a time: bounds the tables at 64 MiB
_powers: list[np.ndarray] = [np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)]


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE**i and BASE**-i modulo 2**64 for i < n (kept per process, grown by doubling)."""
    if len(_powers[0]) < n:
        size = min(_MAX_POWERS + 1, max(n, 2 * len(_powers[0]), 1 << 16))
        inverse = 1
        for _ in range(7):  # Newton's iteration: each step doubles the correct low bits
            inverse = inverse * (2 - _BASE * inverse) % 2**64
        for k, base in enumerate((_BASE, inverse)):
            table = np.full(size, base, dtype=np.uint64)
            table[0] = 1
            with np.errstate(over="ignore"):
                _powers[k] = np.cumprod(table, dtype=np.uint64)
    return _powers[0][:n], _powers[1][:n]


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of True in `mask`."""
    padded = np.zeros(len(mask) + 2, dtype=bool)
    padded[1:-1] = mask
    return np.flatnonzero(padded[1:] & ~padded[:-1]), np.flatnonzero(padded[:-1] & ~padded[1:])


def batches_of(docs: list) -> list[tuple["TextBatch", np.ndarray, list[int]]]:
    """`docs` grouped by the TextBatch an earlier step read them in (where each text is still the
    very string that was read), the rest in one new batch: (batch, rows in it, positions in docs)."""
    groups: dict[int, tuple[TextBatch, list[int], list[int]]] = {}
    fresh: list[int] = []
    for position, doc in enumerate(docs):
        batch, row = doc.metadata.get(BATCH_KEY, (None, 0))
        if batch is not None and batch.texts[row] is doc.text:
            groups.setdefault(id(batch), (batch, [], []))
            groups[id(batch)][1].append(row)
            groups[id(batch)][2].append(position)
        else:
            fresh.append(position)
    out = [(batch, np.array(rows), positions) for batch, rows, positions in groups.values()]
    if fresh:
        out.append((TextBatch([docs[p].text for p in fresh]), np.arange(len(fresh)), fresh))
    return out


def segment_hashes(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """One hash per consecutive segment of `values` (segments of the given lengths, in order; an
    empty one hashes to 0): the polynomial sum(v_i * BASE**i), i counted from the segment's start,
    mixed with the length. Equal segments hash equally wherever they stand."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(values) <= _MAX_POWERS:
        return _segment_hashes(values, lengths)
    out, first, ends = [], 0, np.cumsum(lengths)
    while first < len(lengths):  # a huge input: pieces of whole segments that fit the power tables
        start = int(ends[first] - lengths[first])
        last = int(np.searchsorted(ends, start + _MAX_POWERS, side="right"))
        if last == first:  # one segment longer than the tables on its own
            out.append(_long_segment_hash(values[start:ends[first]]))
            last = first + 1
        else:
            out.append(_segment_hashes(values[start:ends[last - 1]], lengths[first:last]))
        first = last
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


def _segment_hashes(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """segment_hashes for inputs within the power tables: all segments read off one prefix sum."""
    up, down = _power_tables(len(values) + 1)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(values) + 1, dtype=np.uint64)
        np.cumsum(values.astype(np.uint64) * up[:len(values)], out=prefix[1:])
        sums = (prefix[ends] - prefix[starts]) * down[starts]
        return np.where(lengths > 0, fmix64(sums + lengths.astype(np.uint64) * _MIX), np.uint64(0))


def _long_segment_hash(values: np.ndarray) -> np.ndarray:
    """The hash of one segment longer than the power tables, summed a table's length at a time."""
    total = 0
    for offset in range(0, len(values), _MAX_POWERS):
        piece = values[offset:offset + _MAX_POWERS]
        with np.errstate(over="ignore"):
            piece_sum = int((piece.astype(np.uint64) * _power_tables(len(piece))[0]).sum(dtype=np.uint64))
        total = (total + piece_sum * pow(_BASE, offset, 2**64)) % 2**64
    return fmix64(np.array([(total + len(values) * int(_MIX)) % 2**64], dtype=np.uint64))


class TextBatch:
    """The code points of a batch of texts, with what the rules and hashes need, each computed on first use."""

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.cache: dict = {}  # values later steps computed for the whole batch (see `cached`)
        self.size = len(texts)
        self.lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        joined = SEPARATOR.join(texts)
        self.cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        self._clipped = np.minimum(self.cps, _BMP - 1)
        self._astral = np.flatnonzero(self.cps >= _BMP)  # emoji, historic scripts, rare CJK: few

    def _lookup(self, column: int) -> np.ndarray:
        out = char_tables()[column][self._clipped]
        if len(self._astral):
            out[self._astral] = [_describe(chr(c))[column] for c in self.cps[self._astral].tolist()]
        return out

    @cached_property
    def flags(self) -> np.ndarray:
        return self._lookup(0)

    def has(self, flag: int) -> np.ndarray:
        return (self.flags & flag).astype(bool)

    @cached_property
    def _char_owner(self) -> np.ndarray:
        return np.repeat(np.arange(self.size), self.lengths + 1)[:len(self.cps)]

    def owner(self, positions: np.ndarray) -> np.ndarray:
        """The batch index of the document holding each code-point position."""
        return self._char_owner[positions]

    @cached_property
    def folded(self) -> np.ndarray:
        return self._lookup(1)

    @cached_property
    def expands(self) -> np.ndarray:
        """(D,) bool: documents whose `str.casefold()` is not the one-to-one fold used here."""
        positions = np.flatnonzero(self.has(EXPANDS))
        out = np.zeros(self.size, dtype=bool)
        out[self.owner(positions)] = True
        return out

    def category_counts(self) -> np.ndarray:
        """(D, len(CATEGORIES)) characters of each class per document."""
        counts = np.bincount(self._char_owner * (_NOT_TEXT + 1) + (self.flags & 7),
                             minlength=self.size * (_NOT_TEXT + 1))
        return counts.reshape(self.size, _NOT_TEXT + 1)[:, :_NOT_TEXT]

    @cached_property
    def _nonspace(self) -> np.ndarray:
        return ~self.has(SPACE)

    @cached_property
    def space_words(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends): the whitespace-separated words, as `str.split()` gives them."""
        return runs(self._nonspace)

    @cached_property
    def space_word_owner(self) -> np.ndarray:
        """The document of each whitespace-separated word."""
        return self.owner(self.space_words[0])

    @cached_property
    def words_per_doc(self) -> np.ndarray:
        """(D,) whitespace-separated words per document: `len(text.split())`."""
        return np.bincount(self.space_word_owner, minlength=self.size)

    @cached_property
    def space_word_hashes(self) -> np.ndarray:
        """Hashes of the case-folded whitespace-separated words, in order."""
        starts, ends = self.space_words
        return segment_hashes(self.folded[self._nonspace], ends - starts)

    def letters_in(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Per run, how many of its characters are letters (word characters other than digits and `_`)."""
        cumulative = np.concatenate(([0], np.cumsum(self.has(LETTER))))
        return cumulative[ends] - cumulative[starts]

    def cached(self, key: str, compute):
        """`compute(self)`, computed once per batch whichever step asks first."""
        if key not in self.cache:
            self.cache[key] = compute(self)
        return self.cache[key]

    def attach(self, docs: list) -> None:
        """Leave this batch (and each document's row in it) in the metadata of `docs`, its texts."""
        for row, doc in enumerate(docs):
            doc.metadata[BATCH_KEY] = (self, row)

    @cached_property
    def unicode_words(self) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, owner) of the case-folded `\\w+` words, in order."""
        word = self.has(WORD)
        starts, ends = runs(word)
        return segment_hashes(self.folded[word], ends - starts), self.owner(starts)

    def nonspace_chars(self) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, owner) of every non-space character (case-folded), in order: the tokens of
        scripts written without spaces."""
        positions = np.flatnonzero(self._nonspace)
        return fmix64(self.folded[positions].astype(np.uint64)), self.owner(positions)

    def exact_hashes(self) -> np.ndarray:
        """Per document, a hash of its case-folded words in order: equal for documents that differ
        only in case and spacing (the text as `" ".join(text.casefold().split())`)."""
        return segment_hashes(self.space_word_hashes, self.words_per_doc)
