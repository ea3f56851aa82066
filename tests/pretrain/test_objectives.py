"""Sentence-pair objectives on the model side: pair rows carry token types and an attention mask, padding is
never scored, and an NSP run exports a model that loads as BertForPreTraining and as AutoModelForMaskedLM."""

import csv

import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM, BertForPreTraining

from bertforge.common.errors import ConfigError
from bertforge.common.stage_folder import read_manifest
from bertforge.stages import run_stages
from pretrain.data import PackedRows
from pretrain.config import MaskingConfig, OptimConfig
from pretrain.masking import IGNORE_INDEX, Masker
from pretrain.module import MaskedLMModule
from pretrain.objectives import as_pretraining_model, masked_pairs
from tests.conftest import QUICK
from tests.pretrain.conftest import SPECIAL

CLS, SEP, PAD, MASK = 2, 3, 0, 4


def test_pair_rows_carry_token_types_and_attention_mask():
    rows = np.array([[CLS, 10, 11, SEP, 12, SEP, PAD, PAD]], dtype=np.uint16)
    item = PackedRows(rows, seed=0, pair_info=np.array([[2, 1, 1]], dtype=np.int32))[0]
    assert item["token_type_ids"].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert item["attention_mask"].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert item["pair_label"].item() == 1 and item["input_ids"].tolist() == rows[0].tolist()


def test_masks_that_land_on_padding_are_not_scored():
    ids = torch.tensor([[CLS, 10, 11, SEP, 12, SEP, PAD, PAD]])
    special = torch.tensor([PAD, 1, CLS, SEP, MASK])
    masker = Masker(0.9, MASK, 64, special)  # 7 positions per row: more than the 3 maskable tokens
    batch = masked_pairs({"input_ids": ids, "attention_mask": (ids != PAD).long()}, masker, special)
    scored = batch.targets != IGNORE_INDEX
    assert scored.sum() == 3 and set(batch.targets[scored].tolist()) == {10, 11, 12}
    unscored = batch.positions[~scored]
    assert torch.equal(batch.input_ids[0, unscored], ids[0, unscored])  # specials left as they were


