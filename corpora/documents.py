"""Reading a finished corpus folder back, and the held-out split every later stage agrees on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import orjson
import xxhash
from isal import igzip


def iter_documents(corpus_dir: Path, split: str = "all", heldout_percent: float = 0.0) -> Iterator[dict]:
    """Documents of a corpus folder in a fixed order; `split` is all, train or heldout."""
    for path in document_files(corpus_dir):
        for doc in read_documents(path):
            if split == "all" or (split == "heldout") == is_heldout(doc["id"], heldout_percent):
                yield doc


def document_files(corpus_dir: Path) -> list[Path]:
    """The files of a corpus folder's documents, in corpus order."""
    return sorted((Path(corpus_dir) / "documents").glob("*.jsonl.gz"))


def read_documents(path: Path) -> Iterator[dict]:
    """The documents of one file in order (decompressed by ISA-L: 2.5x zlib's speed, which the shards
    stage's reading thread otherwise takes from the encoder's cores)."""
    with igzip.open(path, "rb") as handle:
        for line in handle:
            yield orjson.loads(line)


def copy_id(doc_id: str, copy: int) -> str:
    """The id of a weighted source's extra copy of a document (copy 1, 2, ...)."""
    return f"{doc_id}#copy{copy}"


_COPY_SUFFIX = re.compile(r"#copy\d+$")


def is_heldout(doc_id: str, percent: float) -> bool:
    """True for about `percent` % of documents, chosen by a hash of the id (stable across runs). The copies
    of a weighted source's document are drawn with it, so no text is both trained on and held out."""
    original = _COPY_SUFFIX.sub("", doc_id)
    return xxhash.xxh64_intdigest(original.encode("utf-8")) % 10_000 < percent * 100


def corpus_sentences(text: str, metadata: dict | None) -> list[str] | None:
    """The document's sentences at the boundaries its reader recorded (`metadata["sentence_chars"]`: the
    CoNLL-U reader's `# text =` sentences, joined by one character), or None when it recorded none or they
    no longer add up to the text (a filter cut lines)."""
    lengths = (metadata or {}).get("sentence_chars")
    if not lengths or sum(lengths) + len(lengths) - 1 != len(text):
        return None
    sentences, start = [], 0
    for length in lengths:
        sentences.append(text[start:start + length])
        start += length + 1
    return [s for s in sentences if s.strip()]
