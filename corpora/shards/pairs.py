"""Sentence-pair examples for NSP (BERT, gaBERT, LEGAL-BERT) and SOP (ALBERT; HerBERT's SSO is its kin).

Built as Google BERT's `create_pretraining_data.py` builds them, per document of the training split:
sentences are gathered into a chunk until it reaches the target length (L - 3 tokens; with probability
`short_seq_prob` a random length from 2, so the model also sees short inputs); the chunk is cut at a
random sentence boundary into A and B.
- NSP: with probability 1/2, B is replaced by sentences from a random start in another training
  document (label 1, "random next") and the sentences it displaced go back to the document;
  otherwise B is the real continuation (label 0). Held-out documents are never drawn.
- SOP: B is always the real continuation; with probability 1/2 A and B are swapped (label 1).
Then the longer segment loses tokens from its front or back (a coin each time) until the pair fits.

One deliberate difference: where Google's code makes a chunk of one sentence always a random-next
example (so NSP drifts above 50 % random on short documents), here the next sentence joins the chunk
when the coin asked for a real continuation; only a document's last lone sentence falls back to a
random next, counted as `forced_random_next`. And where Google flips a fair coin for every example, here
the coin is flipped only while the labels are even and otherwise the label that evens them is taken, so
NSP labels are 50/50 to within one example even with forced random nexts (and SOP's swaps alike). SOP cannot use a lone last sentence: it is left out and
counted. Documents of one sentence give no real pair at all: above `max_single_sentence_doc_share` of
them the stage stops with an error instead of writing mostly-random pairs.

The training documents are held in memory while the pairs are built (Google's script does the same
per input file), each sentence a numpy array of token ids: 7.6 bytes per token with the arrays' own
overhead on the 20 MB benchmark corpus (4.1 M tokens in 176,870 sentences; Python lists took 33.6), so
a billion-token corpus needs some 8 GB; beyond that, sharding the document list would be the next step.

Row layout, (examples, L): [CLS] A [SEP] B [SEP] [PAD]...; beside it (examples, 3) int32: len(A),
len(B), label. Token types and the attention mask follow from the lengths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bertforge.common.errors import ConfigError, CorpusInputError

OBJECTIVES = ("mlm", "mlm_nsp", "mlm_sop")


@dataclass(frozen=True)
class PairSettings:
    """How the shards stage builds sentence pairs (from `training.objective` and `shards.*`)."""

    objective: str
    short_seq_prob: float
    max_single_sentence_doc_share: float
    seed: int

    def check(self) -> None:
        if self.objective not in OBJECTIVES[1:]:
            raise ConfigError(f"training.objective={self.objective!r} is not one of {list(OBJECTIVES)}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ConfigError(f"shards.short_seq_prob={self.short_seq_prob} must be in [0, 1]")

    def payload(self) -> dict:
        return asdict(self)


def pair_files(folder: Path, split: str, seq_len: int) -> tuple[Path, Path]:
    """(rows file, info file) of the sentence-pair examples of one split and length."""
    return folder / f"{split}-{seq_len}.pairs.bin", folder / f"{split}-{seq_len}.pairs_info.bin"


class PairBuilder:
    """Pair examples of one row length from documents given as lists of tokenised sentences."""

    def __init__(self, docs: list[list[np.ndarray]], seq_len: int, settings: PairSettings):
        self.docs, self.settings = docs, settings
        self.max_tokens = seq_len - 3  # [CLS] A [SEP] B [SEP]
        self.rng = np.random.default_rng([settings.seed, seq_len])
        self.counts = {"examples": 0, "random_next": 0, "swapped": 0, "forced_random_next": 0,
                       "lone_sentences_left_out": 0, "truncated_tokens": 0}
        self.balance = 0  # random-next examples minus real-next ones so far

    def examples(self):
        """Yields (A tokens, B tokens, label) over every document, in document order."""
        for index in range(len(self.docs)):
            yield from self._document(index)

    def _document(self, index: int):
        doc, rng, nsp = self.docs[index], self.rng, self.settings.objective == "mlm_nsp"
        target = self.max_tokens if rng.random() >= self.settings.short_seq_prob else \
            int(rng.integers(2, self.max_tokens + 1))
        chunk, length, i = [], 0, 0
        while i < len(doc):
            chunk.append(doc[i])
            length += len(doc[i])
            if i == len(doc) - 1 or length >= target:
                random_next = nsp and self._next_is_random()
                if len(chunk) == 1 and not random_next and i + 1 < len(doc):
                    i += 1  # a real continuation was asked for: the next sentence becomes B
                    chunk.append(doc[i])
                a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                a = np.concatenate(chunk[:a_end])
                if nsp and (random_next or len(chunk) == 1):
                    self.counts["forced_random_next"] += not random_next
                    b = self._random_segment(index, target - len(a))
                    i -= len(chunk) - a_end  # the displaced sentences are used again
                    label = 1
                elif len(chunk) == 1:  # SOP with a document's lone last sentence: no order to learn
                    self.counts["lone_sentences_left_out"] += 1
                    chunk, length, i = [], 0, i + 1
                    continue
                else:
                    b = np.concatenate(chunk[a_end:])
                    label = int(self._next_is_random())  # SOP: swapped
                    if label:
                        a, b = b, a
                yield self._fit(a, b, label)
                chunk, length = [], 0
            i += 1

    def _next_is_random(self) -> bool:
        """A coin when the labels are even so far, else the label that evens them (training order is
        shuffled, so the alternation is invisible to the model)."""
        return self.rng.random() < 0.5 if self.balance == 0 else self.balance < 0

    def _random_segment(self, index: int, target: int) -> np.ndarray:
        """Sentences from a random start in another document, at least one, until `target` tokens."""
        other = index
        for _ in range(10):  # as Google's code: another document, almost surely
            other = int(self.rng.integers(len(self.docs)))
            if other != index:
                break
        doc = self.docs[other]
        segment, length = [], 0
        for sentence in doc[int(self.rng.integers(len(doc))):]:
            segment.append(sentence)
            length += len(sentence)
            if length >= target:
                break
        return np.concatenate(segment)

    def _fit(self, a: np.ndarray, b: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Trim the longer segment (b on a tie), a token from its front or back at random, until the pair
        fits; one draw per token, as Google's code."""
        span = {"a": [0, len(a)], "b": [0, len(b)]}
        while sum(end - start for start, end in span.values()) > self.max_tokens:
            longer = span["a"] if span["a"][1] - span["a"][0] > span["b"][1] - span["b"][0] else span["b"]
            self.counts["truncated_tokens"] += 1
            if self.rng.random() < 0.5:
                longer[0] += 1
            else:
                longer[1] -= 1
        a, b = a[slice(*span["a"])], b[slice(*span["b"])]
        self.counts["examples"] += 1
        self.counts["random_next" if self.settings.objective == "mlm_nsp" else "swapped"] += label
        self.balance += 1 if label else -1
        return a, b, label


