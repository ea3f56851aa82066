"""Typed configs for the data-side stages. Hydra composes YAML; these dataclasses validate it."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class InputConfig:
    """One raw input: a file or a folder of files in one format."""

    path: str = MISSING
    """File or folder to read; folders are searched recursively with `glob`."""
    format: str = "txt"
    """txt, jsonl (also .jsonl.gz) or conllu."""
    name: str = ""
    """Source tag stored on every document (defaults to the source name)."""
    glob: str = ""
    """File pattern inside a folder; empty means the format's default (e.g. **/*.conllu)."""
    text_key: str = "text"
    """jsonl: the field that holds the text."""
    txt_unit: str = "paragraph"
    """txt: one document per file, paragraph (blank-line separated) or line."""
    sentences_per_doc: int = 10
    """conllu: sentences per document when no `# newdoc` marker comes first."""


@dataclass
class SourceConfig:
    """The raw corpus: one or more inputs mixed into one set of documents."""

    name: str = MISSING
    inputs: list[InputConfig] = field(default_factory=list)


@dataclass
class FiltersConfig:
    """Which documents are kept. Every removal is counted and written aside with its rule."""

    name: str = "length"
    min_words: int = 0
    """Drop documents with fewer whitespace-separated words."""
    max_words: int = 0
    """Drop documents with more words; 0 means no limit."""
    min_chars: int = 0
    exact_dedup: bool = True
    """Drop exact duplicates (after whitespace and case normalisation); the first copy is kept."""


@dataclass
class CorpusConfig:
    """How the corpus stage runs (not what it keeps)."""

    tasks: int = 1
    """datatrove tasks; each holds its own exact-dedup set, so keep 1 until near-dup lands."""
    examples_per_rule: int = 3


@dataclass
class TokenizerConfig:
    """The subword vocabulary trained by the vocab stage."""

    model: str = "wordpiece"
    vocab_size: int = 8000
    lowercase: bool = False
    strip_accents: bool = False
    """Off by default: Irish fadas and Estonian/Polish diacritics carry meaning."""
    min_frequency: int = 2
    limit_alphabet: int = 1000
    """Cap on initial characters, so large alphabets do not push the vocabulary past vocab_size."""
    max_training_docs: int = 0
    """Train on at most this many documents (a deterministic prefix); 0 means all. Held-out
    documents (shards.heldout_percent) are never trained on; they measure fertility and UNK rate."""


@dataclass
class ShardsConfig:
    """How documents become packed, fixed-length training rows."""

    seq_len: int = 128
    heldout_percent: float = 5.0
    """Share of documents (chosen by hash of their id) kept for held-out evaluation."""
    encode_batch_docs: int = 1000
