"""The shards stage: documents + tokenizer -> fixed-length packed token rows in memory-mapped files.

Layout of a shards folder:
  train-<L>.bin, heldout-<L>.bin   rows of L token ids, C order, dtype from the manifest, one pair
                                   per row length L (the main `shards.seq_len`, the lengths of
                                   `training.phases`, and `shards.extra_seq_lens`)
  manifest.json                    rows per split and length, dtype, vocab size, tokenizer hash,
                                   special ids, share of maskable (non-special) tokens

Each row is [CLS] followed by L - 1 tokens of the document stream, where every document ends with
[SEP]: the [SEP] marks the document boundary inside a row. Rows are always full, so training needs
no padding mask. Every length is packed from one tokenisation of the corpus, done in batches by the
tokenizers library's Rust encoder (parallel over all cores); the training loop never tokenises.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from datatrove.utils.batching import batched
from tokenizers import Tokenizer

from bertforge.common.errors import CorpusInputError
from bertforge.common.stage_folder import StageOutput, read_manifest
from corpora.config import ShardsConfig
from corpora.documents import iter_documents
from corpora.vocab.special_tokens import special_token_ids

log = logging.getLogger("bertforge.shards")

SPLITS = ("train", "heldout")


def shard_seq_lens(shards: ShardsConfig, phase_seq_lens: list[int]) -> list[int]:
    """Every row length an experiment needs (its training phases' lengths given), main length first."""
    wanted = [*shards.extra_seq_lens, *phase_seq_lens]
    bad = [length for length in [shards.seq_len, *wanted] if length < 8]
    if bad:
        raise CorpusInputError("config", f"sequence length {bad[0]} is too short for packed rows",
                               "Use shards.seq_len / training.phases[].seq_len of at least 8.")
    return [shards.seq_len, *sorted(set(wanted) - {shards.seq_len})]


def build_shards(shards: ShardsConfig, lengths: list[int], corpus_dir: Path, vocab_dir: Path,
                 out: StageOutput) -> None:
    """Tokenise the corpus folder's documents with the vocab folder's tokenizer into rows of every
    length in `lengths` (main length first), train and held-out splits, in `out`."""
    tokenizer = Tokenizer.from_file(str(vocab_dir / "tokenizer.json"))
    dtype = np.uint16 if tokenizer.get_vocab_size() <= np.iinfo(np.uint16).max + 1 else np.uint32
    with out.build() as build:
        by_len = {length: {} for length in lengths}
        for split in SPLITS:
            docs = (d["text"] for d in iter_documents(corpus_dir, split, shards.heldout_percent))
            paths = {length: build.tmp / f"{split}-{length}.bin" for length in lengths}
            for length, counts in write_packed_rows(docs, tokenizer, paths, dtype,
                                                    shards.encode_batch_docs).items():
                if counts["rows"] == 0:
                    raise CorpusInputError(str(corpus_dir), f"yields no full {split} row of {length} tokens",
                                           "Add text, lower the sequence length or change shards.heldout_percent.")
                by_len[length][split] = counts
        main = by_len[lengths[0]]
        build.manifest["counts"] = {"train": main["train"], "heldout": main["heldout"],
                                    "by_seq_len": {str(k): v for k, v in by_len.items()}}
        build.manifest["format"] = {
            "seq_len": lengths[0], "seq_lens": lengths, "dtype": np.dtype(dtype).name,
            "vocab_size": tokenizer.get_vocab_size(),
            "tokenizer_sha256": file_sha256(vocab_dir / "tokenizer.json"),
            "special_ids": special_token_ids(tokenizer),  # by role: BERT and RoBERTa styles alike
            "maskable_share": {str(k): 1 - v["train"]["special_tokens"] / (v["train"]["rows"] * k)
                               for k, v in by_len.items()},
        }
    log.info("shards: %d train rows, %d held-out rows of %s tokens -> %s", main["train"]["rows"],
             main["heldout"]["rows"], "/".join(map(str, lengths)), out.folder)


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
        for batch in batched(texts, batch_docs):
            stream: list[int] = []
            for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
                stream.extend(encoding.ids)
                stream.append(sep_id)  # marks the document boundary inside a row
                tokens += len(encoding.ids)
            documents += len(batch)
            for packer in packers.values():
                packer.add(stream)
    finally:
        counts = {length: packer.close() for length, packer in packers.items()}
    return {length: c | {"documents": documents, "tokens": tokens} for length, c in counts.items()}


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
