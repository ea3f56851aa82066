"""The filtering part of the corpus pipeline, in order, as datatrove steps built from `FiltersConfig`.

normalise -> line rules (cut lines) -> quality rule groups -> URL rules -> blocklist -> language ID -> stop words.
Cheap rules come first so expensive ones see fewer documents; language ID comes before stop
words because the stop-word list is chosen by the detected language. A step whose thresholds are
all off is not in the pipeline at all. Each step writes what it removes to removed/<step>/.
"""

from __future__ import annotations

from typing import Callable, Iterable

from datatrove.pipeline.base import PipelineStep

from bertforge.common.errors import ConfigError

from corpora.corpus.rules.language import LanguageFilter, LanguageIdentifier
from corpora.corpus.rules.lists import BlocklistFilter, StopwordFilter, UrlFilter, derive_stopwords, read_word_list
from corpora.corpus.rules.lines import LineCleaner
from corpora.corpus.normalise import Normaliser
from corpora.corpus.rules.quality import QualityFilter, active_groups
from corpora.config import FiltersConfig


def stopword_lists(filters: FiltersConfig, sample_texts: Callable[[int], Iterable[str]]) -> dict[str, list[str]]:
    """The configured lists, or `derive_top_k` words derived from a sample of the corpus.

    With language ID on, words are derived per identified language (a mixed Irish/Estonian corpus
    gets an Irish list and an Estonian list, each document judged by its own language's list);
    without it, one `default` list.
    """
    cfg = filters.stopwords
    if cfg.words:
        return {lang: list(words) for lang, words in cfg.words.items()}
    if not cfg.derive_top_k:
        return {}
    texts = list(sample_texts(cfg.derive_sample_docs))
    if not filters.langid.languages:
        return {"default": derive_stopwords(texts, cfg.derive_top_k)}
    identify = LanguageIdentifier(filters.langid.backend)
    by_language: dict[str, list[str]] = {}
    for text in texts:
        language, _ = identify(text[: filters.langid.max_chars] if filters.langid.max_chars else text)
        if language in filters.langid.languages:
            by_language.setdefault(language, []).append(text)
    return {lang: derive_stopwords(docs, cfg.derive_top_k) for lang, docs in sorted(by_language.items())}


def filter_steps(filters: FiltersConfig, removed_writer: Callable[[str], object], stopwords: dict[str, list[str]],
                 cut_lines_folder: str) -> list[PipelineStep]:
    """datatrove steps for `filters` (a FiltersConfig); `removed_writer(step)` gives each its writer,
    and lines cut by the line rules go to `cut_lines_folder`."""
    steps: list[PipelineStep] = [Normaliser(filters.normalise, exclusion_writer=removed_writer("normalise"))]
    line_groups = active_groups(filters.line_quality)
    if line_groups:
        steps.append(LineCleaner(line_groups, filters.line_quality, cut_lines_folder,
                                 exclusion_writer=removed_writer("lines")))
    for key, q in (("filters.quality", filters.quality), ("filters.line_quality", filters.line_quality)):
        if q.max_foreign_letter_ratio is not None and not q.alphabet:
            raise ConfigError(f"{key}.max_foreign_letter_ratio needs {key}.alphabet (the language's letters, "
                              "e.g. abcdefghijklmnopqrstuvwxyzáéíóú)")
    groups = active_groups(filters.quality)
    if groups:
        steps.append(QualityFilter(groups, filters.quality, exclusion_writer=removed_writer("quality")))
    urls = filters.urls
    blocked = list(urls.blocked_domains)
    if urls.blocked_domains_file:
        blocked += read_word_list(urls.blocked_domains_file, "filters.urls.blocked_domains_file")
    if blocked or urls.allowed_tlds or urls.max_url_chars_ratio is not None:
        steps.append(UrlFilter(urls, blocked, exclusion_writer=removed_writer("urls")))
    if filters.blocklist.file:
        phrases = read_word_list(filters.blocklist.file, "filters.blocklist.file")
        steps.append(BlocklistFilter(phrases, filters.blocklist.max_matches,
                                     exclusion_writer=removed_writer("blocklist")))
    if filters.langid.languages:
        steps.append(LanguageFilter(filters.langid, exclusion_writer=removed_writer("language")))
    if filters.stopwords.min_stopwords and stopwords:
        steps.append(StopwordFilter(stopwords, filters.stopwords.min_stopwords,
                                    exclusion_writer=removed_writer("stopwords")))
    return steps
