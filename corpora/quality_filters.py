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
from functools import cached_property, lru_cache

import regex
from datatrove.data import Document

from corpora.filter_step import FilterStep

# Sentence-final marks of Latin, Greek (;), Armenian, Arabic, Devanagari, CJK, Ethiopic, Myanmar...
TERMINAL_PUNCT = tuple(".!?;…。！？｡։؟۔।॥።፧၊။\"'”’»)")
BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "◦", "‣", "⁃", "-", "*", "–", "—", "·")
ELLIPSES = ("...", "…")
# Latin-style stops end a sentence only before a space or the end (not in "3.14" or "e.g.x");
# CJK, Devanagari, Ethiopic... stops end one wherever they stand (those scripts need no space).
_SENTENCE_END = re.compile(r"[.!?…;]+(?=\s|$)|[。！？｡։؟۔।॥።፧၊။]+")
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


class TextStats:
    """What the rules measure, each computed once on first use (a rule that is off costs nothing)."""

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def words(self) -> list[str]:
        return self.text.split()

    @cached_property
    def lines(self) -> list[str]:
        return [line for line in self.text.split("\n") if line.strip()]

    @cached_property
    def paragraphs(self) -> list[str]:
        return [p for p in self.text.split("\n\n") if p.strip()]

    @cached_property
    def char_counts(self) -> Counter:
        return Counter(self.text)  # one pass in C; the classes are looked up per distinct character

    @cached_property
    def classes(self) -> Counter:
        totals: Counter = Counter()
        for ch, count in self.char_counts.items():
            totals[char_class(ch)] += count
        return totals

    @property
    def nonspace_chars(self) -> int:
        return max(1, len(self.text) - self.classes["Z"] - self.char_counts["\n"] - self.char_counts["\t"])

    @property
    def letters(self) -> int:
        return self.classes["L"] + self.classes["Lu"]


def length_rule(s: TextStats, q) -> str | None:
    """Word and character counts, mean word length, longest word."""
    n_words = len(s.words)
    if n_words < q.min_words:
        return "too_few_words"
    if q.max_words and n_words > q.max_words:
        return "too_many_words"
    if len(s.text) < q.min_chars:
        return "too_few_chars"
    if q.max_chars and len(s.text) > q.max_chars:
        return "too_many_chars"
    if q.min_mean_word_chars is not None or q.max_mean_word_chars is not None:
        mean = sum(map(len, s.words)) / max(1, n_words)
        if q.min_mean_word_chars is not None and mean < q.min_mean_word_chars:
            return "mean_word_too_short"
        if q.max_mean_word_chars is not None and mean > q.max_mean_word_chars:
            return "mean_word_too_long"
    if q.max_word_chars and s.words and max(map(len, s.words)) > q.max_word_chars:
        return "word_too_long"
    return None


def character_rule(s: TextStats, q) -> str | None:
    """Alphabetic, digit, punctuation, symbol, uppercase and script ratios."""
    if q.min_alpha_word_ratio is not None:
        letterless = len(_LETTERLESS_WORD.findall(s.text))
        if len(s.words) - letterless < q.min_alpha_word_ratio * len(s.words):
            return "few_alphabetic_words"
    if q.min_alpha_ratio is not None and s.letters < q.min_alpha_ratio * s.nonspace_chars:
        return "low_alpha_ratio"
    if q.max_digit_ratio is not None and s.classes["N"] > q.max_digit_ratio * s.nonspace_chars:
        return "high_digit_ratio"
    if q.max_punct_ratio is not None and s.classes["P"] > q.max_punct_ratio * s.nonspace_chars:
        return "high_punct_ratio"
    if q.max_symbol_ratio is not None and \
            s.classes["S"] + s.char_counts["#"] > q.max_symbol_ratio * s.nonspace_chars:
        return "high_symbol_ratio"
    if q.max_upper_ratio is not None and s.classes["Lu"] > q.max_upper_ratio * max(1, s.letters):
        return "high_upper_ratio"
    if q.max_hash_ellipsis_word_ratio is not None:
        marks = s.text.count("#") + s.text.count("...") + s.text.count("…")  # str.count: no Counter needed
        if marks > q.max_hash_ellipsis_word_ratio * max(1, len(s.words)):
            return "high_hash_ellipsis_ratio"
    if q.scripts and q.min_script_ratio is not None:
        scripts = tuple(q.scripts)
        in_script = sum(n for ch, n in s.char_counts.items()
                        if char_class(ch) in ("L", "Lu") and in_scripts(ch, scripts))
        if in_script < q.min_script_ratio * max(1, s.letters):
            return "wrong_script"
    return None


