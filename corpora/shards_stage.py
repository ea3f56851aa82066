"""The shards stage: documents + tokenizer -> fixed-length packed token rows in memory-mapped files.

Layout of a shards folder:
  train.bin, heldout.bin   rows of `seq_len` token ids, C order, dtype from the manifest
  manifest.json            rows per split, seq_len, dtype, vocab size, tokenizer hash

Each row is [CLS] followed by `seq_len - 1` tokens of the document stream, where documents are
joined with [SEP]; rows are always full, so training needs no padding mask. The training loop
never tokenises.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from corpora.corpus_stage import run_corpus
from corpora.documents import iter_documents
from corpora.errors import CorpusInputError
from corpora.stagedir import build_stage, read_manifest, stage_folder, reuse
from corpora.vocab_stage import run_vocab

log = logging.getLogger("bertforge.shards")


def run_shards(cfg) -> Path:
    """Build (or reuse) the shards folder for `cfg`; runs the corpus and vocab stages if needed."""
    from pretrain.config import section

    corpus_dir, vocab_dir = run_corpus(cfg), run_vocab(cfg)
    payload = section(cfg, "shards")
    inputs = {"corpus": read_manifest(corpus_dir)["hash"], "vocab": read_manifest(vocab_dir)["hash"]}
    folder = stage_folder(cfg.paths.work_dir, "shards", payload, inputs)
    if reuse(folder, log):
        return folder
    tokenizer = Tokenizer.from_file(str(vocab_dir / "tokenizer.json"))
    dtype = np.uint16 if tokenizer.get_vocab_size() <= np.iinfo(np.uint16).max + 1 else np.uint32
    with build_stage(cfg.paths.work_dir, "shards", payload, inputs) as build:
        counts = {}
        for split in ("train", "heldout"):
            docs = (d["text"] for d in iter_documents(corpus_dir, split, cfg.shards.heldout_percent))
            counts[split] = write_packed_rows(docs, tokenizer, cfg.shards, build.tmp / f"{split}.bin", dtype)
            if counts[split]["rows"] == 0:
                raise CorpusInputError(str(corpus_dir), f"yields no full {split} row of "
                                       f"{cfg.shards.seq_len} tokens",
                                       "Add text, lower shards.seq_len or change shards.heldout_percent.")
        build.manifest["counts"] = counts
        build.manifest["format"] = {
            "seq_len": cfg.shards.seq_len, "dtype": np.dtype(dtype).name,
            "vocab_size": tokenizer.get_vocab_size(),
            "tokenizer_sha256": file_sha256(vocab_dir / "tokenizer.json"),
            "special_ids": {t: tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")},
        }
    log.info("shards: %d train rows, %d held-out rows -> %s", counts["train"]["rows"],
             counts["heldout"]["rows"], folder)
    return folder


def write_packed_rows(texts, tokenizer: Tokenizer, shards_cfg, path: Path, dtype) -> dict:
    """Tokenise in batches and append full rows to `path`; returns counts (the last partial row is dropped)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    body = shards_cfg.seq_len - 1
    pending: list[int] = []
    rows = documents = tokens = 0
    with open(path, "wb") as out:
        for batch in _batched(texts, shards_cfg.encode_batch_docs):
            for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
                pending.extend(encoding.ids)
                pending.append(sep_id)  # marks the document boundary inside a row
                documents += 1
                tokens += len(encoding.ids)
            full = len(pending) // body
            if full:
                block = np.asarray(pending[: full * body], dtype=dtype).reshape(full, body)  # (rows, seq_len-1)
                block = np.concatenate([np.full((full, 1), cls_id, dtype=dtype), block], axis=1)
                out.write(block.tobytes())
                rows += full
                pending = pending[full * body:]
    return {"rows": rows, "documents": documents, "tokens": tokens, "tokens_dropped": len(pending)}


def load_rows(shards_dir: Path, split: str) -> np.memmap:
    """The (rows, seq_len) memory-mapped token array of one split."""
    fmt = read_manifest(shards_dir)["format"]
    data = np.memmap(Path(shards_dir) / f"{split}.bin", dtype=fmt["dtype"], mode="r")
    return data.reshape(-1, fmt["seq_len"])


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _batched(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
