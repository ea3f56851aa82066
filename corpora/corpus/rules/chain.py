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
from corpora.corpus.rules.lists import (SOURCE_LIST, BlocklistFilter, StopwordFilter, UrlFilter,
                                        derive_stopwords, read_word_list)
from corpora.corpus.rules.lines import LineCleaner
from corpora.corpus.normalise import Normaliser
from corpora.corpus.rules.quality import QualityFilter, active_groups
from corpora.corpus.rules.settings import check_filter_settings
from corpora.config import FiltersConfig


def check_stopwords(filters: FiltersConfig) -> None:
    """ConfigError, naming the keys, for given stop-word lists that no document would be judged by.

    Without language ID a document has no language, so only a `default` list can apply to it; with
    language ID, only the lists of `filters.langid.languages` (or `default`). Called while planning.
    """
    cfg = filters.stopwords
    if not cfg.min_stopwords or not cfg.words or "default" in cfg.words:
        return
    named = sorted(cfg.words)
    if not filters.langid.languages:
        raise ConfigError(
            f"filters.stopwords.words has lists for {named} but no `default` list, and language ID is off "
            f"(filters.langid.languages is empty): no document has a language, so with "
            f"filters.stopwords.min_stopwords={cfg.min_stopwords} no list would be applied. Name the list "
            f"`default` (filters.stopwords.words.default=[...], applied to every document) or turn on "
            f"language ID (filters.langid.languages={named})")
    if not set(named) & set(filters.langid.languages):
        raise ConfigError(
            f"filters.stopwords.words has lists for {named}, none of the languages language ID keeps "
            f"(filters.langid.languages={list(filters.langid.languages)}), and no `default` list: no "
            f"document would be judged. Key the lists by those language codes or add a `default` list")


def stopword_lists(filters: FiltersConfig, sample_texts: Callable[[int], Iterable[tuple[str, str]]]
                   ) -> dict[str, list[str]]:
    """The configured lists, or `derive_top_k` words derived from a sample of the corpus.

    `sample_texts(count)` gives (source tag, text) pairs, an equal share from each input. With
    language ID on, words are derived per identified language (a mixed Irish/Estonian corpus gets
    an Irish list and an Estonian list, each document judged by its own language's list). Without
    it, one list per source tag (`source=<tag>`, applied by `metadata.source`), so that the
    minority input of a mixed corpus is not judged by the majority's function words, and a
    `default` list from the whole sample; a corpus of one tag gets only the `default` list. Lists that
    no document would be judged by were refused while planning (`check_stopwords`).
    """
    cfg = filters.stopwords
    if cfg.words:
        return {lang: list(words) for lang, words in cfg.words.items()}
    if not cfg.derive_top_k:
        return {}
    sample = list(sample_texts(cfg.derive_sample_docs))
    if not filters.langid.languages:
        by_source: dict[str, list[str]] = {}
        for tag, text in sample:
            by_source.setdefault(tag, []).append(text)
        if len(by_source) <= 1:
            return {"default": derive_stopwords((text for _, text in sample), cfg.derive_top_k)}
        per_input = {f"{SOURCE_LIST}{tag}": derive_stopwords(texts, cfg.derive_top_k)
                     for tag, texts in sorted(by_source.items())}
        # `default`: for a record whose own `source` field replaced its input's tag
        return per_input | {"default": derive_stopwords((text for _, text in sample), cfg.derive_top_k)}
    identify = LanguageIdentifier(filters.langid.backend)
    by_language: dict[str, list[str]] = {}
    for _, text in sample:
        language, _ = identify(text[: filters.langid.max_chars] if filters.langid.max_chars else text)
        if language in filters.langid.languages:
            by_language.setdefault(language, []).append(text)
    return {lang: derive_stopwords(docs, cfg.derive_top_k) for lang, docs in sorted(by_language.items())}


def describe_stopword_lists(stopwords: dict[str, list[str]]) -> str:
    """The text of stopwords.txt: one `key: words` line per list, after comment lines saying which
    documents each kind of key applies to."""
    header = ["# Stop-word lists, one per line as `key: words`. A document is judged by the list of its",
              "# identified language (key = language code), else by that of its input (key =",
              "# source=<input name>: lists derived per input with language ID off), else by `default`;",
              "# with none of these it is not judged."]
    return "\n".join(header + [f"{key}: {' '.join(words)}" for key, words in stopwords.items()]) + "\n"


def filter_steps(filters: FiltersConfig, removed_writer: Callable[[str], object], stopwords: dict[str, list[str]],
                 cut_lines_folder: str) -> list[PipelineStep]:
    """datatrove steps for `filters` (a FiltersConfig); `removed_writer(step)` gives each its writer,
    and lines cut by the line rules go to `cut_lines_folder`."""
    check_filter_settings(filters)  # planning checked it too; this function is also called directly
    steps: list[PipelineStep] = [Normaliser(filters.normalise, exclusion_writer=removed_writer("normalise"))]
    line_groups = active_groups(filters.line_quality)
    if line_groups:
        steps.append(LineCleaner(line_groups, filters.line_quality, cut_lines_folder,
                                 exclusion_writer=removed_writer("lines")))
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
        steps.append(BlocklistFilter(phrases, filters.blocklist.max_matches, filters.normalise,
                                     exclusion_writer=removed_writer("blocklist")))
    if filters.langid.languages:
        steps.append(LanguageFilter(filters.langid, exclusion_writer=removed_writer("language")))
    if filters.stopwords.min_stopwords and stopwords:
        steps.append(StopwordFilter(stopwords, filters.stopwords.min_stopwords,
                                    exclusion_writer=removed_writer("stopwords")))
    return steps
