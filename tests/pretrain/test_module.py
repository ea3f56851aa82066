"""The sparse MLM head gives the same loss as transformers' dense head; the schedule is right."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from pretrain.masking import mask_tokens
from pretrain.model import build_model, padded_vocab_size
from pretrain.module import masked_lm_outputs
from pretrain.schedules import lr_lambda
from pretrain.config import ModelConfig
from corpora.errors import ConfigError


def test_sparse_head_loss_equals_dense_head_loss():
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=320, hidden_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=128)).eval()
    ids = torch.randint(5, 320, (4, 32))
    masked, labels = mask_tokens(ids, 0.15, 4, 320, torch.arange(5))
    with torch.no_grad():
        dense = model(input_ids=masked, labels=labels).loss
        sparse, correct, count = masked_lm_outputs(model, masked, labels)
    assert torch.allclose(sparse, dense, atol=1e-5)
    assert count == (labels != -100).sum().item()


def test_vocab_padded_to_multiple_of_64():
    assert padded_vocab_size(3849, 64) == 3904 and padded_vocab_size(4096, 64) == 4096
    model = build_model(ModelConfig(), vocab_size=3849, pad_token_id=0, seq_len=128)
    assert model.config.vocab_size == 3904


def test_sequence_longer_than_positions_is_refused():
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        build_model(ModelConfig(max_position_embeddings=128), vocab_size=100, pad_token_id=0, seq_len=256)


def test_linear_warmup_then_decay():
    f = lr_lambda("linear", warmup_steps=10, max_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == 0.0
