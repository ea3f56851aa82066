"""Typed configs for the data-side stages. Hydra composes YAML; these dataclasses validate it."""

from __future__ import annotations

from functools import cached_property
from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class InputConfig:
    """One raw input: a file or a folder of files in one format."""

    path: str = MISSING
    """File or folder to read; folders are searched recursively with `glob`."""
    format: str = "txt"
    """txt, jsonl (also .jsonl.gz), parquet, hf (a folder written by `Dataset.save_to_disk`) or conllu."""
    name: str = ""
    """Source tag stored on every document (defaults to the source name)."""
    glob: str = ""
    """File pattern inside a folder; empty means the format's default (e.g. **/*.conllu)."""
    text_key: str = "text"
    """jsonl, parquet, hf: the field (column) that holds the text."""
    txt_unit: str = "paragraph"
    """txt: one document per file, paragraph (blank-line separated) or line."""
    sentences_per_doc: int = 10
    """conllu: sentences per document when no `# newdoc` marker comes first."""
    weight: float = 1.0
    """Mixing weight of this input in the kept corpus: 0.5 keeps a hash-chosen half of its documents,
    2.0 writes each kept document twice (after deduplication, so copies are not removed as duplicates)."""
    max_docs: int = 0
    """Cap on kept documents from this input (the first ones in reading order); 0 means no cap."""


@dataclass
class SourceConfig:
    """The raw corpus: one or more inputs mixed into one set of documents."""

    name: str = MISSING
    inputs: list[InputConfig] = field(default_factory=list)
    on_bad_record: str = "error"
    """error: stop at the first undecodable, malformed or oversized record, naming file and line.
    skip: leave it out, and list it (file, line, problem) in the report and in skipped/."""
    max_record_mib: float = 16.0
    """A record (line, paragraph or file, by format) longer than this is bad input; memory per
    reader stays near this bound however long a line in the file is."""


@dataclass
class NormaliseConfig:
    """Text normalisation applied to every document before any filter sees it."""

    unicode_form: str = "NFC"
    """NFC, NFKC or none. NFC joins combining accents (Irish fadas typed as two code points)."""
    remove_control_chars: bool = True
    """Drop C0/C1 control and other non-printing characters (NUL, BEL, zero-width joiners kept)."""
    collapse_spaces: bool = True
    """Runs of spaces/tabs become one space; lines are stripped; 3+ newlines become a blank line."""
    fix_mojibake: bool = False
    """Repair UTF-8 decoded as Latin-1/cp1252 (\"Ã©\" -> \"é\") with ftfy (install bertforge[ftfy])."""


