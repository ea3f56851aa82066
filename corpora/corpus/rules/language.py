"""Offline language identification: models shipped inside PyPI packages, nothing downloaded.

Backends: `cld2` (pycld2: Google's CLD2 in C++, ~80 languages incl. ga, et, pl; fast) and
`py3langid` (langid.py's naive Bayes model, 97 languages, pure Python + numpy; ~10x slower).
Each returns (ISO 639-1 code, score in 0..1); a language without a 639-1 code keeps CLD2's 639-2/3
one (ceb, haw...). CLD2's deprecated codes are mapped to today's (`CLD2_TO_ISO`: iw -> he, jw -> jv).
"""

from __future__ import annotations

from datatrove.data import Document

from corpora.corpus.rules.base import FilterStep
from corpora.config import LangIdConfig

BACKENDS = ("cld2", "py3langid")
# CLD2 still reports the withdrawn codes of Hebrew and Javanese (ISO 639-1 changed them in 1989 and 2001);
# py3langid, and so users writing filters.langid.languages, say he and jv
CLD2_TO_ISO = {"iw": "he", "jw": "jv"}


class LanguageIdentifier:
    """Callable text -> (language, score); the model is loaded lazily (once per worker process)."""

    def __init__(self, backend: str = "cld2"):
        if backend not in BACKENDS:
            raise ValueError(f"filters.langid.backend must be one of {BACKENDS}, not {backend!r}")
        self.backend = backend
        self._model = None

    def _load(self):
        if self.backend == "cld2":
            import pycld2

            self._model = pycld2
        else:
            from py3langid.langid import MODEL_FILE
            from py3langid.langid import LanguageIdentifier as NaiveBayes

            self._model = NaiveBayes.from_model_file(MODEL_FILE, norm_probs=True)

    def __call__(self, text: str) -> tuple[str, float]:
        if self._model is None:
            self._load()
        if self.backend == "cld2":
            try:
                _, _, details = self._model.detect(text, bestEffort=True)
            except self._model.error:  # CLD2 rejects some invalid code points (lone surrogates)
                return "und", 0.0
            name, code, percent, _ = details[0]
            # "un": unknown; "zh-Hant", "sr-ME" name a script or region. percent: share of the text's bytes
            if code == "un":
                return "und", 0.0
            code = code.split("-")[0]
            return CLD2_TO_ISO.get(code, code), percent / 100.0
        code, prob = self._model.classify(text)
        return code, float(prob)


class LanguageFilter(FilterStep):
    """Keeps documents whose best language is in `languages` with score >= `min_score`.

    Stores `language` and `language_score` in the metadata of every document it sees, so the
    report can give the language mix and removed documents say what they were taken for.
    """

    name = "🌍 language"

    def __init__(self, cfg: LangIdConfig, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.identify = LanguageIdentifier(cfg.backend)
        self.keep, self.min_score, self.max_chars = set(cfg.languages), cfg.min_score, cfg.max_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        language, score = self.identify(doc.text[: self.max_chars] if self.max_chars else doc.text)
        doc.metadata["language"], doc.metadata["language_score"] = language, round(score, 3)
        if language not in self.keep:
            return False, "wrong_language"
        if score < self.min_score:
            return False, "low_language_score"
        return True
