"""MinHash signatures of a batch of documents by one-permutation hashing, in whole-batch numpy passes.

Classic MinHash evaluates every shingle under every one of K hash functions (S x K work per
document: 128 x ~150 products for a 1 KB document, the largest cost of the corpus stage when it
was done that way). Here each shingle is hashed once and falls into one of K bins (one-permutation
hashing, Li, Owen & Zhang 2012); a bin keeps its smallest value. A bin no shingle fell into borrows
the value of another bin, the first filled one of a fixed pseudo-random sequence per bin ("optimal
densification", Shrivastava 2017), so two documents agree on a bin with probability equal to their
Jaccard similarity, as with K independent permutations, for O(S) work.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from corpora.corpus.text_batch import TextBatch, combine, fmix64

_EMPTY = np.uint32(0xFFFFFFFF)
SHINGLE_UNITS = ("words", "chars")
_DENSIFY_TRIES = 64  # borrowing attempts drawn per bin; a bin still empty after them takes the next filled bin


def shingles(batch: TextBatch, size: int, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, owner) of the `size`-token shingles of every document of `batch` (case-folded).

    Tokens are Unicode words (`\\w+`: no tokeniser model, language-neutral for scripts written with
    spaces) or, for `unit=chars`, non-space characters (Chinese, Japanese, Thai). A document
    shorter than one shingle gives one shingle of all its tokens; one without tokens gives none.
    """
    if unit not in SHINGLE_UNITS:  # never read a misspelt unit as the other one
        raise ValueError(f"shingle unit {unit!r} is not one of {SHINGLE_UNITS}")
    hashes, owner = batch.unicode_words if unit == "words" else batch.nonspace_chars()
    whole, starts = combine(hashes, owner, size)
    out_hashes, out_owner = [whole], [owner[starts]]
    counts = np.bincount(owner, minlength=batch.size)
    for doc in np.flatnonzero((counts > 0) & (counts < size)):
        mine = owner == doc
        out_hashes.append(combine(hashes[mine], owner[mine], int(counts[doc]))[0])
        out_owner.append(np.array([doc]))
    return fmix64(np.concatenate(out_hashes)), np.concatenate(out_owner)


def shingle_set(text: str, size: int = 5, unit: str = "words") -> set[int]:
    """The shingle hashes of one text, as a set (for Jaccard similarities in tests and benchmarks)."""
    return set(shingles(TextBatch([text]), size, unit)[0].tolist())


@lru_cache(maxsize=8)
def _borrow_table(num_bins: int, seed: int) -> np.ndarray:
    """(num_bins, tries): the bins an empty bin borrows from, in order; the same for every document."""
    return np.random.default_rng(seed).integers(0, num_bins, size=(num_bins, _DENSIFY_TRIES))


def signatures(batch: TextBatch, num_bins: int, size: int, unit: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(signatures (D, num_bins) uint32, has_signature (D,) bool) of the documents of `batch`."""
    hashes, owner = shingles(batch, size, unit)
    hashes = fmix64(hashes ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64))
    # the bin from the high 32 bits (multiply-shift spreads them evenly over any bin count), the value from the low 32
    bins = ((hashes >> np.uint64(32)) * np.uint64(num_bins)) >> np.uint64(32)
    flat = owner * num_bins + bins.astype(np.int64)
    sig = np.full(batch.size * num_bins, _EMPTY, dtype=np.uint32)
    np.minimum.at(sig, flat, (hashes & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    filled = np.zeros(batch.size * num_bins, dtype=bool)
    filled[flat] = True
    sig, filled = sig.reshape(batch.size, num_bins), filled.reshape(batch.size, num_bins)
    has_sig = filled.any(axis=1)
    _densify(sig, filled, has_sig, _borrow_table(num_bins, seed))
    return sig, has_sig


def _densify(sig: np.ndarray, filled: np.ndarray, has_sig: np.ndarray, table: np.ndarray) -> None:
    """Give each empty bin (in place) the value of the first filled bin of its borrowing sequence;
    after `_DENSIFY_TRIES` misses (documents of a handful of shingles), of the next filled bin."""
    rows, cols = np.nonzero(~filled & has_sig[:, None])
    for attempt in range(table.shape[1]):
        if not len(rows):
            return
        source = table[cols, attempt]
        hit = filled[rows, source]
        sig[rows[hit], cols[hit]] = sig[rows[hit], source[hit]]
        rows, cols = rows[~hit], cols[~hit]
    num_bins = sig.shape[1]
    for row, col in zip(rows.tolist(), cols.tolist()):
        step = 1
        while not filled[row, (col + step) % num_bins]:
            step += 1
        sig[row, col] = sig[row, (col + step) % num_bins]