@dataclass
class QualityConfig:
    """Document heuristics. Every threshold is off when null (or 0 for counts).

    Words are whitespace-separated tokens and characters are Unicode code points, so no rule
    assumes English; ratios are of non-space characters unless named otherwise.
    """

    min_words: int = 0
    max_words: int = 0
    """0 means no limit."""
    min_chars: int = 0
    max_chars: int = 0
    """0 means no limit."""
    min_mean_word_chars: float | None = None
    max_mean_word_chars: float | None = None
    min_alpha_word_ratio: float | None = None
    """Share of words holding at least one letter (Gopher: 0.8)."""
    min_alpha_ratio: float | None = None
    """Share of non-space characters that are letters (gaBERT/OpusFilter alpha ratio)."""
    max_digit_ratio: float | None = None
    max_punct_ratio: float | None = None
    max_symbol_ratio: float | None = None
    """Symbols: Unicode categories S* (currency, maths, emoji...) plus '#'."""
    max_upper_ratio: float | None = None
    """Uppercase letters among letters; only scripts with case count."""
    scripts: list[str] = field(default_factory=list)
    """Unicode scripts the language is written in (Latin, Cyrillic, Greek...); empty means any."""
    min_script_ratio: float | None = None
    """Share of letters that belong to `scripts`."""
    min_terminal_punct_line_ratio: float | None = None
    """Share of lines ending in terminal punctuation (. ! ? … and their CJK/Arabic/Devanagari forms)."""
    terminal_punct: list[str] = field(default_factory=list, metadata={"hashed_if_set": True})
    """The marks that count as terminal punctuation for min_terminal_punct_line_ratio (C4: . ? ! "); empty:
    those of many scripts (`corpora.corpus.rules.quality.TERMINAL_PUNCT`, closing quotes and brackets too)."""
    max_bullet_line_ratio: float | None = None
    """Share of lines starting with a bullet (Gopher: 0.9)."""
    max_ellipsis_line_ratio: float | None = None
    """Share of lines ending with an ellipsis (Gopher: 0.3)."""
    max_word_chars: int = 0
    """Drop documents holding a word longer than this (C4: 1000); 0 means no limit."""
    max_hash_ellipsis_word_ratio: float | None = None
    """'#' per word and ellipses per word, each against this limit (Gopher: 0.1)."""
    min_sentences: int = 0
    """Sentences are counted by terminal punctuation of any script; 0 turns the rule off."""
    min_mean_sentence_words: float = field(default=0.0, metadata={"hashed_if_set": True})
    """Fewest whitespace words per sentence on average (sentences counted as for min_sentences): gaBERT's
    Document-Heuristic avg-len 4. 0: off."""
    alphabet: str = field(default="", metadata={"hashed_if_set": True})
    """The language's letters (lowercase; their uppercase forms count too), for max_foreign_letter_ratio."""
    max_foreign_letter_ratio: float | None = field(default=None, metadata={"hashed_if_set": True})
    """Most letters outside `alphabet`, as a share of all characters (gaBERT's foreign-ratio 0.02 with
    a-z áéíóú): stricter than a script rule, which lets every Latin letter (à, ç, ß...) pass."""
    max_short_line_ratio: float | None = None
    """Share of lines with at most `short_line_chars` characters (FineWeb: 0.67 at 30)."""
    short_line_chars: int = 30
    max_newlines_per_word: float | None = None
    """Newlines per word: lists and menus have many (FineWeb: 0.3)."""
    blocked_substrings: list[str] = field(default_factory=list)
    """Drop documents containing any of these, case-insensitively (C4: lorem ipsum, '{')."""
    reject_html_tags: bool = False
    """Drop documents containing HTML/XML tags (OpusFilter HtmlTagFilter)."""
    max_dup_line_ratio: float | None = None
    """Gopher repetition: duplicate lines / lines."""
    max_dup_para_ratio: float | None = None
    max_dup_line_char_ratio: float | None = None
    max_dup_para_char_ratio: float | None = None
    max_top_ngram_char_ratio: dict[str, float] = field(default_factory=dict)
    """n -> max share of characters covered by the most frequent n-gram (Gopher: 2: 0.2, 3: 0.18, 4: 0.16)."""
    max_dup_ngram_char_ratio: dict[str, float] = field(default_factory=dict)
    """n -> max share of characters in repeated n-grams (Gopher: 5: 0.15 ... 10: 0.10)."""

    @cached_property
    def end_marks(self) -> tuple[str, ...]:
        """terminal_punct as str.endswith takes it (empty: the rule's many-script default)."""
        return tuple(self.terminal_punct)

    @cached_property
    def top_ngram_limits(self) -> list[tuple[int, float]]:
        """max_top_ngram_char_ratio as (n, limit) pairs, smallest n first."""
        return sorted((int(n), limit) for n, limit in self.max_top_ngram_char_ratio.items())

    @cached_property
    def dup_ngram_limits(self) -> list[tuple[int, float]]:
        """max_dup_ngram_char_ratio as (n, limit) pairs, smallest n first."""
        return sorted((int(n), limit) for n, limit in self.max_dup_ngram_char_ratio.items())

    @cached_property
    def lowest_dup_ngram_limit(self) -> float:
        return min(self.max_dup_ngram_char_ratio.values(), default=0.0)


@dataclass
class StopwordConfig:
    """Stop-word presence: real prose in any language is full of its function words."""

    min_stopwords: int = 0
    """Drop documents with fewer stop-word tokens than this; 0 turns the rule off."""
    words: dict[str, list[str]] = field(default_factory=dict)
    """language code -> stop words; the `default` list applies to documents of any other language. Without
    language ID (filters.langid.languages empty) only `default` can apply: other lists alone are refused."""
    derive_top_k: int = 0
    """When `words` is empty: take the k words found in the most documents of a sample of the corpus."""
    derive_sample_docs: int = 2000


