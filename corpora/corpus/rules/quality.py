"""Document quality heuristics: small pure functions over `TextStats`, wrapped as datatrove steps.

Every rule returns the name of the rule it broke (which becomes `filter_reason` on the document
written aside) or None. Rules are language-neutral: words are whitespace-separated tokens, letters
are Unicode category L*, terminal punctuation and bullets cover many scripts, and thresholds all
come from `corpora.config.QualityConfig` (null or 0 turns a rule off).
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections import Counter
from functools import lru_cache

import numpy as np
import regex
from datatrove.data import Document

from corpora.corpus.rules.base import FilterStep
from corpora.corpus.text_batch import CATEGORIES, TextBatch, combine

# Sentence-final marks of Latin, Greek (;), Armenian, Arabic, Devanagari, CJK, Ethiopic, Myanmar...
TERMINAL_PUNCT = tuple(".!?;…。！？｡։؟۔।॥።፧၊။\"'”’»)")
# No en or em dash: Polish, Estonian, Irish... dialogue lines open with one (Gopher counts • and -).
BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "◦", "‣", "⁃", "-", "*", "·")
ELLIPSES = ("...", "…")
# Latin-style stops end a sentence only before a space or the end (not in "3.14" or "e.g.x"), also
# through closing quotes and brackets (`.”`, `?"`, `.)`, `!»`, Polish `.“`);
# CJK, Devanagari, Ethiopic... stops end one wherever they stand (those scripts need no space).
_SENTENCE_END = re.compile(r"[.!?…;]+[\"'”’»“)\]]*(?=\s|$)|[。！？｡։؟۔।॥።፧၊။]+")
# a whitespace-separated token without a single letter (letters: \w minus digits and underscore)
_LETTERLESS_WORD = re.compile(r"(?<!\S)(?:[^\w\s]|[\d_])+(?!\S)")
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")


@lru_cache(maxsize=1 << 16)
def char_class(ch: str) -> str:
    """L (letter), Lu (uppercase letter), N (digit/number), P (punctuation), S (symbol), Z (space), C (other)."""
    cat = unicodedata.category(ch)
    if cat == "Lu" or cat == "Lt":
        return "Lu"
    return cat[0] if cat[0] in "LNPSZ" else "C"


@lru_cache(maxsize=1 << 16)
def in_scripts(ch: str, scripts: tuple[str, ...]) -> bool:
    """True when the letter `ch` belongs to one of the Unicode `scripts` (e.g. ("Latin",))."""
    return any(regex.match(rf"\p{{Script={name}}}", ch) for name in scripts)


class lazy:
    """A value computed on first access and kept in the instance dict: functools.cached_property
    without its lock (Python 3.11 takes one per access until the value is set), which showed in
    the per-document cost of the rules."""

    def __init__(self, func):
        self.func, self.name, self.__doc__ = func, func.__name__, func.__doc__

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


class TextStats:
    """What the rules measure, each computed once on first use (a rule that is off costs nothing).

    `measured` holds values already computed for a whole batch by `measure_batch`, under the names
    of the properties they stand for; what it lacks is computed here, from the text.
    """

    def __init__(self, text: str, measured: dict | None = None):
        self.text = text
        if measured:
            self.__dict__.update(measured)  # a lazy value is read from the instance dict

    @lazy
    def words(self) -> list[str]:
        return self.text.split()

    @lazy
    def n_words(self) -> int:
        return len(self.words)

    @lazy
    def word_chars(self) -> int:
        return sum(map(len, self.words))

    @lazy
    def max_word_chars(self) -> int:
        return max(map(len, self.words), default=0)

    @lazy
    def letterless_words(self) -> int:
        return len(_LETTERLESS_WORD.findall(self.text))

    @lazy
    def lines(self) -> list[str]:
        return [line for line in self.text.split("\n") if line.strip()]

    @lazy
    def paragraphs(self) -> list[str]:
        return [p for p in self.text.split("\n\n") if p.strip()]

    @lazy
    def char_counts(self) -> Counter:
        return Counter(self.text)  # one pass in C; the classes are looked up per distinct character

    @lazy
    def classes(self) -> Counter:
        totals: Counter = Counter()
        for ch, count in self.char_counts.items():
            totals[char_class(ch)] += count
        return totals

    @property
    def nonspace_chars(self) -> int:
        return max(1, len(self.text) - self.classes["Z"] - self.text.count("\n") - self.text.count("\t"))

    @property
    def letters(self) -> int:
        return self.classes["L"] + self.classes["Lu"]

    @lazy
    def folded_words(self) -> list[str]:
        return self.text.casefold().split()

    @lazy
    def folded_word_chars(self) -> int:
        return sum(map(len, self.folded_words))

    @lazy
    def heaviest_word(self) -> int:
        """The largest (occurrences x length) of any case-folded word."""
        counts = Counter(self.folded_words)
        return max(map(operator.mul, counts.values(), map(len, counts)), default=0)

    @lazy
    def dup_ngram_chars_by_n(self) -> dict[int, int]:
        """n -> characters of case-folded words covered by an n-gram seen earlier (filled in on demand)."""
        return {}

    def dup_ngram_chars(self, n: int) -> int:
        if n not in self.dup_ngram_chars_by_n:
            self.dup_ngram_chars_by_n[n] = _dup_ngram_chars(self.folded_words, n)
        return self.dup_ngram_chars_by_n[n]


def length_rule(s: TextStats, q) -> str | None:
    """Word and character counts, mean word length, longest word."""
    n_words = s.n_words
    if n_words < q.min_words:
        return "too_few_words"
    if q.max_words and n_words > q.max_words:
        return "too_many_words"
    if len(s.text) < q.min_chars:
        return "too_few_chars"
    if q.max_chars and len(s.text) > q.max_chars:
        return "too_many_chars"
    if q.min_mean_word_chars is not None or q.max_mean_word_chars is not None:
        mean = s.word_chars / max(1, n_words)
        if q.min_mean_word_chars is not None and mean < q.min_mean_word_chars:
            return "mean_word_too_short"
        if q.max_mean_word_chars is not None and mean > q.max_mean_word_chars:
            return "mean_word_too_long"
    if q.max_word_chars and s.max_word_chars > q.max_word_chars:
        return "word_too_long"
    return None


def character_rule(s: TextStats, q) -> str | None:
    """Alphabetic, digit, punctuation, symbol, uppercase and script ratios."""
    if q.min_alpha_word_ratio is not None:
        if s.n_words - s.letterless_words < q.min_alpha_word_ratio * s.n_words:
            return "few_alphabetic_words"
    if q.min_alpha_ratio is not None and s.letters < q.min_alpha_ratio * s.nonspace_chars:
        return "low_alpha_ratio"
    if q.max_digit_ratio is not None and s.classes["N"] > q.max_digit_ratio * s.nonspace_chars:
        return "high_digit_ratio"
    if q.max_punct_ratio is not None and s.classes["P"] > q.max_punct_ratio * s.nonspace_chars:
        return "high_punct_ratio"
    if q.max_symbol_ratio is not None and \
            s.classes["S"] + s.text.count("#") > q.max_symbol_ratio * s.nonspace_chars:
        return "high_symbol_ratio"
    if q.max_upper_ratio is not None and s.classes["Lu"] > q.max_upper_ratio * max(1, s.letters):
        return "high_upper_ratio"
    if q.max_hash_ellipsis_word_ratio is not None:
        # each mark on its own against the limit, as Gopher (either ratio above 0.1) and datatrove do
        limit = q.max_hash_ellipsis_word_ratio * max(1, s.n_words)
        if s.text.count("#") > limit or s.text.count("...") + s.text.count("…") > limit:
            return "high_hash_ellipsis_ratio"
    if q.scripts and q.min_script_ratio is not None:
        scripts = tuple(q.scripts)
        in_script = sum(n for ch, n in s.char_counts.items()
                        if char_class(ch) in ("L", "Lu") and in_scripts(ch, scripts))
        if in_script < q.min_script_ratio * max(1, s.letters):
            return "wrong_script"
    if q.max_foreign_letter_ratio is not None:
        alphabet = set(q.alphabet.lower()) | set(q.alphabet.upper())
        foreign = sum(n for ch, n in s.char_counts.items() if ch.isalpha() and ch not in alphabet)
        if foreign > q.max_foreign_letter_ratio * max(1, len(s.text)):
            return "foreign_letters"
    return None


def line_rule(s: TextStats, q) -> str | None:
    """Terminal punctuation, bullets, ellipses, short lines, list-likeness, sentence count."""
    n_lines = max(1, len(s.lines))
    if q.min_terminal_punct_line_ratio is not None:
        marks = q.end_marks or TERMINAL_PUNCT  # a preset may narrow them to its source's (c4)
        ended = sum(1 for line in s.lines if line.rstrip().endswith(marks))
        if ended < q.min_terminal_punct_line_ratio * n_lines:
            return "few_terminal_punct_lines"
    if q.max_bullet_line_ratio is not None:
        bullets = sum(1 for line in s.lines if line.lstrip().startswith(BULLETS))
        if bullets > q.max_bullet_line_ratio * n_lines:
            return "bullet_lines"
    if q.max_ellipsis_line_ratio is not None:
        ellipsis = sum(1 for line in s.lines if line.rstrip().endswith(ELLIPSES))
        if ellipsis > q.max_ellipsis_line_ratio * n_lines:
            return "ellipsis_lines"
    if q.max_short_line_ratio is not None:
        short = sum(1 for line in s.lines if len(line) <= q.short_line_chars)
        if short > q.max_short_line_ratio * n_lines:
            return "short_lines"
    if q.max_newlines_per_word is not None and \
            s.text.count("\n") > q.max_newlines_per_word * max(1, s.n_words):
        return "list_like"
    if q.min_sentences and len(_SENTENCE_END.findall(s.text)) < q.min_sentences:
        return "too_few_sentences"
    if q.min_mean_sentence_words and s.n_words < q.min_mean_sentence_words * max(1, len(_SENTENCE_END.findall(s.text))):
        return "short_sentences"
    return None


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(duplicate items, characters in duplicate items): every copy after the first counts."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def _top_ngram_chars(words: list[str], n: int) -> int:
    grams = Counter(zip(*(words[i:] for i in range(n))))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return sum(map(len, gram)) * count


def _dup_ngram_chars(words: list[str], n: int) -> int:
    """Characters of words covered by an n-gram seen earlier (each word counted once)."""
    seen: set = set()
    repeats = []
    for i, gram in enumerate(zip(*(words[k:] for k in range(n)))):  # n-grams built in C by zip
        if gram in seen:
            repeats.append(i)
        else:
            seen.add(gram)
    if not repeats:
        return 0
    covered = bytearray(len(words))
    for i in repeats:
        covered[i:i + n] = b"\x01" * n
    return sum(len(w) for w, hit in zip(words, covered) if hit)


def repetition_rule(s: TextStats, q) -> str | None:
    """Gopher repetition: duplicate lines and paragraphs, top and duplicated n-gram character shares."""
    for unit, parts, count_limit, char_limit in (
            ("line", s.lines, q.max_dup_line_ratio, q.max_dup_line_char_ratio),
            ("paragraph", s.paragraphs, q.max_dup_para_ratio, q.max_dup_para_char_ratio)):
        if count_limit is None and char_limit is None:
            continue
        dup, dup_chars = _duplicates(parts)
        if count_limit is not None and dup > count_limit * max(1, len(parts)):
            return f"duplicate_{unit}s"
        if char_limit is not None and dup_chars > char_limit * len(s.text):
            return f"duplicate_{unit}_chars"
    if q.max_top_ngram_char_ratio or q.max_dup_ngram_char_ratio:
        word_chars = max(1, s.folded_word_chars)
        # Every word of an n-gram occurs at least as often as the n-gram, so (n-gram characters x
        # its count) <= n x the heaviest single word (count x length). Where that bound is within
        # the limit (most text), no n-gram can break it and the n-gram counts are skipped.
        if q.top_ngram_limits:
            heaviest = s.heaviest_word
            for n, limit in q.top_ngram_limits:
                if n * heaviest > limit * word_chars and _top_ngram_chars(s.folded_words, n) > limit * word_chars:
                    return f"top_{n}gram"
        # A repeated (n+1)-gram is made of repeated n-grams, so the words the smallest n covers include
        # those of every larger n: a share under the lowest limit at the smallest n clears them all.
        if q.dup_ngram_limits:
            smallest = s.dup_ngram_chars(q.dup_ngram_limits[0][0])
            if smallest > q.lowest_dup_ngram_limit * word_chars:
                for n, limit in q.dup_ngram_limits:
                    if s.dup_ngram_chars(n) > limit * word_chars:
                        return f"duplicate_{n}grams"
    return None


def content_rule(s: TextStats, q) -> str | None:
    """Blocked substrings (case-insensitive) and HTML tags."""
    if q.blocked_substrings:
        folded = s.text.casefold()
        for needle in q.blocked_substrings:
            if needle.casefold() in folded:
                return "blocked_substring"
    if q.reject_html_tags and _HTML_TAG.search(s.text):
        return "html_tags"
    return None


RULE_GROUPS = {"length": length_rule, "characters": character_rule, "lines": line_rule,
               "repetition": repetition_rule, "content": content_rule}
_GROUP_FIELDS = {
    "length": ("min_words", "max_words", "min_chars", "max_chars", "min_mean_word_chars",
               "max_mean_word_chars", "max_word_chars"),
    "characters": ("min_alpha_word_ratio", "min_alpha_ratio", "max_digit_ratio", "max_punct_ratio",
                   "max_symbol_ratio", "max_upper_ratio", "max_hash_ellipsis_word_ratio", "min_script_ratio",
                   "max_foreign_letter_ratio"),
    "lines": ("min_terminal_punct_line_ratio", "max_bullet_line_ratio", "max_ellipsis_line_ratio",
              "max_short_line_ratio", "max_newlines_per_word", "min_sentences", "min_mean_sentence_words"),
    "repetition": ("max_dup_line_ratio", "max_dup_para_ratio", "max_dup_line_char_ratio",
                   "max_dup_para_char_ratio", "max_top_ngram_char_ratio", "max_dup_ngram_char_ratio"),
    "content": ("blocked_substrings", "reject_html_tags"),
}


def active_groups(q) -> list[str]:
    """Rule groups with at least one threshold set (the others are not added to the pipeline)."""
    return [g for g, names in _GROUP_FIELDS.items() if any(getattr(q, n) not in (None, 0, False, [], {})
                                                          for n in names)]


def broken_rule(text: str, rules: list, q, measured: dict | None = None) -> str | None:
    """The first rule of `rules` (functions of RULE_GROUPS) that `text` breaks under thresholds `q`, or None."""
    stats = TextStats(text, measured)
    for rule in rules:
        if (reason := rule(stats, q)) is not None:
            return reason
    return None


def measure_batch(batch: TextBatch, q) -> list[dict]:
    """For each text of `batch`, the `TextStats` values of the word- and character-level measures the rules
    under `q` use, computed for the whole batch in numpy passes (`corpora.corpus.text_batch`); the values
    equal what `TextStats` computes from one text (a test compares them). Line and paragraph
    measures, and the exact n-gram counts of the rare text that gets past the bounds, stay per text."""
    starts, ends = batch.space_words
    owner = batch.space_word_owner
    lengths = ends - starts
    columns: dict[str, np.ndarray] = {"n_words": batch.words_per_doc,
                                      "word_chars": np.bincount(owner, weights=lengths, minlength=batch.size)}
    longest = np.zeros(batch.size, dtype=np.int64)
    np.maximum.at(longest, owner, lengths)
    columns["max_word_chars"] = longest
    if q.min_alpha_word_ratio is not None:
        columns["letterless_words"] = np.bincount(owner[batch.letters_in(starts, ends) == 0], minlength=batch.size)
    folded: dict[str, np.ndarray] = {}
    if q.max_top_ngram_char_ratio or q.max_dup_ngram_char_ratio:
        hashes = batch.space_word_hashes
        folded["folded_word_chars"] = columns["word_chars"]  # one-to-one folding keeps every length
        if q.max_top_ngram_char_ratio:
            folded["heaviest_word"] = _heaviest(hashes, owner, lengths, batch.size)
        if q.max_dup_ngram_char_ratio:
            n = q.dup_ngram_limits[0][0]
            folded["dup_ngram_chars_by_n"] = _dup_ngram_chars_batch(hashes, owner, lengths, batch.size, n)
    classes = batch.category_counts().tolist() if _uses_classes(q) else None
    exact_only = (batch.expands | (columns["max_word_chars"] >= 0xFFFF)).tolist() if folded else None
    names = list(columns) + list(folded)
    rows = []
    for i, values in enumerate(zip(*(c.astype(np.int64).tolist() for c in columns.values()),
                                   *(f.tolist() for f in folded.values()))):
        # where casefold changes lengths, or a word is too long for the keys, TextStats counts itself
        row = dict(zip(names, values if folded and not exact_only[i] else values[:len(columns)]))
        if "dup_ngram_chars_by_n" in row:
            row["dup_ngram_chars_by_n"] = {q.dup_ngram_limits[0][0]: row["dup_ngram_chars_by_n"]}
        if classes is not None:
            row["classes"] = Counter(dict(zip(CATEGORIES, classes[i])))
        rows.append(row)
    return rows


def _uses_classes(q) -> bool:
    return any(getattr(q, name) is not None for name in (
        "min_alpha_ratio", "max_digit_ratio", "max_punct_ratio", "max_symbol_ratio", "max_upper_ratio")) or \
        bool(q.scripts and q.min_script_ratio is not None)


def _keys(hashes: np.ndarray, owner: np.ndarray, low: np.ndarray | None = None) -> np.ndarray:
    """Sortable uint64 keys: the owner in the top 16 bits, 32 bits of the hash, then 16 bits of `low`;
    sorting them groups equal hashes of one document (with `low`) in one `np.sort`."""
    with np.errstate(over="ignore"):
        keys = (owner.astype(np.uint64) << np.uint64(48)) | ((hashes >> np.uint64(32)) << np.uint64(16))
    return keys if low is None else keys | low.astype(np.uint64)


def _heaviest(hashes: np.ndarray, owner: np.ndarray, lengths: np.ndarray, docs: int) -> np.ndarray:
    """Per document, the largest (occurrences x length) of one of its words (each shorter than 65535
    characters). Two words that share 32 hash bits count as one: that can only raise the value,
    sending the document to the exact count."""
    out = np.zeros(docs, dtype=np.int64)
    if not len(hashes):
        return out
    keys = np.sort(_keys(hashes, owner, np.minimum(lengths, 0xFFFF)))
    firsts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    counts = np.diff(np.append(firsts, len(keys)))
    first_keys = keys[firsts]
    np.maximum.at(out, (first_keys >> np.uint64(48)).astype(np.int64),
                  counts * (first_keys & np.uint64(0xFFFF)).astype(np.int64))
    return out


def _dup_ngram_chars_batch(hashes: np.ndarray, owner: np.ndarray, lengths: np.ndarray, docs: int, n: int) -> np.ndarray:
    """Per document, `_dup_ngram_chars(words, n)`: characters of the words covered by an n-gram seen
    earlier in the document, with n-grams compared by their 64-bit hashes."""
    out = np.zeros(docs, dtype=np.int64)
    grams, starts = combine(hashes, owner, n)  # starts: the word each n-gram starts at
    if not len(grams):
        return out
    gram_owner = owner[starts]
    # most documents repeat no n-gram: one sort of (document, 32 hash bits) finds those that may
    keys = np.sort(_keys(grams, gram_owner))
    suspects = np.unique(keys[1:][keys[1:] == keys[:-1]] >> np.uint64(48)).astype(np.int64)
    if not len(suspects):
        return out
    mine = np.isin(gram_owner, suspects)
    grams, gram_owner, starts = grams[mine], gram_owner[mine], starts[mine]
    order = np.lexsort((starts, grams, gram_owner))  # equal n-grams of a document in reading order
    same = (grams[order][1:] == grams[order][:-1]) & (gram_owner[order][1:] == gram_owner[order][:-1])
    repeats = starts[order[1:][same]]  # every occurrence after the first
    delta = np.zeros(len(hashes) + 1, dtype=np.int64)
    np.add.at(delta, repeats, 1)
    np.add.at(delta, repeats + n, -1)
    covered = np.cumsum(delta[:-1]) > 0
    return np.bincount(owner[covered], weights=lengths[covered], minlength=docs).astype(np.int64)


class QualityFilter(FilterStep):
    """datatrove step running the given rule groups in order on one shared `TextStats` per document
    (words, lines and character classes are computed once, for a batch of documents at a time);
    `filter_reason` names the broken rule. The batch is left with the documents, for the stop-word
    and signature steps to reuse."""

    name = "🔍 quality"

    def __init__(self, groups: list[str], quality_cfg, exclusion_writer=None):
        super().__init__(exclusion_writer, batch_size=256)
        self.rules, self.q = [RULE_GROUPS[g] for g in groups], quality_cfg

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, docs: list[Document]) -> list[bool | tuple[bool, str]]:
        batch = TextBatch([doc.text for doc in docs])
        verdicts = []
        for doc, measured in zip(docs, measure_batch(batch, self.q)):
            reason = broken_rule(doc.text, self.rules, self.q, measured)
            verdicts.append(True if reason is None else (False, reason))
        batch.attach(docs)
        return verdicts
