"""Packed rows: writing a token stream as fixed-length rows, and memory-mapping them back.

Each row is [CLS] followed by L - 1 tokens of the document stream, where every document ends with
[SEP]: the [SEP] marks the document boundary inside a row. Rows are always full, so training needs
no padding mask. The shards stage writes them; training and evaluation read them with `load_rows`.
"""

from __future__ import annotations

import hashlib
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from datatrove.utils.batching import batched
from tokenizers import Tokenizer

from bertforge.common.errors import CorpusInputError
from bertforge.common.stage_folder import read_manifest


class RowPacker:
    """Appends a token stream to a file as full rows of `seq_len`: [CLS] + seq_len - 1 stream tokens."""

    def __init__(self, path: Path, seq_len: int, cls_id: int, sep_id: int, dtype):
        self.out = open(path, "wb")
        self.body, self.cls_id, self.sep_id, self.dtype = seq_len - 1, cls_id, sep_id, np.dtype(dtype)
        self.pending = np.empty(0, self.dtype)
        self.rows = self.special_tokens = 0

    def add(self, stream: np.ndarray) -> None:
        """Pack `stream` (token ids, documents ended by [SEP]) after what earlier calls left over."""
        pending = np.concatenate([self.pending, stream.astype(self.dtype, copy=False)])
        full = len(pending) // self.body
        if full:
            block = pending[: full * self.body].reshape(full, self.body)  # (rows, seq_len-1)
            self.special_tokens += full + int(np.count_nonzero(block == self.sep_id))  # [CLS] + [SEP]s
            rows = np.empty((full, self.body + 1), self.dtype)  # (rows, seq_len)
            rows[:, 0], rows[:, 1:] = self.cls_id, block
            self.out.write(rows.tobytes())
            self.rows += full
        self.pending = pending[full * self.body:].copy()

    def close(self) -> dict:
        """Finish the file; the last partial row is dropped (and counted)."""
        self.out.close()
        return {"rows": self.rows, "special_tokens": self.special_tokens, "tokens_dropped": len(self.pending)}


def document_stream(documents: list[list[int]], sep_id: int, dtype) -> np.ndarray:
    """The token ids of `documents` one after the other, each ended by [SEP] (which marks the document
    boundary inside a row), as one array: filled by numpy from the id lists, no Python loop per token."""
    lengths = np.fromiter((len(d) + 1 for d in documents), np.int64, len(documents))
    stream = np.full(int(lengths.sum()), sep_id, dtype)
    body = np.ones(len(stream), bool)
    body[np.cumsum(lengths) - 1] = False  # the [SEP] positions keep sep_id
    stream[body] = np.fromiter(itertools.chain.from_iterable(documents), dtype, len(stream) - len(documents))
    return stream


def batch_encoder(tokenizer: Tokenizer):
    """The tokenizer's batch encoder that skips character offsets, which nothing here reads:
    `encode_batch_fast`, or `encode_batch` where the library has none."""
    return getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)


def encoded_ahead(items, tokenizer: Tokenizer, batch_docs: int, text=None):
    """(batch, encodings) of `items` (texts, or anything `text(item)` turns into one) in batches, the
    next batch being read and encoded meanwhile.

    The Rust encoder releases the GIL and uses every core; run in a worker thread, it keeps
    encoding batch i + 1 while this thread packs batch i and reads batch i + 2 (decompressing and
    parsing documents), which would otherwise leave the cores idle between calls (the stage ran at
    0.80 of the encoder alone that way). `encode_batch_fast` skips the character offsets, which
    packing never reads.
    """
    encode = batch_encoder(tokenizer)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in batched(items, batch_docs):
            texts = batch if text is None else [text(item) for item in batch]
            future = pool.submit(encode, texts, add_special_tokens=False)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (batch, future)
        if pending is not None:
            yield pending[0], pending[1].result()


def load_rows(shards_dir: Path, split: str, seq_len: int | None = None) -> np.memmap:
    """The (rows, seq_len) memory-mapped token array of one split (the main length by default)."""
    fmt = read_manifest(shards_dir)["format"]
    seq_len = seq_len or fmt["seq_len"]
    if seq_len not in fmt.get("seq_lens", [fmt["seq_len"]]):
        raise CorpusInputError(str(shards_dir), f"has no rows of length {seq_len} (it has {fmt['seq_lens']})",
                               "Rebuild the shards with that length in training.phases or shards.extra_seq_lens.")
    data = np.memmap(Path(shards_dir) / f"{split}-{seq_len}.bin", dtype=fmt["dtype"], mode="r")
    return data.reshape(-1, seq_len)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
