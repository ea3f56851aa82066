"""Text normalisation before any filter: Unicode form, control characters, whitespace, mojibake.

`normalise_text` is a pure function; `Normaliser` is the datatrove step that applies it and drops
documents left empty (written aside with the rule `empty_after_normalisation`).
"""

from __future__ import annotations

import re
import unicodedata

from datatrove.data import Document

from corpora.corpus.rules.base import FilterStep
from corpora.config import NormaliseConfig

# C0/C1 controls, DEL, and the non-characters/format marks that break tokenisers (BOM, soft hyphen);
# not the controls that are whitespace (tab, the separators below, \x1f), which must not glue two words
# together. Zero-width (non-)joiners are kept: Persian and Indic scripts need them.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ufeff\u00ad\ufffe\uffff]")
_CR = re.compile(r"\r\n?")
# What str.splitlines also ends a line at: vertical tab, form feed (pdftotext's page break), the file, group
# and record separators, NEL, and Unicode's line and paragraph separators. Each becomes a newline.
_LINE_BREAKS = re.compile("[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace except newline (tabs, NBSP, ideographic space...)
_LINE_EDGES = re.compile(r" *\n *")
BLANK_RUNS = re.compile(r"\n{3,}")  # folded to one blank line (a paragraph break)
# a control character or whitespace other than a plain space or a newline, as one character class
# (an alternation of two classes scanned four times slower)
_ODD_CHAR = re.compile(_CONTROL.pattern[:-1] + "".join(
    re.escape(chr(i)) for i in range(0x10000) if chr(i).isspace() and chr(i) not in " \n") + "]")


def normalise_text(text: str, unicode_form: str = "NFC", remove_control_chars: bool = True,
                   collapse_spaces: bool = True, fix_mojibake: bool = False) -> str:
    """Return `text` normalised; paragraph breaks (blank lines) survive, other whitespace runs do not, and
    line, page and record separators become newlines."""
    if fix_mojibake:
        import ftfy  # optional: pip install ftfy

        text = ftfy.fix_text(text, normalization=unicode_form if unicode_form != "none" else None)
    elif unicode_form != "none" and not (text.isascii()):  # ASCII is already in every normal form
        text = unicodedata.normalize(unicode_form, text)
    if "\r" in text:
        text = _CR.sub("\n", text)
    # One scan finds whether anything below applies: on the usual, already clean text nothing does.
    odd = _ODD_CHAR.search(text) is not None
    if odd:
        text = _LINE_BREAKS.sub("\n", text)
    if remove_control_chars and odd:
        text = _CONTROL.sub("", text)
    if collapse_spaces and (odd or "  " in text or " \n" in text or "\n " in text or "\n\n\n" in text):
        text = BLANK_RUNS.sub("\n\n", _LINE_EDGES.sub("\n", _SPACES.sub(" ", text)))
    return text.strip()


def normalise_options(cfg: NormaliseConfig) -> dict:
    """`normalise_text`'s keyword arguments for the `filters.normalise` settings `cfg`."""
    return dict(unicode_form=cfg.unicode_form, remove_control_chars=cfg.remove_control_chars,
                collapse_spaces=cfg.collapse_spaces, fix_mojibake=cfg.fix_mojibake)


UNICODE_FORMS = ("NFC", "NFKC", "none")  # filters.normalise.unicode_form


class Normaliser(FilterStep):
    """datatrove step: normalise every document's text in place (see `normalise_text`)."""

    name = "🧼 normalise"

    def __init__(self, cfg: NormaliseConfig, exclusion_writer=None):
        super().__init__(exclusion_writer)
        if cfg.unicode_form not in UNICODE_FORMS:
            raise ValueError(f"filters.normalise.unicode_form must be NFC, NFKC or none, not {cfg.unicode_form!r}")
        if cfg.fix_mojibake:
            try:
                import ftfy  # noqa: F401
            except ImportError:
                raise ValueError("filters.normalise.fix_mojibake needs ftfy: pip install ftfy") from None
        self.options = normalise_options(cfg)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        doc.text = normalise_text(doc.text, **self.options)
        return True if doc.text else (False, "empty_after_normalisation")
