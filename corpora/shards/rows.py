"""Packed rows: writing a token stream as fixed-length rows, and memory-mapping them back.

Each row is [CLS] followed by L - 1 tokens of the document stream, where every document ends with
[SEP]: the [SEP] marks the document boundary inside a row. Rows are always full, so training needs
no padding mask. The shards stage writes them; training and evaluation read them with `load_rows`.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from datatrove.utils.batching import batched
from tokenizers import Tokenizer

from bertforge.common.errors import CorpusInputError
from bertforge.common.stage_folder import read_manifest
from corpora.vocab.special_tokens import special_token_ids


class RowPacker:
    """Appends a token stream to a file as full rows of `seq_len`: [CLS] + seq_len - 1 stream tokens."""

    def __init__(self, path: Path, seq_len: int, cls_id: int, sep_id: int, dtype):
        self.out = open(path, "wb")
        self.body, self.cls_id, self.sep_id, self.dtype = seq_len - 1, cls_id, sep_id, dtype
        self.pending: list[int] = []
        self.rows = self.special_tokens = 0

    def add(self, ids: list[int]) -> None:
        self.pending.extend(ids)
        full = len(self.pending) // self.body
        if full:
            block = np.asarray(self.pending[: full * self.body], dtype=self.dtype).reshape(full, self.body)  # (rows, seq_len-1)
            self.special_tokens += full + int(np.count_nonzero(block == self.sep_id))  # [CLS] + [SEP]s
            block = np.concatenate([np.full((full, 1), self.cls_id, dtype=self.dtype), block], axis=1)  # (rows, seq_len)
            self.out.write(block.tobytes())
            self.rows += full
            self.pending = self.pending[full * self.body:]

    def close(self) -> dict:
        """Finish the file; the last partial row is dropped (and counted)."""
        self.out.close()
        return {"rows": self.rows, "special_tokens": self.special_tokens, "tokens_dropped": len(self.pending)}


def write_packed_rows(texts, tokenizer: Tokenizer, paths: dict[int, Path], dtype, batch_docs: int = 1000
                      ) -> dict[int, dict]:
    """Tokenise `texts` once, in batches, and pack the stream into rows of every length in `paths`.

    Returns counts per length: rows, documents, tokens (without the [SEP]s), special tokens in rows,
    and the tokens of the last partial row, which is dropped.
    """
    ids = special_token_ids(tokenizer)
    cls_id, sep_id = ids["cls"], ids["sep"]
    packers = {length: RowPacker(path, length, cls_id, sep_id, dtype) for length, path in paths.items()}
    documents = tokens = 0
    try:
        for batch, encodings in encoded_ahead(texts, tokenizer, batch_docs):
            stream: list[int] = []
            for encoding in encodings:
                stream.extend(encoding.ids)
                stream.append(sep_id)  # marks the document boundary inside a row
                tokens += len(encoding.ids)
            documents += len(batch)
            for packer in packers.values():
                packer.add(stream)
    finally:
        counts = {length: packer.close() for length, packer in packers.items()}
    return {length: c | {"documents": documents, "tokens": tokens} for length, c in counts.items()}


def encoded_ahead(texts, tokenizer: Tokenizer, batch_docs: int):
    """(batch, encodings) of `texts` in batches, the next batch being read and encoded meanwhile.

    The Rust encoder releases the GIL and uses every core; run in a worker thread, it keeps
    encoding batch i + 1 while this thread packs batch i and reads batch i + 2 (decompressing and
    parsing documents), which would otherwise leave the cores idle between calls (the stage ran at
    0.80 of the encoder alone that way). `encode_batch_fast` skips the character offsets, which
    packing never reads.
    """
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in batched(texts, batch_docs):
            future = pool.submit(encode, batch, add_special_tokens=False)
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
