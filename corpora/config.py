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
    """The subword vocabulary trained (or extended) by the vocab stage."""

    model: str = "wordpiece"
    """wordpiece, bpe or unigram."""
    trainer: str = "tokenizers"
    """tokenizers (every model) or sentencepiece (bpe and unigram, gaBERT's choice)."""
    byte_level: bool = False
    """bpe only: GPT-2/RoBERTa byte-level BPE (no UNK ever) instead of character-level."""
    style: str = "bert"
    """Special tokens and post-processor: bert ([CLS] A [SEP]) or roberta (<s> A </s>)."""
    extra_special_tokens: list[str] = field(default_factory=list)
    """More special tokens, given ids right after the style's five."""
    vocab_size: int = 8000
    """Target size including special tokens."""
    round_vocab_to_multiple_of: int = 0
    """When > 1: round vocab_size up to this multiple and pad the trained vocabulary with reserved
    tokens ([unused0]...) so the final size is exactly a multiple (64 suits tensor cores)."""
    normalizer: str = "nfc"
    """Unicode normalisation first: nfc, nfkc, none, or bert (BERT's cleanup of control characters
    and spaces around CJK characters, without a Unicode normal form)."""
    lowercase: bool = False
    strip_accents: bool = False
    """Off by default: Irish fadas and Estonian/Polish diacritics carry meaning."""
    min_frequency: int = 2
    """wordpiece/bpe: a pair merged fewer times is not learnt (unigram ignores it)."""
    limit_alphabet: int = 1000
    """wordpiece/char bpe: cap on initial characters, so large alphabets do not push the vocabulary
    past vocab_size; rarer characters become [UNK]."""
    bpe_dropout: float = 0.0
    """bpe only, training-time regularisation (HerBERT): when > 0, tokenizer_dropout.json is written
    beside tokenizer.json with this merge-dropout probability; tokenizer.json stays deterministic."""
    max_training_docs: int = 0
    """Train on at most this many documents; 0 means no document cap."""
    max_training_chars: int = 500_000_000
    """Train on at most about this many characters; 0 means no cap. The sample is chosen by a hash of
    each document id (deterministic, spread over the whole corpus) and streamed, so memory stays
    bounded however large the corpus. Held-out documents (shards.heldout_percent) are never trained on."""
    sentencepiece_threads: int = 2
    """sentencepiece only: trainer threads."""
    reference: str = ""
    """A tokenizer to compare against (a folder with tokenizer.json, or the file itself), e.g. a
    multilingual model's; its metrics are reported beside ours. Empty: no comparison."""
    gold_conllu: list[str] = field(default_factory=list)
    """CoNLL-U files or folders whose gold words (column 2) measure fertility. Empty: the conllu
    inputs of the source. Sentences of a treebank that is also a corpus input count only when they
    lie in held-out documents, so the vocabulary is never scored on its own training text."""
    metrics_max_chars: int = 20_000_000
    """Held-out characters (and gold words x 10) scored at most, to keep metrics quick on big corpora."""
    recommend_within_percent: float = 2.0
    """A sweep recommends the smallest vocab_size whose held-out fertility is within this percentage of
    the best fertility in the sweep."""
    extend_from: str = ""
    """Continued pretraining: instead of training, add domain tokens to this existing tokenizer
    (folder or tokenizer.json); its ids stay as they are."""
    extend_tokens: int = 0
    """With extend_from: how many new tokens to add (the words that save the most subwords)."""


@dataclass
class ShardsConfig:
    """How documents become packed, fixed-length training rows."""

    seq_len: int = 128
    heldout_percent: float = 5.0
    """Share of documents (chosen by hash of their id) kept for held-out evaluation."""
    encode_batch_docs: int = 1000