@dataclass
class BlocklistConfig:
    """A user list of words or phrases (one per line, UTF-8, case-insensitive, whole words)."""

    file: str = ""
    """Empty turns the rule off."""
    max_matches: int = 0
    """Drop a document with more than this many matches."""


@dataclass
class UrlConfig:
    """URL/domain rules for web sources (documents carrying a URL in metadata)."""

    metadata_key: str = "url"
    blocked_domains: list[str] = field(default_factory=list)
    """A domain and its subdomains (example.com also blocks www.example.com)."""
    blocked_domains_file: str = ""
    """One domain per line."""
    allowed_tlds: list[str] = field(default_factory=list)
    """If set, only these top-level domains pass (e.g. [ie, eu] for Irish web text)."""
    max_url_chars_ratio: float | None = None
    """Share of the text's characters inside URLs written in the text itself."""


@dataclass
class LangIdConfig:
    """Language identification with a model shipped inside a PyPI package (no downloads)."""

    languages: list[str] = field(default_factory=list)
    """ISO 639-1 codes to keep (e.g. [ga]); empty turns language ID off."""
    min_score: float = 0.0
    """Keep a document only when its best language is listed and scores at least this (0..1)."""
    backend: str = "cld2"
    """cld2 (pycld2, C++, fast) or py3langid (pure Python + numpy, 97 languages)."""
    max_chars: int = 500
    """Classify this many characters from the start of each document (0: all of it). CLD2's cost grows
    with the text: on the corpus benchmark's 20,000 Irish and Estonian documents (about 1,000
    characters each) the first 500 gave every document the language the whole text gave, in 54 % of
    the time; the first 200 got 40 wrong."""


@dataclass
class NearDedupConfig:
    """MinHash LSH near-duplicate removal across the whole corpus; the first copy is kept."""

    enabled: bool = False
    shingle_words: int = 5
    """Words per shingle; the word splitter is a Unicode regex (\\w+), fast and language-neutral for
    scripts that separate words with spaces (use shingle_unit=chars for Chinese, Japanese, Thai)."""
    shingle_unit: str = "words"
    """words or chars (then shingles are `shingle_words` characters)."""
    num_perm: int = 128
    """MinHash signature values (bins of one-permutation hashing, see corpora.corpus.minhash); those beyond
    bands*rows only sharpen the similarity estimate."""
    bands: int = 20
    rows: int = 5
    """LSH: a pair becomes a candidate when all `rows` hashes of any of the `bands` agree."""
    threshold: float = 0.7
    """Candidates whose estimated Jaccard (share of equal MinHash values) reaches this are duplicates. In reading
    order, a document is removed only when it reaches this with a document that is kept (its candidate, or
    its candidate's kept copy): a chain A~B~C keeps C when C is not close to A."""
    seed: int = 1


