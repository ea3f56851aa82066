"""Word-list and URL rules: stop-word presence, a user blocklist, domains of web documents.

Nothing here ships an English word list: stop words come from config (per language) or are
derived from the corpus itself (`derive_stopwords`), and the blocklist is the user's own file.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

import numpy as np
from datatrove.data import Document

from bertforge.common.errors import CorpusInputError
from corpora.corpus.normalise import normalise_options, normalise_text
from corpora.corpus.rules.base import FilterStep
from corpora.corpus.text_batch import TextBatch, batches_of
from corpora.config import NormaliseConfig, UrlConfig

_WORD = re.compile(r"\w+")
_WINDOW = 300
SOURCE_LIST = "source="  # key prefix of a list for one input's documents (derived per input, language ID off)
_URL_IN_TEXT = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)


def derive_stopwords(texts: Iterable[str], top_k: int) -> list[str]:
    """The `top_k` words (casefolded) found in the most documents: a language's function words."""
    doc_freq: Counter = Counter()
    for text in texts:
        doc_freq.update(set(_WORD.findall(text.casefold())))
    return [word for word, _ in doc_freq.most_common(top_k)]


def has_stopwords(text: str, stopwords: frozenset[str], needed: int) -> bool:
    """True when `text` has at least `needed` stop-word tokens (casefolded Unicode words).

    Reads (and casefolds) a window of about `_WINDOW` characters at a time, cut at a space so no word
    is split, and stops at the `needed`-th: in real text that is within the first window.
    """
    found, start = 0, 0
    while found < needed and start < len(text):
        end = text.find(" ", start + _WINDOW)
        end = len(text) if end < 0 else end
        for match in _WORD.finditer(text[start:end].casefold()):
            if match.group() in stopwords:
                found += 1
                if found >= needed:
                    break
        start = end
    return found >= needed


class StopwordFilter(FilterStep):
    """Drops documents with fewer than `min_stopwords` stop-word tokens of their language.

    `words` maps a language code (as set by the language step) to its list; `source=<tag>` to the
    list of the documents whose `metadata.source` is that tag (derived per input without language
    ID); `default` applies to the other documents. Tokens are counted for a batch at a time, on the
    batch the quality step read the documents in where there is one (`corpora.corpus.text_batch`): a
    token is a stop word when its hash is among the list's. A document whose case folding is not
    one code point to one is counted by `has_stopwords` instead.
    """

    name = "🛑 stop words"

    def __init__(self, words: dict[str, list[str]], min_stopwords: int, exclusion_writer=None):
        super().__init__(exclusion_writer, batch_size=256)
        self.words = {lang: frozenset(w.casefold() for w in ws) for lang, ws in words.items()}
        self.min_stopwords = min_stopwords
        # only a list entry that is one \w+ word can ever equal a token
        self._hashes = {lang: np.unique(TextBatch(sorted(w for w in ws if _WORD.fullmatch(w))).unicode_words[0])
                        for lang, ws in self.words.items()}

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, docs: list[Document]) -> list[bool | tuple[bool, str]]:
        verdicts: list = [True] * len(docs)
        for batch, rows, positions in batches_of(docs):
            hits = batch.cached("stopword_hits", self._hits)
            for row, position in zip(rows.tolist(), positions):
                doc = docs[position]
                key = self._list_for(doc.metadata)
                if key is None:
                    continue  # no list for this document: the rule cannot judge it
                if batch.expands[row]:
                    enough = has_stopwords(doc.text, self.words[key], self.min_stopwords)
                else:
                    enough = hits[key][row] >= self.min_stopwords
                if not enough:
                    verdicts[position] = (False, "few_stopwords")
        return verdicts

    def _list_for(self, metadata: dict) -> str | None:
        """The key of the list that judges a document: its language's, else its input's, else `default`."""
        for key in (metadata.get("language"), f"{SOURCE_LIST}{metadata.get('source')}", "default"):
            if key in self.words:
                return key
        return None

    def _hits(self, batch: TextBatch) -> dict[str, np.ndarray]:
        """Per list, its stop-word tokens in each document of `batch`."""
        hashes, owner = batch.unicode_words
        return {lang: np.bincount(owner[np.isin(hashes, listed)], minlength=batch.size)
                for lang, listed in self._hashes.items()}