def test_each_pair_row_masks_its_own_share_of_its_tokens():
    """BERT's count per pair row: round(ratio x tokens), [CLS] and both [SEP] counted as Google's len(tokens) counts
    them, at least one, at most the slots of a full row."""
    special = torch.tensor([PAD, 1, CLS, SEP, MASK])
    lengths = [2, 9, 15, 29, 61]  # A + B tokens of each row, in a 64-token row
    ids = torch.full((len(lengths), 64), PAD)
    for row, n in enumerate(lengths):
        ids[row, :n + 3] = torch.tensor([CLS, *range(10, 10 + n // 2), SEP, *range(40, 40 + n - n // 2), SEP])
    masker = Masker(0.15, MASK, 128, special, {64: 61 / 64})  # the slots of a full row: round(0.15 x 61) = 9
    torch.manual_seed(0)
    batch = masked_pairs({"input_ids": ids, "attention_mask": (ids != PAD).long()}, masker, special)
    scored = batch.targets != IGNORE_INDEX
    assert batch.positions.shape == (5, 9) and scored.sum(1).tolist() == [1, 2, 3, 5, 9]
    original = ids.gather(1, batch.positions)
    assert torch.equal(batch.targets[scored], original[scored])
    assert torch.equal(batch.input_ids.gather(1, batch.positions)[~scored], original[~scored])  # left as it was


def statically_masked_pairs(lengths: list[int], seq_len: int = 32) -> dict:
    """Pair rows with A + B of `lengths` tokens and static masks (the k slots of a full row each): short rows
    score fewer of their slots than long ones."""
    ids = torch.full((len(lengths), seq_len), PAD)
    for row, n in enumerate(lengths):
        ids[row, :n + 3] = torch.tensor([CLS, *range(10, 10 + n // 2), SEP, *range(30, 30 + n - n // 2), SEP])
    masker = Masker(0.15, MASK, 64, torch.tensor(sorted(set(SPECIAL.values()))), {seq_len: (seq_len - 3) / seq_len})
    masks = masker(ids, torch.Generator().manual_seed(0))
    pair_label = torch.arange(len(lengths)) % 2
    token_type_ids = (torch.arange(seq_len) > 1 + torch.tensor(lengths)[:, None] // 2).long() * (ids != PAD)
    return {"input_ids": masks.input_ids, "positions": masks.positions, "targets": masks.targets,
            "attention_mask": (ids != PAD).long(), "token_type_ids": token_type_ids, "pair_label": pair_label}


def test_pair_loss_and_gradient_do_not_depend_on_the_micro_batch_size():
    """One global batch of pair rows, cut into 1, 4 or 8 micro-batches and accumulated as Lightning does:
    the same loss, gradient and logged train/loss (hardware decides the cut, never the result)."""
    rows = statically_masked_pairs([2, 29, 5, 29, 11, 29, 20, 8])
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=64, hidden_dropout_prob=0.0,
                                          attention_probs_dropout_prob=0.0))
    module = MaskedLMModule(model, MaskingConfig(ratio=0.15), OptimConfig(), [], SPECIAL, 64, {32: 29 / 32})

    def accumulated(micro_batches: int) -> tuple[float, torch.Tensor, float]:
        module.zero_grad()
        module.reset_window()
        loss = 0.0
        for part in zip(*(value.chunk(micro_batches) for value in rows.values())):
            micro = module.training_step(dict(zip(rows, part)), 0) / micro_batches  # Lightning's accumulation
            micro.backward()
            loss += micro.item()
        return loss, model.bert.encoder.layer[0].attention.self.query.weight.grad.clone(), \
            module.pop_window()["train/loss"]

    whole, gradient, logged = accumulated(1)
    for micro_batches in (4, 8):
        loss, other_gradient, other_logged = accumulated(micro_batches)
        assert loss == pytest.approx(whole, rel=1e-6) and other_logged == pytest.approx(logged, rel=1e-6)
        assert torch.allclose(other_gradient, gradient, rtol=1e-4, atol=1e-7)
    batch = masked_pairs(rows, module.masker, module.masker.special_ids)
    assert (batch.targets != IGNORE_INDEX).sum(1).tolist() == [1, 4, 1, 4, 2, 4, 3, 2]  # 1 to 4 of the 4 slots
    with torch.no_grad():  # logged: transformers' loss of the global batch, the MLM mean over its scored tokens
        reference = model(input_ids=batch.input_ids, attention_mask=rows["attention_mask"],
                          token_type_ids=rows["token_type_ids"], labels=batch.dense_labels(),
                          next_sentence_label=rows["pair_label"]).loss
    assert logged == pytest.approx(reference.item(), rel=1e-5)


def test_pretraining_model_keeps_the_mlm_weights():
    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64))
    both = as_pretraining_model(mlm)
    assert torch.equal(both.bert.embeddings.word_embeddings.weight, mlm.bert.embeddings.word_embeddings.weight)
    assert torch.equal(both.cls.predictions.transform.dense.weight, mlm.cls.predictions.transform.dense.weight)
    assert both.cls.seq_relationship.out_features == 2


def test_gabert_style_run_exports_a_pretraining_model(tmp_path, data_dir):
    """NSP with static masks read from the shards (gaBERT's and LEGAL-BERT's Google BERT recipe)."""
    from bertforge.experiment import load_config
    from tests.conftest import compose_raw

    cfg = load_config(compose_raw("pretrain", [
        f"paths.data_dir={data_dir}", f"paths.work_dir={tmp_path}", *QUICK, "training.max_steps=6", "optim.warmup_steps=2",
        "training.batch_size=8", "logger.progress_bar=false", "checkpoint.every_n_steps=1000",
        "logger.log_every_n_steps=3", "training.objective=mlm_nsp", "masking.static=true",
        "masking.dupe_factor=2", "masking.max_predictions_per_seq=6"]))
    folders = run_stages(cfg, "pretrain")
    assert read_manifest(folders["shards"])["format"]["static_masks"]["per_row"] == {"64": 6}
    assert read_manifest(folders["pretrain"])["counts"]["steps"] == 6
    hf = folders["pretrain"] / "hf"
    model, info = BertForPreTraining.from_pretrained(hf, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert isinstance(AutoModelForMaskedLM.from_pretrained(hf), BertForMaskedLM)
    with open(hf.parent / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        logged = [r for r in csv.DictReader(handle) if r.get("train/pair_accuracy")]
    assert logged and all(0.0 <= float(r["train/pair_accuracy"]) <= 1.0 for r in logged)


def test_pair_objective_needs_a_bert_model(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="model.arch=bert"):
        run_stages(make_cfg("pretrain", ["training.objective=mlm_sop", "model=roberta_base"]), "pretrain")
    with pytest.raises(ConfigError, match="training.objective='nsp'"):
        run_stages(make_cfg("pretrain", ["training.objective=nsp"]), "pretrain")
    assert not (tmp_path / "work" / "corpus").exists()
