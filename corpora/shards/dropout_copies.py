"""BPE-dropout in training (HerBERT), without tokenising in the training loop: N pre-tokenised copies.

The training documents are tokenised `shards.dropout_copies` times with the vocab folder's
`tokenizer_dropout.json` (each merge skipped with probability tokenizer.bpe_dropout), so every copy
segments the same text differently. Pass p over the data reads copy p mod N (`pretrain.data.PackedRows`),
so each epoch sees a new segmentation, as on-the-fly dropout would give, at the cost of N tokenisations
once instead of one per epoch in the loop (the manifest records the seconds each copy took). Held-out
rows stay those of the deterministic tokenizer.

Dropout splits words into more pieces, so copies hold different numbers of rows; all are cut to the
shortest (the tail tokens dropped are counted), so the data position stays one number for every pass.
The tokenizers library draws dropout from an unseeded generator: a rebuild gives other copies.

  train-<L>.dropout-<c>.bin   (rows, L) like train-<L>.bin, one file per copy c and length L
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from bertforge.common.errors import CorpusInputError
from corpora.config import ShardsConfig
from corpora.documents import iter_documents
from corpora.shards.rows import write_packed_rows

log = logging.getLogger("bertforge.shards")


def copy_file(folder: Path, seq_len: int, copy: int) -> Path:
    return Path(folder) / f"train-{seq_len}.dropout-{copy}.bin"


def write_dropout_copies(shards: ShardsConfig, corpus_dir: Path, tokenizer: Tokenizer, lengths: list[int], dtype,
                         folder: Path) -> dict:
    """Write the copies for every row length; returns rows per length and the seconds each copy took."""
    seconds, rows = [], {length: [] for length in lengths}
    for copy in range(shards.dropout_copies):
        started = time.perf_counter()
        docs = (d["text"] for d in iter_documents(corpus_dir, "train", shards.heldout_percent))
        counts = write_packed_rows(docs, tokenizer, {length: copy_file(folder, length, copy) for length in lengths},
                                   dtype, shards.encode_batch_docs)
        seconds.append(round(time.perf_counter() - started, 3))
        for length in lengths:
            rows[length].append(counts[length]["rows"])
    itemsize = np.dtype(dtype).itemsize
    for length in lengths:
        keep = min(rows[length])
        if keep == 0:
            raise CorpusInputError(str(corpus_dir), f"yields no full training row of {length} tokens",
                                   "Add text or lower the sequence length.")
        for copy in range(shards.dropout_copies):
            os.truncate(copy_file(folder, length, copy), keep * length * itemsize)
    log.info("shards: %d BPE-dropout copies of the training rows, %.2f s of tokenising each (what on-the-fly "
             "dropout would add to every pass)", shards.dropout_copies, sum(seconds) / len(seconds))
    return {"copies": shards.dropout_copies, "tokenize_seconds": seconds,
            "rows": {str(length): min(r) for length, r in rows.items()},
            "rows_dropped": {str(length): sum(r) - len(r) * min(r) for length, r in rows.items()}}


def load_dropout_copies(folder: Path, seq_len: int, fmt: dict) -> list[np.memmap] | None:
    """The (rows, L) training rows of every dropout copy, or None when the shards hold none (`fmt`: the
    manifest's format section)."""
    info = fmt.get("dropout_copies")
    if not info:
        return None
    return [np.memmap(copy_file(folder, seq_len, c), dtype=fmt["dtype"], mode="r").reshape(-1, seq_len)
            for c in range(info["copies"])]