def read_word_list(path: str, key: str) -> list[str]:
    """Non-empty, non-comment lines of a UTF-8 file; a clear error names the file and config key."""
    file = Path(path)
    if not file.is_file():
        raise CorpusInputError(path, "does not exist", f"Fix {key} or set it to an empty string.")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise CorpusInputError(path, f"is not UTF-8 ({err.reason})", "Re-encode it as UTF-8.") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class BlocklistFilter(FilterStep):
    """Drops documents with more than `max_matches` whole-word matches of the user's phrases.

    The phrases are normalised as the documents were (`normalise`: filters.normalise, NFC by default), so
    a list saved in NFD (macOS editors), or in fullwidth letters that NFKC unfolds, still matches; the words
    of a phrase match across any run of whitespace, a line break included.
    """

    name = "⛔ blocklist"

    def __init__(self, phrases: list[str], max_matches: int = 0, normalise: NormaliseConfig | None = None,
                 exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.pattern = blocklist_pattern(phrases, normalise or NormaliseConfig())
        self.max_matches = max_matches

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.pattern is None:
            return True
        matches = 0
        for _ in self.pattern.finditer(doc.text.casefold()):
            matches += 1
            if matches > self.max_matches:
                return False, "blocklist"
        return True


def blocklist_pattern(phrases: list[str], normalise: NormaliseConfig) -> re.Pattern | None:
    """One regex for whole-word, case-insensitive (casefolded) matches of any of `phrases`; None for none."""
    options = normalise_options(normalise)
    words = {tuple(normalise_text(p, **options).casefold().split()) for p in phrases} - {()}
    longest_first = sorted(words, key=lambda w: len(" ".join(w)), reverse=True)  # "bad word" before "bad"
    alternatives = [r"\s+".join(map(re.escape, w)) for w in longest_first]
    return re.compile(rf"(?<!\w)(?:{'|'.join(alternatives)})(?!\w)") if alternatives else None


def domain_of(url: str) -> str:
    """Lower-cased host of a URL without port, leading `www.` or trailing dot ('' when there is none);
    ValueError when the URL cannot be parsed (an unclosed `[` of an IPv6 host, say)."""
    host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    # "example.com." is the fully qualified form of example.com: it must meet the same domain rules
    return host.removesuffix(".").removeprefix("www.")


class UrlFilter(FilterStep):
    """Web-source rules: blocked domains (with subdomains), allowed top-level domains, URL-heavy text.

    With domain rules on, a document whose metadata URL cannot be parsed is removed as `bad_url`: its
    domain cannot be judged, and web dumps hold such URLs.
    """

    name = "🔗 urls"

    def __init__(self, cfg: UrlConfig, blocked_domains: list[str], exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.key = cfg.metadata_key
        self.blocked = frozenset(d.strip().lower().removesuffix(".").removeprefix("www.")
                                 for d in blocked_domains)
        self.allowed_tlds = frozenset(t.lower().lstrip(".") for t in cfg.allowed_tlds)
        self.max_url_chars_ratio = cfg.max_url_chars_ratio

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        url = doc.metadata.get(self.key)
        if (self.blocked or self.allowed_tlds) and isinstance(url, str) and url:
            try:
                host = domain_of(url)
            except ValueError:
                return False, "bad_url"
            parts = host.split(".")
            if any(".".join(parts[i:]) in self.blocked for i in range(len(parts))):
                return False, "blocked_domain"
            if self.allowed_tlds and parts[-1] not in self.allowed_tlds:
                return False, "tld_not_allowed"
        if self.max_url_chars_ratio is not None:
            url_chars = sum(len(m) for m in _URL_IN_TEXT.findall(doc.text))
            if url_chars > self.max_url_chars_ratio * max(1, len(doc.text)):
                return False, "url_heavy"
        return True
