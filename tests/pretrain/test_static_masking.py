"""Training reads the shards' static masks (masking.static=true): pass p over the data uses copy p mod
dupe_factor and the step trains on exactly those positions (a whole run, static masks with NSP, is in
test_objectives.py). BPE-dropout copies (shards.dropout_copies) are read the same way, one per pass."""

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM

from pretrain.config import MaskingConfig, OptimConfig
from pretrain.data import PackedRows
from pretrain.module import MaskedLMModule, sparse_mlm_loss
from pretrain.phases import Phase


def test_each_pass_reads_the_next_masked_copy():
    rows = np.arange(4 * 8, dtype=np.uint16).reshape(4, 8) + 10
    positions = np.array([[[1, 2]] * 4, [[5, 7]] * 4], dtype=np.uint16)  # (dupe 2, rows 4, k 2)
    inputs = np.array([[[3, 3]] * 4, [[3, 99]] * 4], dtype=np.uint16)
    data = PackedRows(rows, seed=0, static_masks=(positions, inputs))
    for index in range(12):
        stored, copy = data.row_index(index), (index // 4) % 2
        masked, where, targets = data[index]
        assert where.tolist() == positions[copy, stored].tolist()
        assert targets.tolist() == rows[stored, positions[copy, stored]].tolist()
        expected = rows[stored].astype(np.int64)
        expected[positions[copy, stored]] = inputs[copy, stored]
        assert masked.tolist() == expected.tolist()


def test_each_pass_reads_the_next_bpe_dropout_copy():
    copies = [np.arange(4 * 8, dtype=np.uint16).reshape(4, 8) + 100 * c for c in range(3)]
    data = PackedRows(copies[0], seed=0, copies=copies)
    for index in range(16):
        assert data[index].tolist() == copies[(index // 4) % 3][data.row_index(index)].tolist()


def test_a_statically_masked_batch_is_trained_as_given():
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0))
    module = MaskedLMModule(model, MaskingConfig(static=True), OptimConfig(), [Phase(0, 16, 0, 4, 4, 4, 1, 1.0, 0)],
                            {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}, 64, {16: 1.0})
    ids = torch.randint(5, 64, (4, 16))
    positions = torch.tensor([[1, 3]] * 4)
    targets = ids.gather(1, positions)
    masked = ids.scatter(1, positions, 4)
    loss = module.training_step((masked, positions, targets), 0)
    assert torch.equal(loss, sparse_mlm_loss(model, masked, positions, targets)[0])
    assert module.window["masked"] == 8  # 2 per row, not the ratio's count
