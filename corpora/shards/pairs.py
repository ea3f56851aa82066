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
NSP labels are 50/50 to within one example (and SOP's swaps alike) unless forced random nexts outnumber the real
pairs a file's documents can give (many documents of one or two sentences): the manifest's `label_share` says so. SOP cannot use a lone last sentence: it is left out and
counted. Documents of one sentence give no real pair at all: above `max_single_sentence_doc_share` of
them the stage stops with an error instead of writing mostly-random pairs.

The pairs are built per document file of the corpus folder, as Google's script builds them per input
file: a random next segment comes from another training document of the same file, and the draws are seeded
by the file's place in the corpus. The shards stage's tokenise tasks build them
(`corpora.shards.parts`), each for its own files, so the work spreads over the tasks locally or on a cluster and
the examples are the same bytes for any number of tasks. A task holds one file's training documents in memory
at a time, each sentence a numpy array of token ids: 7.6 bytes per token with the arrays' own overhead on the
20 MB benchmark corpus (4.1 M tokens in 176,870 sentences; Python lists took 33.6). A corpus built with more
`corpus.tasks` has more, smaller files. The NSP labels are 50/50 to within one example per file (see above).

Row layout, (examples, L): [CLS] A [SEP] B [SEP] [PAD]...; beside it (examples, 3) int32: len(A),
len(B), label. Token types and the attention mask follow from the lengths.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from bertforge.common.errors import ConfigError, CorpusInputError
from corpora.documents import is_heldout, read_documents
from corpora.shards.rows import encoded_ahead
from corpora.shards.sentences import split_sentences

OBJECTIVES = ("mlm", "mlm_nsp", "mlm_sop")
SENTENCE_BATCH = 4096  # sentences per call of the batch encoder
_COPY_BYTES = 1 << 24  # bytes per read while joining the tasks' parts


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

    def __init__(self, docs: list[list[np.ndarray]], seq_len: int, settings: PairSettings, file_index: int):
        self.docs, self.settings = docs, settings
        self.max_tokens = seq_len - 3  # [CLS] A [SEP] B [SEP]
        # the last 1 keeps these draws apart from the static masks' ([seed, L, copy, first row]; numpy's
        # seeding ignores trailing zeros, so [seed, L, 0] would be the first mask chunk's stream)
        self.rng = np.random.default_rng([settings.seed, seq_len, file_index, 1])
        self.counts = {"examples": 0, "random_next": 0, "swapped": 0, "forced_random_next": 0,
                       "lone_sentences_left_out": 0, "truncated_tokens": 0, "segment_tokens": 0}
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
                else:  # B is A's real continuation: NSP's label 0, or SOP's coin for swapping them
                    b = np.concatenate(chunk[a_end:])
                    label = 0 if nsp else int(self._next_is_random())
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
        trims = len(a) + len(b) - self.max_tokens
        if trims > 0:
            # Which segment each trim takes follows from the lengths alone: the longer one until they are
            # level, then b, a, b, a... (b on a tie). So the coins are drawn in one call, the same stream
            # as one draw per token, and each segment loses its front to the coins below 0.5.
            lead = min(trims, abs(len(a) - len(b)))
            takes_a = np.zeros(trims, bool)
            takes_a[:lead] = len(a) > len(b)
            takes_a[lead + 1::2] = True
            front = self.rng.random(trims) < 0.5
            a_front, b_front = int((front & takes_a).sum()), int((front & ~takes_a).sum())
            a_trims = int(takes_a.sum())
            a = a[a_front:len(a) - (a_trims - a_front)]
            b = b[b_front:len(b) - (trims - a_trims - b_front)]
            self.counts["truncated_tokens"] += trims
        self.counts["examples"] += 1
        self.counts["segment_tokens"] += len(a) + len(b)  # the maskable tokens: all but [CLS], [SEP]s, padding
        self.counts["random_next" if self.settings.objective == "mlm_nsp" else "swapped"] += label
        self.balance += 1 if label else -1
        return a, b, label


def pair_part_files(parts: Path, seq_len: int, rank: int) -> tuple[Path, Path]:
    """(rows part, info part) of tokenise task `rank`'s pair examples of one length."""
    return parts / f"pairs-{seq_len}-{rank:05d}.rows", parts / f"pairs-{seq_len}-{rank:05d}.info"


def write_pair_parts(files: list[tuple[int, Path]], tokenizer: Tokenizer, heldout_percent: float,
                     settings: PairSettings, lengths: list[int], ids: dict[str, int], dtype, parts: Path,
                     rank: int) -> dict:
    """Task `rank`'s pair examples of every length, built file by file from the training documents of
    `files` ((place in the corpus, path)), in `parts`; its counts (JSON data), which `join_pair_parts` adds up."""
    counts = {"documents": {"documents": 0, "single_sentence_documents": 0, "sentences": 0},
              "sentences_from": {}, "by_seq_len": {str(length): {} for length in lengths}, "lone_document_files": []}
    handles = {length: [open(path, "wb") for path in pair_part_files(parts, length, rank)] for length in lengths}
    try:
        for file_index, path in files:
            docs = sentence_documents(read_documents(path), tokenizer, heldout_percent, dtype, counts["sentences_from"])
            _add(counts["documents"], document_counts(docs))
            if not docs:  # every document held out, or none with a sentence: nothing to pair, nothing lost
                continue
            if settings.objective == "mlm_nsp" and len(docs) == 1:
                counts["lone_document_files"].append(path.name)  # no other document to draw from: the stage says so
                continue
            for length in lengths:
                _add(counts["by_seq_len"][str(length)],
                     write_pairs(docs, length, settings, ids, dtype, *handles[length], file_index))
    finally:
        for pair in handles.values():
            for handle in pair:
                handle.close()
    return counts


def sentence_documents(documents, tokenizer: Tokenizer, heldout_percent: float, dtype, how: dict
                       ) -> list[list[np.ndarray]]:
    """The training documents among `documents` as lists of tokenised sentences (documents without a
    sentence left out); `how` counts the documents of each sentence-splitting rule. Sentences go to the
    encoder `SENTENCE_BATCH` at a time, encoded in a worker thread while this one splits the next ones."""
    docs: list[list[np.ndarray]] = []

    def sentences():
        for doc in documents:
            if is_heldout(doc["id"], heldout_percent):
                continue
            split, rule = split_sentences(doc["text"], doc.get("metadata"))
            how[rule] = how.get(rule, 0) + 1
            docs.append([])  # filled as its sentences come back from the encoder
            for sentence in split:
                yield len(docs) - 1, sentence

    for batch, encodings in encoded_ahead(sentences(), tokenizer, SENTENCE_BATCH, text=lambda item: item[1]):
        for (index, _), encoding in zip(batch, encodings):
            if ids := encoding.ids:  # each read of .ids builds a new list
                docs[index].append(np.array(ids, dtype))
    return [d for d in docs if d]


def write_pairs(docs: list[list[np.ndarray]], seq_len: int, settings: PairSettings, ids: dict[str, int], dtype,
                rows_out, info_out, file_index: int) -> dict:
    """Build the pair examples of one file's `docs` for rows of `seq_len`, append them to the open files;
    their counts."""
    builder = PairBuilder(docs, seq_len, settings, file_index)
    for a, b, label in builder.examples():
        row = np.full(seq_len, ids["pad"], dtype=dtype)
        row[0], row[1 + len(a)], row[2 + len(a) + len(b)] = ids["cls"], ids["sep"], ids["sep"]
        row[1:1 + len(a)], row[2 + len(a):2 + len(a) + len(b)] = a, b
        rows_out.write(row.tobytes())
        info_out.write(np.array([len(a), len(b), label], dtype=np.int32).tobytes())
    return builder.counts


def document_counts(docs: list[list[np.ndarray]]) -> dict:
    return {"documents": len(docs), "single_sentence_documents": sum(len(d) < 2 for d in docs),
            "sentences": sum(len(d) for d in docs)}


def join_pair_parts(task_counts: list[dict], settings: PairSettings, lengths: list[int], parts: Path,
                    folder: Path, where: str) -> dict:
    """Add up the tasks' counts, stop with a clear error where pairs cannot be real (too many documents of
    a single sentence, or a file with one training document for NSP), and join the tasks' parts in task
    order (the corpus's order) into the split's pair files; the manifest entry's counts."""
    total = {"documents": {}, "sentences_from": {}, "by_seq_len": {str(length): {} for length in lengths}}
    lone = []
    for task in task_counts:
        _add(total, {k: v for k, v in task.items() if k != "lone_document_files"})
        lone += task["lone_document_files"]
    check_documents(total["documents"], lone, settings, where)
    for length in lengths:
        paths = pair_files(folder, "train", length)
        for part, path in zip(zip(*(pair_part_files(parts, length, rank) for rank in range(len(task_counts)))),
                              paths):
            with open(path, "wb") as out:
                for piece in part:
                    with open(piece, "rb") as handle:
                        shutil.copyfileobj(handle, out, _COPY_BYTES)
        counts = total["by_seq_len"][str(length)]
        if not counts.get("examples"):
            raise CorpusInputError(where, f"gave no sentence pair of {length} tokens",
                                   "Add text, or use training.objective=mlm.")
        counts["label_share"] = (counts["random_next"] + counts["swapped"]) / counts["examples"]
        counts["segment_share"] = counts["segment_tokens"] / (counts["examples"] * length)
        # The masked slots of every pair row are those of a full row ([CLS] A [SEP] B [SEP]): each row masks
        # its own share of its tokens in the first of them (pretrain.objectives.masked_pairs), as BERT does.
        counts["maskable_share"] = (length - 3) / length
    return total


def check_documents(documents: dict, lone_document_files: list[str], settings: PairSettings, where: str) -> None:
    """A clear error when pairs cannot be real: NSP with a document file of one training document (or
    one in all), or too many training documents of a single sentence."""
    if settings.objective == "mlm_nsp" and documents["documents"] < 2:
        raise CorpusInputError(where, f"has {documents['documents']} training document(s): next-sentence prediction "
                               "needs another document to draw random next segments from", "Add text.")
    if settings.objective == "mlm_nsp" and lone_document_files:
        others = f" (and {len(lone_document_files) - 1} more files)" if len(lone_document_files) > 1 else ""
        raise CorpusInputError(
            f"{where}/documents/{lone_document_files[0]}", f"holds a single training document{others}: next-sentence "
            "prediction draws random next segments from another document of the same file",
            "Build the corpus with fewer corpus.tasks (each writes one document file), or add text.")
    single, total = documents["single_sentence_documents"], documents["documents"]
    if total and single / total > settings.max_single_sentence_doc_share:
        raise CorpusInputError(
            where, f"{single} of {total} training documents have a single sentence, above "
            f"shards.max_single_sentence_doc_share={settings.max_single_sentence_doc_share}: "
            f"{settings.objective} pairs would be almost all random or missing",
            "Group sentences into documents (source.inputs[].sentences_per_doc for CoNLL-U, txt_unit=file or "
            "paragraph for text), raise shards.max_single_sentence_doc_share, or use training.objective=mlm.")


def _add(into: dict, counts: dict) -> None:
    """Add `counts` (nested dicts of numbers) into `into`, key by key."""
    for key, value in counts.items():
        if isinstance(value, dict):
            _add(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value


def load_pairs(folder: Path, seq_len: int, fmt: dict) -> tuple[np.memmap, np.memmap] | None:
    """The training pair rows (examples, L) and their info (examples, 3), or None without pairs."""
    if not fmt.get("pairs"):
        return None
    rows_path, info_path = pair_files(Path(folder), "train", seq_len)
    rows = np.memmap(rows_path, dtype=fmt["dtype"], mode="r").reshape(-1, seq_len)
    return rows, np.memmap(info_path, dtype=np.int32, mode="r").reshape(-1, 3)
