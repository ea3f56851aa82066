"""Tokenising a corpus as datatrove tasks (locally, on SLURM or Ray), then packing the parts into rows.

Task r of T takes a contiguous range of the corpus folder's document files (`task_files`) and writes,
for each split (and each BPE-dropout copy of the training split), the token stream of its documents
(ids, every document ended by [SEP]) to `parts/<stream>-<r>.tokens`, with its counts in `parts/<r>.json`.
With sentence pairs (NSP/SOP) it builds its files' pair examples (`corpora.shards.pairs`), and with BPE-dropout
copies it writes the copies' streams; training reads those, so then no plain training stream is written
(`packed_splits`).
Datatrove's completion markers make a rerun of a killed stage skip the tasks that finished.

`pack_parts` then reads the parts in task order, which is the corpus's document order, as one
stream and packs it into rows of every length. Rows never start at a part boundary, so the rows
are the same bytes whatever the number of tasks or the executor: one process reading the whole
corpus would write exactly these files. Packing is a sequential copy (numpy, no tokenising).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import orjson
from datatrove.pipeline.base import PipelineStep
from tokenizers import Tokenizer

from bertforge.common.stage_folder import write_json_atomic
from corpora.documents import document_files, is_heldout, read_documents
from corpora.shards.pairs import PairSettings, write_pair_parts
from corpora.shards.rows import RowPacker, batch_encoder, document_stream, encoded_ahead

SPLITS = ("train", "heldout")
READ_TOKENS = 1 << 24  # tokens per read while packing: a bounded buffer, whatever a part's size


def packed_splits(pairs: bool, dropout_copies: int) -> tuple[str, ...]:
    """The splits tokenised plainly and packed into rows: the held-out split always (evaluation's rows), the
    training split only where training reads it. With sentence pairs or BPE-dropout copies training reads
    those instead, and plain training rows would be tokenised and stored for nothing."""
    return ("heldout",) if pairs or dropout_copies else SPLITS


def task_files(corpus_dir: Path, rank: int, tasks: int) -> list[tuple[int, Path]]:
    """Task `rank`'s share of the corpus's document files, each with its place in the corpus: a
    contiguous range, so the parts in task order are the documents in corpus order."""
    files = document_files(corpus_dir)
    first, end = rank * len(files) // tasks, (rank + 1) * len(files) // tasks
    return list(enumerate(files))[first:end]


def stream_file(parts: Path, stream: str, rank: int) -> Path:
    return parts / f"{stream}-{rank:05d}.tokens"


def dropout_stream(copy: int) -> str:
    """The name of BPE-dropout copy `copy`'s stream of the training documents (`corpora.shards.dropout_copies`)."""
    return f"train.dropout-{copy}"


class TokeniseFiles(PipelineStep):
    """Task r of T: the token streams of its document files (train, heldout, and with `dropout_copies` the
    training documents tokenised that many times with the dropout tokenizer), one file per stream, and
    their counts; with `pairs`, the files' sentence-pair examples of every length in `pair_lengths`.
    `special_ids`: the vocab folder's special token ids by role (`corpora.vocab.special_tokens.special_tokens`)."""

    type = "🔢 - TOKENIZE"
    name = "✂️ shards tokenise"

    def __init__(self, corpus_dir: str, tokenizer_file: str, parts_dir: str, tasks: int, heldout_percent: float,
                 dtype: str, batch_docs: int, dropout_tokenizer_file: str = "", dropout_copies: int = 0,
                 pairs: PairSettings | None = None, pair_lengths: tuple[int, ...] = (),
                 special_ids: dict[str, int] | None = None):
        super().__init__()
        self.corpus_dir, self.tokenizer_file, self.parts_dir = corpus_dir, tokenizer_file, parts_dir
        self.tasks, self.heldout_percent, self.dtype, self.batch_docs = tasks, heldout_percent, dtype, batch_docs
        self.dropout_tokenizer_file, self.dropout_copies = dropout_tokenizer_file, dropout_copies
        self.pairs, self.pair_lengths = pairs, list(pair_lengths)
        self.special_ids = special_ids

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from corpora.vocab.special_tokens import special_token_ids

        tokenizer = Tokenizer.from_file(self.tokenizer_file)
        special = self.special_ids or special_token_ids(tokenizer)
        sep = special["sep"]
        if self.dropout_copies:
            dropout = Tokenizer.from_file(self.dropout_tokenizer_file)
            encode_dropout = batch_encoder(dropout)
        parts = Path(self.parts_dir)
        parts.mkdir(parents=True, exist_ok=True)
        pairs = self.pairs is not None
        splits = packed_splits(pairs, self.dropout_copies)
        names = [*splits, *map(dropout_stream, range(self.dropout_copies))]
        counts = {name: {"documents": 0, "tokens": 0} for name in names}
        seconds = [0.0] * self.dropout_copies  # encoding each dropout copy: what on-the-fly dropout would cost
        outs = {name: open(stream_file(parts, name, rank), "wb") for name in names}  # a rerun writes afresh

        def write(name: str, ids: list[list[int]]) -> None:
            if ids:
                stream = document_stream(ids, sep, self.dtype)
                outs[name].write(stream.data)
                counts[name]["documents"] += len(ids)
                counts[name]["tokens"] += len(stream) - len(ids)

        files = task_files(Path(self.corpus_dir), rank, self.tasks)
        with self.track_time():
            try:
                docs = (d for _, path in files for d in read_documents(path))
                # one read of each document for every stream; the plain encoding only where a split is packed
                # (a training document then goes to the encoder as "", which costs nothing)
                plain = (lambda d: d["text"]) if "train" in splits else \
                    (lambda d: d["text"] if is_heldout(d["id"], self.heldout_percent) else "")
                for batch, encodings in encoded_ahead(docs, tokenizer, self.batch_docs, text=plain):
                    held = [is_heldout(doc["id"], self.heldout_percent) for doc in batch]
                    if "train" in splits:
                        write("train", [e.ids for e, h in zip(encodings, held) if not h])
                    write("heldout", [e.ids for e, h in zip(encodings, held) if h])
                    if self.dropout_copies:
                        train_texts = [doc["text"] for doc, h in zip(batch, held) if not h]
                        for copy in range(self.dropout_copies):
                            started = time.perf_counter()
                            encoded = encode_dropout(train_texts, add_special_tokens=False)
                            seconds[copy] += time.perf_counter() - started
                            write(dropout_stream(copy), [e.ids for e in encoded])
                    self.stat_update("documents", value=len(batch))
            finally:
                for handle in outs.values():
                    handle.close()
            if pairs:  # sentences are encoded apart from the held-out stream: a second pass over the files
                counts["pairs"] = write_pair_parts(files, tokenizer, self.heldout_percent, self.pairs,
                                                   self.pair_lengths, special, np.dtype(self.dtype), parts, rank)
        write_json_atomic(parts / f"{rank:05d}.json", counts | {"dropout_seconds": seconds})
        return iter(())


def task_counts(parts: Path, tasks: int) -> list[dict]:
    """Every task's counts (per stream: documents, tokens; dropout_seconds; pairs), in task order."""
    return [orjson.loads((parts / f"{rank:05d}.json").read_bytes()) for rank in range(tasks)]


def pack_parts(parts: Path, tasks: int, stream: str, paths: dict[int, Path], cls_id: int, sep_id: int, dtype
               ) -> dict[int, dict]:
    """Rows of every length in `paths` from the parts' token streams named `stream`, read in task order;
    counts per length: rows, special tokens, tokens of the dropped last partial row, documents, tokens (no
    [SEP]s)."""
    documents = tokens = 0
    for task in task_counts(parts, tasks):
        counts = task[stream]
        documents, tokens = documents + counts["documents"], tokens + counts["tokens"]
    packers = {length: RowPacker(path, length, cls_id, sep_id, dtype) for length, path in paths.items()}
    try:
        for rank in range(tasks):
            with open(stream_file(parts, stream, rank), "rb") as handle:
                while len(chunk := np.fromfile(handle, dtype=dtype, count=READ_TOKENS)):
                    for packer in packers.values():
                        packer.add(chunk)
    finally:
        packed = {length: packer.close() for length, packer in packers.items()}
    return {length: c | {"documents": documents, "tokens": tokens} for length, c in packed.items()}


def remove_parts(parts: Path) -> None:
    for path in parts.iterdir():
        os.remove(path)
    parts.rmdir()
