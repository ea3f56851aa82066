"""The scorers on hand-checked cases, and entity F1 against seqeval on real NER data."""

from __future__ import annotations

import random

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from sklearn.metrics import f1_score as sk_f1
from sklearn.preprocessing import MultiLabelBinarizer

from pretrain.config import DownstreamTaskConfig
from pretrain.downstream.readers import read_split
from pretrain.downstream.scoring import accuracy, attachment, entity_f1, entity_spans, label_f1


def test_gold_parse_scores_one_and_a_shifted_parse_what_we_count_by_hand():
    # "The cat sat ." : The->cat(det), cat->sat(nsubj), sat->root, .->sat(punct)
    heads, rels = [[2, 3, 0, 3]], [["det", "nsubj", "root", "punct"]]
    assert attachment(heads, rels, heads, rels) == {"uas": 1.0, "las": 1.0}
    # every head moved one word right (a common error), labels kept: only "cat"'s head (3->4) ... by hand:
    shifted = [[3, 4, 0, 4]]  # The->sat (wrong), cat->. (wrong), sat->root (right), .->. (wrong)
    assert attachment(heads, rels, shifted, rels) == {"uas": 0.25, "las": 0.25}
    # right heads, one wrong label: UAS 1, LAS 3/4
    assert attachment(heads, rels, heads, [["det", "obj", "root", "punct"]]) == {"uas": 1.0, "las": 0.75}


def test_accuracy_counts_words():
    assert accuracy([["A", "B"], ["C"]], [["A", "X"], ["C"]]) == {"accuracy": 2 / 3}


def test_entity_spans_by_hand():
    assert entity_spans(["B-D", "I-D", "O", "B-C", "B-C", "I-D"]) == {("D", 0, 1), ("C", 3, 3), ("C", 4, 4),
                                                                       ("D", 5, 5)}


@pytest.mark.parametrize("corpus", ["NCBI-disease-IOB/test.tsv", "BC5CDR-IOB/devel.tsv"])
def test_entity_f1_matches_seqeval_on_real_data(data_dir, corpus):
    folder, name = corpus.split("/")
    task = DownstreamTaskConfig(name="n", type="ner", format="iob", path=str(data_dir / "science/ner" / folder),
                                train=name, test=name)
    gold = [s.tags for s in read_split(task, "test")]
    rng = random.Random(0)
    types = sorted({tag[2:] for tags in gold for tag in tags if tag != "O"})
    # a noisy tagger: drops, shifts, relabels and invents entities (some with a bare I-)
    predicted = []
    for tags in gold:
        noisy = list(tags)
        for i in range(len(noisy)):
            r = rng.random()
            if r < 0.05:
                noisy[i] = "O"
            elif r < 0.08:
                noisy[i] = f"B-{rng.choice(types)}"
            elif r < 0.10:
                noisy[i] = f"I-{rng.choice(types)}"
        predicted.append(noisy)
    ours = entity_f1(gold, predicted)
    assert 0.5 < ours["f1"] < 0.95
    assert ours["f1"] == pytest.approx(f1_score(gold, predicted), abs=1e-9)
    assert ours["precision"] == pytest.approx(precision_score(gold, predicted), abs=1e-9)
    assert ours["recall"] == pytest.approx(recall_score(gold, predicted), abs=1e-9)
    assert entity_f1(gold, gold)["f1"] == 1.0


def test_label_f1_matches_scikit_learn():
    gold = [["a"], ["a", "b"], ["c"], ["b"], ["a", "c"]]
    predicted = [["a"], ["b"], ["c", "b"], [], ["a"]]
    classes = ["a", "b", "c", "d"]  # the head's: "d" occurs in train only
    binarizer = MultiLabelBinarizer(classes=classes).fit([classes])
    y, p = binarizer.transform(gold), binarizer.transform(predicted)
    ours = label_f1(gold, predicted, classes)
    assert ours["macro_f1"] == pytest.approx(sk_f1(y, p, average="macro", zero_division=0))
    assert ours["micro_f1"] == pytest.approx(sk_f1(y, p, average="micro", zero_division=0))
    # by hand: a tp2 fp0 fn1 -> 0.8; b tp1 fp1 fn1 -> 0.5; c tp1 fp0 fn1 -> 2/3; d never true nor predicted -> 0
    assert ours["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3 + 0) / 4)


def test_macro_f1_averages_every_class_and_gold_label_not_only_those_test_uses():
    """A class the model never predicts and test never has counts as 0, and so does a gold label train
    never has (unseen_labels=score_as_wrong): a rare class cannot drop out of the average."""
    gold = [["a"], ["a"], ["b"], ["new"]]
    predicted = [["a"], ["b"], ["b"], ["a"]]
    scores = label_f1(gold, predicted, ["a", "b", "rare"])
    # by hand: a tp1 fp1 fn1 -> 0.5; b tp1 fp1 fn0 -> 2/3; rare -> 0; new tp0 fn1 -> 0
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0 + 0) / 4)
    assert scores["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))  # tp2 fp2 fn2
    assert label_f1([["a"], ["b"]], [["a"], ["b"]], ["a", "b"])["macro_f1"] == 1.0
