"""The scores the papers report, computed on words, entities and texts (plain Python, checked by hand
and against seqeval in the tests).

- tagging: accuracy over words;
- parsing: UAS (right head) and LAS (right head and universal relation) over words, punctuation included,
  as the CoNLL 2018 shared task scores them;
- NER: entity-level precision, recall and F1 over exact (type, start, end) matches of IOB2 spans;
- classification: F1 per label, then macro (mean over the head's classes and the test's gold labels, each
  counted even where never predicted) and micro (over all decisions).
"""

from __future__ import annotations

from collections import Counter

MAIN_METRIC = {"upos": "accuracy", "xpos": "accuracy", "feats": "accuracy", "parse": "las", "ner": "f1",
               "classify": "macro_f1"}
"""The score each task type is judged by: early stopping, sweep tables, the summary line."""


def accuracy(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    right = sum(g == p for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True))
    total = sum(len(gs) for gs in gold)
    return {"accuracy": right / total if total else 0.0}


def attachment(gold_heads: list[list[int]], gold_rels: list[list[str]], heads: list[list[int]],
               rels: list[list[str]]) -> dict:
    words = uas = las = 0
    for gh, gr, ph, pr in zip(gold_heads, gold_rels, heads, rels, strict=True):
        for g_head, g_rel, p_head, p_rel in zip(gh, gr, ph, pr, strict=True):
            words += 1
            if g_head == p_head:
                uas += 1
                las += g_rel == p_rel
    return {"uas": uas / words if words else 0.0, "las": las / words if words else 0.0}


def entity_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first word, last word) of each entity in one IOB2 sentence."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        continues = tag.startswith("I-") and kind == tag[2:]
        if start is not None and not continues:
            spans.add((kind, start, i - 1))
            start, kind = None, None
        if tag.startswith("B-") or (tag.startswith("I-") and not continues):
            start, kind = i, tag[2:]
    return spans


def entity_f1(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Exact-match entity scores; a predicted I- without its B- opens an entity (as conlleval reads it)."""
    true_pos = n_gold = n_pred = 0
    for gs, ps in zip(gold, predicted, strict=True):
        g, p = entity_spans(gs), entity_spans(ps)
        true_pos += len(g & p)
        n_gold += len(g)
        n_pred += len(p)
    precision = true_pos / n_pred if n_pred else 0.0
    recall = true_pos / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}


def label_f1(gold: list[list[str]], predicted: list[list[str]], classes: list[str]) -> dict:
    """Macro and micro F1 for texts with one label or several each. Macro averages a fixed label set: the
    head's `classes` (train's labels), every gold label and every predicted one (the head predicts only
    its classes); a label with no true and no predicted instance scores 0. This is scikit-learn's
    `f1_score(average="macro", zero_division=0)` on the label-indicator matrix over those labels.
    Averaging only the labels a test split happens to use would leave out the rare classes a model never
    predicts and inflate the score (EUR-Lex: 0.86 where the fixed set gives 0.52)."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for gs, ps in zip(gold, predicted, strict=True):
        g, p = set(gs), set(ps)
        for label in g & p:
            tp[label] += 1
        for label in p - g:
            fp[label] += 1
        for label in g - p:
            fn[label] += 1

    def f1(t: int, f_p: int, f_n: int) -> float:
        return 2 * t / (2 * t + f_p + f_n) if t + f_p + f_n else 0.0

    scored = set(classes) | {label for rows in (gold, predicted) for labels in rows for label in labels}
    per_label = [f1(tp[label], fp[label], fn[label]) for label in scored]
    micro = f1(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    return {"macro_f1": sum(per_label) / len(per_label) if per_label else 0.0, "micro_f1": micro}
