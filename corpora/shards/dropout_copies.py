"""BPE-dropout in training (HerBERT), without tokenising in the training loop: N pre-tokenised copies.

The training documents are tokenised `shards.dropout_copies` times with the vocab folder's
`tokenizer_dropout.json` (each merge skipped with probability tokenizer.bpe_dropout), so every copy
segments the same text differently. The shards stage's tokenise tasks do it beside the plain encoding of
the held-out documents (`corpora.shards.parts`), so the copies are spread over the same tasks, locally or on
a cluster; training reads only the copies, so no plain training rows are written. Pass
p over the data reads copy p mod N (`pretrain.data.PackedRows`), so each epoch sees a new segmentation,
as on-the-fly dropout would give, at the cost of N tokenisations once instead of one per epoch in the
loop (the manifest records the encoder's seconds for each copy, summed over the tasks). Held-out rows
stay those of the deterministic tokenizer.

Dropout splits words into more pieces, so copies hold different numbers of rows; all are cut to the
shortest (the tail tokens dropped are counted), so the data position stays one number for every pass.
The tokenizers library draws dropout from an unseeded generator: a rebuild gives other copies.

  train-<L>.dropout-<c>.bin   (rows, L) packed rows, one file per copy c and length L
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from bertforge.common.errors import CorpusInputError
from corpora.shards.parts import dropout_stream, pack_parts, task_counts

log = logging.getLogger("bertforge.shards")


def copy_file(folder: Path, seq_len: int, copy: int) -> Path:
    return Path(folder) / f"train-{seq_len}.dropout-{copy}.bin"


def pack_dropout_copies(parts: Path, tasks: int, copies: int, lengths: list[int], ids: dict[str, int], dtype,
                        folder: Path, where: str) -> dict:
    """Pack every copy's stream (written by the tokenise tasks beside the held-out one) into rows of every
    length, cut all copies of a length to the shortest; the manifest entry: rows per length, rows dropped,
    the encoder's seconds per copy, summed over the tasks, and the training rows' counts."""
    rows, first = {length: [] for length in lengths}, {}
    for copy in range(copies):
        paths = {length: copy_file(folder, length, copy) for length in lengths}
        for length, counts in pack_parts(parts, tasks, dropout_stream(copy), paths, ids["cls"], ids["sep"],
                                         dtype).items():
            rows[length].append(counts["rows"])
            first.setdefault(length, counts)
    seconds = [round(sum(task["dropout_seconds"][copy] for task in task_counts(parts, tasks)), 3)
               for copy in range(copies)]
    itemsize = np.dtype(dtype).itemsize
    for length in lengths:
        keep = min(rows[length])
        if keep == 0:
            raise CorpusInputError(where, f"yields no full training row of {length} tokens",
                                   "Add text or lower the sequence length.")
        for copy in range(copies):
            os.truncate(copy_file(folder, length, copy), keep * length * itemsize)
    log.info("shards: %d BPE-dropout copies of the training rows, %.2f s of tokenising each (what on-the-fly "
             "dropout would add to every pass)", copies, sum(seconds) / len(seconds))
    return {"copies": copies, "tokenize_seconds": seconds,
            "rows": {str(length): min(r) for length, r in rows.items()},
            "rows_dropped": {str(length): sum(r) - len(r) * min(r) for length, r in rows.items()},
            # the training rows' counts for the manifest: the rows every copy keeps, the first copy's documents
            # and tokens (the copies hold the same documents, cut into different numbers of tokens)
            "train": {str(length): {"rows": min(rows[length]), "documents": first[length]["documents"],
                                    "tokens": first[length]["tokens"]} for length in lengths}}


def load_dropout_copies(folder: Path, seq_len: int, fmt: dict) -> list[np.memmap] | None:
    """The (rows, L) training rows of every dropout copy, or None when the shards hold none (`fmt`: the
    manifest's format section)."""
    info = fmt.get("dropout_copies")
    if not info:
        return None
    return [np.memmap(copy_file(folder, seq_len, c), dtype=fmt["dtype"], mode="r").reshape(-1, seq_len)
            for c in range(info["copies"])]