@dataclass
class FiltersConfig:
    """Which documents are kept. Every removal is counted and written aside with its rule."""

    name: str = "length"
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig)
    line_quality: QualityConfig = field(default_factory=QualityConfig)
    """The same thresholds judged on each line: a line that breaks one is cut out (C4, FineWeb and
    OpusFilter rules work on lines); a document left with none is removed. Runs before `quality`."""
    quality: QualityConfig = field(default_factory=QualityConfig)
    stopwords: StopwordConfig = field(default_factory=StopwordConfig)
    blocklist: BlocklistConfig = field(default_factory=BlocklistConfig)
    urls: UrlConfig = field(default_factory=UrlConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    exact_dedup: bool = True
    """Drop exact duplicates (after whitespace and case normalisation) across the whole corpus."""
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    min_repeated_line_docs: int = 0
    """Boilerplate: remove lines (of 20+ characters) found in at least this many documents; 0 is off."""


@dataclass
class ExecutorConfig:
    """Where the datatrove pipelines run; switching this group never changes the output."""

    name: str = "local"
    """local (this machine, `tasks` processes), slurm (datatrove's SLURM executor, one array job per step)
    or ray (datatrove's Ray executor, where Ray is installed)."""
    start_method: str = field(default="fork", metadata={"used_when": ("name", ("local",))})
    """local: how worker processes start. fork (the default) starts them in milliseconds; datatrove's
    own default, forkserver, re-imports every library in every worker of every pipeline (3 s of a 14 s
    run in the 20 MB benchmark). forkserver or spawn are there for a parent process holding threads
    that must not be forked."""
    partition: str = field(default="", metadata={"used_when": ("name", ("slurm",))})
    """slurm: partition to submit to."""
    time: str = field(default="01:00:00", metadata={"used_when": ("name", ("slurm",))})
    """slurm: time limit of each task."""
    cpus_per_task: int = field(default=1, metadata={"used_when": ("name", ("slurm", "ray"))})
    mem_per_cpu_gb: int = field(default=2, metadata={"used_when": ("name", ("slurm", "ray"))})
    venv_path: str = field(default="", metadata={"used_when": ("name", ("slurm",))})
    """slurm: activate script run before each task (empty: the python running bertforge)."""
    poll_seconds: float = field(default=5.0, metadata={"used_when": ("name", ("slurm",))})
    """slurm: how often to look whether the submitted tasks have finished."""
    max_wait_hours: float = field(default=24.0, metadata={"used_when": ("name", ("slurm",))})


@dataclass
class CorpusConfig:
    """How the corpus stage runs (not what it keeps)."""

    tasks: int = 1
    """Parallel datatrove tasks, each reading a contiguous run of the input files (an HF dataset's rows);
    dedup is global, and the task count never changes the corpus (see corpora.corpus.readers)."""
    index_tasks: int = 1
    """Tasks the duplicate index is split into, each holding the keys of one hash range (about 525
    bytes per document / index_tasks with 20 bands: 21 keys of ~25 bytes held): raise it with the
    corpus (e.g. one per 2-5 M documents) to bound each task's memory. It never changes which documents are kept, so it is not
    part of the stage hash (like everything under `corpus`). A rerun of a killed run with another `tasks` or
    `index_tasks` starts its work over, with a warning: the finished tasks' files were split the other way."""
    examples_per_rule: int = 3
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)


