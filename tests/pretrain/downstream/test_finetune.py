"""One fine-tune per task type on real data with a tiny model: it learns, and scores come out whole."""

from __future__ import annotations

from collections import Counter

import pytest
from transformers import AutoTokenizer

from pretrain.config import DownstreamConfig, DownstreamTaskConfig
from pretrain.downstream.finetune import fine_tune
from pretrain.downstream.readers import TaskData
from pretrain.downstream.stage import load_task

RECIPE = DownstreamConfig(epochs=3, batch_size=16, lr=1e-3, head_lr=1e-2, max_length=64, seeds=1)


def capped(data: TaskData, train: int, test: int) -> TaskData:
    return TaskData(data.task, data.train[:train], data.dev[:test], data.test[:test], data.labels)


def irish(data_dir, task_type: str) -> TaskData:
    return load_task(DownstreamTaskConfig(
        name="ga", type=task_type, format="conllu", path=str(data_dir / "ud/UD_Irish-IDT"),
        train="ga_idt-ud-dev.conllu", test="ga_idt-ud-test.conllu", unseen_labels="score_as_wrong"))


def test_upos_tagger_beats_the_majority_tag(data_dir, tiny_encoder):
    data = capped(irish(data_dir, "upos"), 200, 80)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    result = fine_tune(data, str(tiny_encoder), tokenizer, untrained=False, seed=0, recipe=RECIPE)
    tags = Counter(tag for s in data.test for tag in s.tags)
    majority = tags.most_common(1)[0][1] / sum(tags.values())
    assert result["accuracy"] > majority + 0.1
    assert result["epochs"] == 3 and result["unreached_words"] >= 0


def test_parser_scores_words_and_counts_the_cut_ones(data_dir, tiny_encoder):
    data = capped(irish(data_dir, "parse"), 120, 40)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    short = DownstreamConfig(**{**RECIPE.__dict__, "max_length": 16, "epochs": 2})
    result = fine_tune(data, str(tiny_encoder), tokenizer, untrained=True, seed=1, recipe=short)
    assert 0.0 <= result["las"] <= result["uas"] <= 1.0
    # with 16 subwords, the long Irish sentences lose words: counted, and scored as wrong
    assert result["unreached_words"] > 0
    words = sum(len(s.words) for s in data.test)
    assert result["uas"] <= 1 - result["unreached_words"] / words


def test_ner_early_stops_on_dev(data_dir, tiny_encoder):
    task = DownstreamTaskConfig(name="ncbi", type="ner", format="iob",
                                path=str(data_dir / "science/ner/NCBI-disease-IOB"), train="train.tsv",
                                dev="devel.tsv", test="test.tsv")
    data = capped(load_task(task), 200, 60)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    result = fine_tune(data, str(tiny_encoder), tokenizer, untrained=False, seed=0,
                       recipe=DownstreamConfig(**{**RECIPE.__dict__, "patience": 1}))
    assert len(result["dev_history"]) == result["epochs"] >= 1
    assert 0.0 <= result["f1"] <= 1.0 and {"precision", "recall"} <= set(result)


@pytest.mark.parametrize("multi_label", [False, True])
def test_classification(data_dir, tiny_encoder, multi_label):
    if multi_label:
        task = DownstreamTaskConfig(name="eurlex", type="classify", format="jsonl",
                                    path=str(data_dir / "legal/eurlex_sum_en/summaries.jsonl"), train="train",
                                    test="test", label_field="subjects", multi_label=True,
                                    unseen_labels="score_as_wrong")
    else:
        task = DownstreamTaskConfig(name="tos", type="classify", format="tos",
                                    path=str(data_dir / "legal/tos_unfair_clauses_en"), train="lists/LIST_TRAIN_0.txt",
                                    test="lists/LIST_TEST_0.txt")
    data = capped(load_task(task), 200, 60)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    result = fine_tune(data, str(tiny_encoder), tokenizer, untrained=False, seed=0,
                       recipe=DownstreamConfig(**{**RECIPE.__dict__, "epochs": 1}))
    assert 0.0 <= result["macro_f1"] <= 1.0 and 0.0 <= result["micro_f1"] <= 1.0