def write_pairs(docs: list[list[np.ndarray]], seq_len: int, settings: PairSettings, ids: dict[str, int], dtype,
                rows_path: Path, info_path: Path) -> dict:
    """Build the pair examples of `docs` for rows of `seq_len` and write them; returns their counts."""
    builder = PairBuilder(docs, seq_len, settings)
    with open(rows_path, "wb") as rows_out, open(info_path, "wb") as info_out:
        for a, b, label in builder.examples():
            row = np.full(seq_len, ids["pad"], dtype=dtype)
            row[0], row[1 + len(a)], row[2 + len(a) + len(b)] = ids["cls"], ids["sep"], ids["sep"]
            row[1:1 + len(a)], row[2 + len(a):2 + len(a) + len(b)] = a, b
            rows_out.write(row.tobytes())
            info_out.write(np.array([len(a), len(b), label], dtype=np.int32).tobytes())
    counts = builder.counts
    if counts["examples"] == 0:
        raise CorpusInputError(str(rows_path.parent), f"gave no sentence pair of {seq_len} tokens",
                               "Add text, or use training.objective=mlm.")
    counts["label_share"] = (counts["random_next"] + counts["swapped"]) / counts["examples"]
    return counts


def check_documents(docs: list[list[np.ndarray]], settings: PairSettings, where: str) -> dict:
    """Counts of documents by sentences; a clear error when pairs cannot be real (one document, or too
    many documents of a single sentence)."""
    single = sum(len(d) < 2 for d in docs)
    if len(docs) < 2 and settings.objective == "mlm_nsp":
        raise CorpusInputError(where, f"has {len(docs)} training document(s): next-sentence prediction needs "
                               "another document to draw random next segments from", "Add text.")
    if docs and single / len(docs) > settings.max_single_sentence_doc_share:
        raise CorpusInputError(
            where, f"{single} of {len(docs)} training documents have a single sentence, above "
            f"shards.max_single_sentence_doc_share={settings.max_single_sentence_doc_share}: "
            f"{settings.objective} pairs would be almost all random or missing",
            "Group sentences into documents (source.inputs[].sentences_per_doc for CoNLL-U, txt_unit=file or "
            "paragraph for text), raise shards.max_single_sentence_doc_share, or use training.objective=mlm.")
    return {"documents": len(docs), "single_sentence_documents": single,
            "sentences": sum(len(d) for d in docs)}


def load_pairs(folder: Path, seq_len: int, fmt: dict) -> tuple[np.memmap, np.memmap] | None:
    """The training pair rows (examples, L) and their info (examples, 3), or None without pairs."""
    if not fmt.get("pairs"):
        return None
    rows_path, info_path = pair_files(Path(folder), "train", seq_len)
    rows = np.memmap(rows_path, dtype=fmt["dtype"], mode="r").reshape(-1, seq_len)
    return rows, np.memmap(info_path, dtype=np.int32, mode="r").reshape(-1, 3)
