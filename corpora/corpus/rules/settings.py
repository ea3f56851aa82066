"""The filters' thresholds checked from the config alone, while planning.

A threshold out of its range does not fail: a share typed as a percentage (`min_alpha_word_ratio: 80`)
removes every document and a negative count turns its rule into one that always passes, each found only
in report.md after the whole corpus was read. An unknown script name or n-gram key fails in the first
worker, after planning let a sweep submit every job. Here each is refused naming its key.
"""

from __future__ import annotations

import math
from dataclasses import fields

import regex

from bertforge.common.errors import ConfigError
from corpora.config import FiltersConfig, QualityConfig
from corpora.corpus.normalise import UNICODE_FORMS
from corpora.corpus.rules.language import BACKENDS

# `*_ratio` thresholds that are not shares of a whole: '#'s and ellipses per word can pass 1
NOT_SHARES = ("max_hash_ellipsis_word_ratio",)
# (low, high) bounds whose low one above the high one removes every document
PAIRS = (("min_words", "max_words"), ("min_chars", "max_chars"), ("min_mean_word_chars", "max_mean_word_chars"))


def check_filter_settings(filters: FiltersConfig) -> None:
    """ConfigError naming the key for a threshold of `filters` outside what it can mean: a share outside
    [0, 1], a negative count or limit, a minimum above its maximum, an n-gram size that is not a whole
    number from 1, an unknown Unicode script, normal form or language-ID backend, a foreign-letter rule
    without its alphabet, an empty terminal-punctuation mark."""
    for key, quality in (("filters.quality", filters.quality), ("filters.line_quality", filters.line_quality)):
        _check_quality(key, quality)
    if filters.normalise.unicode_form not in UNICODE_FORMS:
        raise ConfigError(f"filters.normalise.unicode_form={filters.normalise.unicode_form!r}: choose one of "
                          f"{', '.join(UNICODE_FORMS)}")
    langid = filters.langid
    if langid.languages:
        if langid.backend not in BACKENDS:
            raise ConfigError(f"filters.langid.backend={langid.backend!r}: choose one of {', '.join(BACKENDS)}")
        _share("filters.langid.min_score", langid.min_score)
        _at_least("filters.langid.max_chars", langid.max_chars, 0, "0 classifies the whole text")
    if filters.urls.max_url_chars_ratio is not None:
        _share("filters.urls.max_url_chars_ratio", filters.urls.max_url_chars_ratio)
    _at_least("filters.stopwords.min_stopwords", filters.stopwords.min_stopwords, 0, "0 turns the rule off")
    _at_least("filters.stopwords.derive_top_k", filters.stopwords.derive_top_k, 0, "0: use stopwords.words")
    if filters.stopwords.derive_top_k:
        _at_least("filters.stopwords.derive_sample_docs", filters.stopwords.derive_sample_docs, 1,
                  "the documents the stop words are derived from")
    _at_least("filters.blocklist.max_matches", filters.blocklist.max_matches, 0,
              "0 removes a document with any match")
    _at_least("filters.min_repeated_line_docs", filters.min_repeated_line_docs, 0, "0 turns the rule off")


def _check_quality(key: str, q: QualityConfig) -> None:
    for field in fields(q):
        value = getattr(q, field.name)
        if value is None or isinstance(value, (bool, str, list)):
            continue
        if isinstance(value, dict):  # n -> share of characters
            for n, limit in value.items():
                if not str(n).isdigit() or int(n) < 1:
                    raise ConfigError(f"{key}.{field.name} has the key {n!r}: give n-gram sizes as whole numbers "
                                      "from 1 (e.g. {\"2\": 0.2})")
                _share(f"{key}.{field.name}.{n}", limit)
        elif field.name.endswith("_ratio") and field.name not in NOT_SHARES:
            _share(f"{key}.{field.name}", value)
        else:
            _at_least(f"{key}.{field.name}", value, 0, "0 or null turns the rule off")
    for low, high in PAIRS:
        lowest, highest = getattr(q, low), getattr(q, high)
        if lowest and highest and lowest > highest:
            raise ConfigError(f"{key}.{low}={lowest} is above {key}.{high}={highest}: no document could pass; "
                              "swap them or lower the first")
    for name in q.scripts:
        try:
            regex.compile(rf"\p{{Script={name}}}")
        except regex.error:
            raise ConfigError(f"{key}.scripts holds {name!r}, which is not a Unicode script name (e.g. Latin, "
                              "Cyrillic, Greek, Arabic, Han)") from None
    if any(not isinstance(mark, str) or not mark.strip() for mark in q.terminal_punct):
        # every line ends in "": an empty mark would turn the terminal-punctuation rule off unnoticed
        raise ConfigError(f"{key}.terminal_punct={list(q.terminal_punct)!r} holds an empty or non-text "
                          "mark: give the marks a line may end in (e.g. [\".\", \"?\", \"!\"]), or [] for "
                          "the default")
    if q.max_foreign_letter_ratio is not None and not q.alphabet:
        raise ConfigError(f"{key}.max_foreign_letter_ratio needs {key}.alphabet (the language's letters, "
                          "e.g. abcdefghijklmnopqrstuvwxyzáéíóú)")


def _share(key: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value <= 1):  # also refuses NaN
        hint = f" ({value / 100:g} for {value:g} %)" if isinstance(value, (int, float)) and 1 < value <= 100 else ""
        raise ConfigError(f"{key}={value}: give a share from 0 to 1{hint}")


def _at_least(key: str, value: float, lowest: float, meaning: str) -> None:
    if not (isinstance(value, (int, float)) and not math.isnan(value) and value >= lowest):
        raise ConfigError(f"{key}={value}: give {lowest} or more ({meaning})")