def line_rule(s: TextStats, q) -> str | None:
    """Terminal punctuation, bullets, ellipses, short lines, list-likeness, sentence count."""
    n_lines = max(1, len(s.lines))
    if q.min_terminal_punct_line_ratio is not None:
        ended = sum(1 for line in s.lines if line.rstrip().endswith(TERMINAL_PUNCT))
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
            s.text.count("\n") > q.max_newlines_per_word * max(1, len(s.words)):
        return "list_like"
    if q.min_sentences and len(_SENTENCE_END.findall(s.text)) < q.min_sentences:
        return "too_few_sentences"
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
        words = s.text.casefold().split()
        word_chars = max(1, sum(map(len, words)))
        top_limits = sorted((int(k), v) for k, v in q.max_top_ngram_char_ratio.items())
        if top_limits:
            # Every word of an n-gram occurs at least as often as the n-gram, so (n-gram characters x
            # its count) <= n x the heaviest single word (count x length). Where that bound is within
            # the limit (most text), no n-gram can break it and the n-gram counts are skipped.
            counts = Counter(words)
            heaviest = max(map(operator.mul, counts.values(), map(len, counts)), default=0)
            for n, limit in top_limits:
                if n * heaviest > limit * word_chars and _top_ngram_chars(words, n) > limit * word_chars:
                    return f"top_{n}gram"
        dup_limits = sorted((int(k), v) for k, v in q.max_dup_ngram_char_ratio.items())
        # A repeated (n+1)-gram is made of repeated n-grams, so the words the smallest n covers include
        # those of every larger n: no repeat at the smallest n (most real text) clears them all, and so
        # does a share under the lowest limit. One set of tuples decides most documents.
        if dup_limits and _has_repeated_ngram(words, dup_limits[0][0]):
            smallest = _dup_ngram_chars(words, dup_limits[0][0])
            if smallest > min(limit for _, limit in dup_limits) * word_chars:
                for n, limit in dup_limits:
                    if (smallest if n == dup_limits[0][0] else _dup_ngram_chars(words, n)) > limit * word_chars:
                        return f"duplicate_{n}grams"
    return None


def _has_repeated_ngram(words: list[str], n: int) -> bool:
    return len(set(zip(*(words[i:] for i in range(n))))) < len(words) - n + 1


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
                   "max_symbol_ratio", "max_upper_ratio", "max_hash_ellipsis_word_ratio", "min_script_ratio"),
    "lines": ("min_terminal_punct_line_ratio", "max_bullet_line_ratio", "max_ellipsis_line_ratio",
              "max_short_line_ratio", "max_newlines_per_word", "min_sentences"),
    "repetition": ("max_dup_line_ratio", "max_dup_para_ratio", "max_dup_line_char_ratio",
                   "max_dup_para_char_ratio", "max_top_ngram_char_ratio", "max_dup_ngram_char_ratio"),
    "content": ("blocked_substrings", "reject_html_tags"),
}


def active_groups(q) -> list[str]:
    """Rule groups with at least one threshold set (the others are not added to the pipeline)."""
    return [g for g, names in _GROUP_FIELDS.items() if any(getattr(q, n) not in (None, 0, False, [], {})
                                                          for n in names)]


def broken_rule(text: str, rules: list, q) -> str | None:
    """The first rule of `rules` (functions of RULE_GROUPS) that `text` breaks under thresholds `q`, or None."""
    stats = TextStats(text)
    for rule in rules:
        if (reason := rule(stats, q)) is not None:
            return reason
    return None


class QualityFilter(FilterStep):
    """datatrove step running the given rule groups in order on one shared `TextStats` per document
    (words, lines and character classes are computed once); `filter_reason` names the broken rule."""

    name = "🔍 quality"

    def __init__(self, groups: list[str], quality_cfg, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.rules, self.q = [RULE_GROUPS[g] for g in groups], quality_cfg

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason = broken_rule(doc.text, self.rules, self.q)
        return True if reason is None else (False, reason)
