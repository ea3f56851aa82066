"""Line-level cleaning: the document rules applied to each line on its own, cutting the lines that break them.

C4 keeps only the lines of a page that end in terminal punctuation and hold at least 3 words; FineWeb
keeps C4's line rules but the punctuation one; OpusFilter scores segments, not documents.
`filters.line_quality` takes the same thresholds as `filters.quality` (a `QualityConfig`), judged on
each non-blank line: a line that breaks one is cut out of its document and written aside, with its
rule, under removed_lines/lines/. A document left with no line is removed as `no_lines_left` (written
aside whole, its lines not listed again). The document rules then judge what is left.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from datatrove.data import Document, DocumentsPipeline

from corpora.corpus.rules.base import FilterStep
from corpora.corpus.normalise import BLANK_RUNS
from corpora.corpus.rules.quality import RULE_GROUPS, broken_rule
from corpora.corpus.writers import CutLineLog


def split_lines(text: str, rule_of: Callable[[str], str | None]
                ) -> tuple[list[str], list[tuple[str, str]]]:
    """(lines kept, (line, rule) pairs cut) of `text`, where `rule_of(line)` names the rule a line
    breaks, or None to keep it."""
    kept, cut = [], []
    for line in text.split("\n"):
        rule = rule_of(line)
        if rule is None:
            kept.append(line)
        else:
            cut.append((line, rule))
    return kept, cut


class LineCleaner(FilterStep):
    """datatrove step: cut the lines that break `line_cfg` (rule groups `groups`) out of every document."""

    name = "✂️ line rules"

    def __init__(self, groups: list[str], line_cfg, cut_lines_folder: str, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.rules, self.q, self.cut_lines_folder = [RULE_GROUPS[g] for g in groups], line_cfg, cut_lines_folder
        self._cut_log: CutLineLog | None = None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self._cut_log = CutLineLog(self.cut_lines_folder, rank)
        try:
            yield from super().run(data, rank, world_size)
        finally:
            self._cut_log.close()

    def _rule_of(self, line: str) -> str | None:
        return broken_rule(line, self.rules, self.q) if line.strip() else None  # blank lines stay

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        kept, cut = split_lines(doc.text, self._rule_of)
        if not cut:
            return True
        text = BLANK_RUNS.sub("\n\n", "\n".join(kept)).strip()
        if not text:
            doc.metadata["cut_line_rules"] = dict(Counter(rule for _, rule in cut))  # why, on the removed copy
            return False, "no_lines_left"
        doc.text = text
        self._cut_log.write(doc.id, cut)
        self.stat_update("lines_cut", value=len(cut))
        return True