@dataclass
class TokenizerConfig:
    """The subword vocabulary trained (or extended) by the vocab stage."""

    model: str = "wordpiece"
    """wordpiece, bpe or unigram."""
    trainer: str = "tokenizers"
    """tokenizers (every model) or sentencepiece (bpe and unigram; with model=wordpiece, sentencepiece BPE
    converted to a WordPiece vocabulary as gaBERT did: `corpora.vocab.sp_wordpiece`)."""
    byte_level: bool = field(default=False, metadata={"used_when": ("model", ("bpe",))})
    """bpe only: GPT-2/RoBERTa byte-level BPE (no UNK ever) instead of character-level."""
    style: str = "bert"
    """Special tokens and post-processor: bert ([CLS] A [SEP]) or roberta (<s> A </s>)."""
    extra_special_tokens: list[str] = field(default_factory=list)
    """More special tokens, given ids right after the style's five."""
    unused_tokens: int = field(default=0, metadata={"hashed_if_set": True})
    """Placeholders [unused0]..[unusedN-1] after the special tokens (gaBERT and BERT reserve 100), never
    produced from text: room for tokens added later without resizing the embeddings."""
    vocab_size: int = 8000
    """Target size including special tokens."""
    normalizer: str = "nfc"
    """Unicode normalisation first: nfc, nfkc, none, or bert (BERT's cleanup of control characters
    and spaces around CJK characters, without a Unicode normal form)."""
    lowercase: bool = False
    strip_accents: bool = False
    """Off by default: Irish fadas and Estonian/Polish diacritics carry meaning."""
    min_frequency: int = field(default=2, metadata={"used_when": ("model", ("wordpiece", "bpe"))})
    """wordpiece/bpe: a pair merged fewer times is not learnt (unigram ignores it)."""
    limit_alphabet: int = field(default=1000, metadata={"used_when": ("model", ("wordpiece", "bpe"))})
    """wordpiece/char bpe with the tokenizers trainer: cap on initial characters, so large alphabets do not push
    the vocabulary past vocab_size; rarer characters become [UNK]. The sentencepiece trainers (sp_*) keep every
    character (character_coverage 1.0) and do not read it."""
    bpe_dropout: float = field(default=0.0, metadata={"used_when": ("model", ("bpe",))})
    """bpe only, training-time regularisation (HerBERT): when > 0, tokenizer_dropout.json is written
    beside tokenizer.json with this merge-dropout probability; tokenizer.json stays deterministic."""
    max_training_docs: int = 0
    """Train on at most this many documents; 0 means no document cap."""
    max_training_chars: int = 500_000_000
    """Train on at most about this many characters; 0 means no cap. The sample is chosen by a hash of
    each document id (deterministic, spread over the whole corpus) and streamed, so memory stays
    bounded however large the corpus. Held-out documents (shards.heldout_percent) are never trained on."""
    sentencepiece_threads: int = field(default=2, metadata={"used_when": ("trainer", ("sentencepiece",))})
    """sentencepiece only: trainer threads."""
    character_coverage: float = field(default=1.0, metadata={"used_when": ("trainer", ("sentencepiece",)),
                                                             "hashed_if_set": True})
    """sentencepiece only: the share of the sample's characters its alphabet covers; the rarest characters past it
    become [UNK] (1.0: every character; gaBERT's sentencepiece.sh: 0.9999)."""
    reference: str = ""
    """A tokenizer to compare against (a folder with tokenizer.json, or the file itself), e.g. a
    multilingual model's; its metrics are reported beside ours. Empty: no comparison."""
    gold_conllu: list[str] = field(default_factory=list)
    """CoNLL-U files or folders whose gold words (column 2) measure fertility. Empty: the conllu
    inputs of the source. Sentences of a treebank that is also a corpus input count only when they
    lie in held-out documents, so the vocabulary is never scored on its own training text."""
    metrics_max_chars: int = 20_000_000
    """Held-out characters (and gold words x 10) scored at most, to keep metrics quick on big corpora."""
    recommend_within_percent: float = field(default=2.0, metadata={"hashed": False})
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
    """Row length of the main shards (evaluation reads these); training.phases[].seq_len add more."""
    extra_seq_lens: list[int] = field(default_factory=list)
    """Further row lengths packed from the same token stream (phase lengths are added automatically)."""
    heldout_percent: float = 5.0
    """Share of documents (chosen by hash of their id) kept for held-out evaluation."""
    encode_batch_docs: int = field(default=1000, metadata={"hashed": False})
    """Documents per call of the tokenizers batch encoder (which tokenises them on all cores)."""
    tasks: int = field(default=0, metadata={"hashed": False})
    """Datatrove tasks that tokenise the corpus, each a contiguous range of its document files (0: one per
    file; more tasks than files: one per file), run by `executor` like the corpus stage's (locally
    min(tasks, cores) at a time, or as a SLURM/Ray job). A killed run's finished tasks are not redone.
    The rows are the same bytes for any number of tasks, so neither this nor encode_batch_docs names
    the folder."""
    dropout_copies: int = field(default=0, metadata={"hashed_if_set": True})
    """BPE-dropout in training (HerBERT; needs tokenizer.bpe_dropout > 0): the training documents are
    tokenised this many times with the vocab folder's tokenizer_dropout.json, each copy segmented afresh;
    pass p over the data reads copy p mod dropout_copies. Held-out rows always use the plain tokenizer."""
    short_seq_prob: float = field(default=0.1, metadata={"hashed_if_set": True})
    """Sentence pairs (training.objective=mlm_nsp|mlm_sop): share of examples built to a random shorter
    target length (Google BERT's short_seq_prob)."""
    max_single_sentence_doc_share: float = field(default=0.5, metadata={"hashed_if_set": True})
    """Sentence pairs: above this share of one-sentence training documents the stage stops with an error
    (such documents give no real next sentence)."""
