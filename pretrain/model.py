"""Models built from config with transformers, so every checkpoint is a plain HF model."""

from __future__ import annotations

import math

from transformers import BertConfig, BertForMaskedLM

from corpora.errors import ConfigError


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    """Round the embedding rows up to a multiple (64 keeps GPU matmuls on fast shapes)."""
    return math.ceil(vocab_size / multiple) * multiple if multiple > 1 else vocab_size


def build_model(model_cfg, vocab_size: int, pad_token_id: int, seq_len: int) -> BertForMaskedLM:
    """A freshly initialised masked-LM model of the configured size for this vocabulary."""
    if model_cfg.arch != "bert":
        raise ConfigError(f"model.arch={model_cfg.arch!r}: only 'bert' is available so far")
    if seq_len > model_cfg.max_position_embeddings:
        raise ConfigError(f"shards.seq_len={seq_len} exceeds model.max_position_embeddings="
                          f"{model_cfg.max_position_embeddings}: build shorter shards or a larger model")
    if model_cfg.hidden_size % model_cfg.num_heads:
        raise ConfigError(f"model.hidden_size={model_cfg.hidden_size} is not divisible by "
                          f"model.num_heads={model_cfg.num_heads}")
    config = BertConfig(
        vocab_size=padded_vocab_size(vocab_size, model_cfg.pad_vocab_to_multiple_of),
        hidden_size=model_cfg.hidden_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        intermediate_size=model_cfg.intermediate_size,
        max_position_embeddings=model_cfg.max_position_embeddings,
        hidden_dropout_prob=model_cfg.dropout,
        attention_probs_dropout_prob=model_cfg.dropout,
        pad_token_id=pad_token_id,
    )
    return BertForMaskedLM(config)
