"""Models built from config with transformers, so every checkpoint is a plain HF model.

Three layouts: `bert` (BertForMaskedLM), `roberta` (RobertaForMaskedLM: one token type, positions
offset past the padding id) and `modernbert` (ModernBertForMaskedLM: rotary positions, GLU
feed-forward, alternating local/global attention, no biases). Sizes live in conf/model/.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import (AttentionInterface, AutoModelForMaskedLM, BertConfig, ModernBertConfig,
                          PretrainedConfig, RobertaConfig)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from bertforge.common.errors import ConfigError
from pretrain.config import ModelConfig

ARCHS = ("bert", "roberta", "modernbert")
# impl.attention -> transformers attn_implementation. On an H100 with transformers 5.17, a compiled BERT ran its
# attention as separate matmul, softmax and dropout kernels: that version builds a full mask for rows without padding
# while torch.compile traces, and SDPA given a mask cannot use the flash kernel. Both SDPA options below build no mask
# for such rows (any transformers version); `sdpa` also calls SDPA outside the compiled graph, where SDPA alone ran
# cuDNN's fused kernel faster than inside it. With it the model trained at 1.05x the tokens/s at sequence 128 and
# 1.28x at 512, with less memory (bench/gpu/RESULTS.md).
BERTFORGE_SDPA, BERTFORGE_SDPA_IN_GRAPH = "bertforge_sdpa", "bertforge_sdpa_in_graph"
ATTENTION = {"sdpa": BERTFORGE_SDPA, "sdpa_compiled": BERTFORGE_SDPA_IN_GRAPH, "eager": "eager"}

# transformers' SDPA attention, kept out of torch.compile's graph (which then breaks once per layer).
sdpa_outside_compile = torch.compiler.disable(sdpa_attention_forward)


def sdpa_mask_unless_unpadded(*args, attention_mask=None, allow_is_bidirectional_skip: bool = False, **kwargs):
    """SDPA's attention mask, except none at all for bidirectional attention over rows without padding (bertforge's
    packed MLM rows), also while torch.compile traces. Padded rows (NSP/SOP pairs) and sliding windows (ModernBERT's
    local layers) get SDPA's mask."""
    if attention_mask is None and allow_is_bidirectional_skip and kwargs.get("local_size") is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, allow_is_bidirectional_skip=allow_is_bidirectional_skip,
                     **kwargs)


# Names transformers' `attn_implementation` accepts, each with its mask function (unregistered, a model would hand
# the attention its 2-D padding mask untouched). They are not saved in config.json: a checkpoint trained with one
# loads with transformers' default attention.
for _name, _attention in ((BERTFORGE_SDPA, sdpa_outside_compile), (BERTFORGE_SDPA_IN_GRAPH, sdpa_attention_forward)):
    AttentionInterface.register(_name, _attention)
    AttentionMaskInterface.register(_name, sdpa_mask_unless_unpadded)


def attn_implementation(attention: str) -> str:
    """The transformers attention implementation of `impl.attention`."""
    if attention not in ATTENTION:
        raise ConfigError(f"impl.attention={attention!r} is not one of {list(ATTENTION)}")
    return ATTENTION[attention]


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    """Round the embedding rows up to a multiple (64 keeps GPU matmuls on fast shapes)."""
    return math.ceil(vocab_size / multiple) * multiple if multiple > 1 else vocab_size


def check_model_config(model_cfg: ModelConfig, seq_len: int) -> None:
    """Fail at start-up, naming the key, on an architecture that cannot train on these shards."""
    if model_cfg.arch not in ARCHS:
        raise ConfigError(f"model.arch={model_cfg.arch!r} is not one of {list(ARCHS)}")
    if seq_len > model_cfg.max_position_embeddings:
        raise ConfigError(f"sequence length {seq_len} exceeds model.max_position_embeddings="
                          f"{model_cfg.max_position_embeddings}: build shorter shards (shards.seq_len, "
                          "training.phases[].seq_len) or raise model.max_position_embeddings")
    if model_cfg.hidden_size % model_cfg.num_heads:
        raise ConfigError(f"model.hidden_size={model_cfg.hidden_size} is not divisible by "
                          f"model.num_heads={model_cfg.num_heads}")


def attention_dropout(model_cfg: ModelConfig) -> float:
    return model_cfg.dropout if model_cfg.attention_dropout is None else model_cfg.attention_dropout


def hf_config(model_cfg: ModelConfig, vocab_size: int, special_ids: dict[str, int]) -> PretrainedConfig:
    """The transformers config of this architecture and size for a vocabulary of `vocab_size`."""
    common = dict(vocab_size=padded_vocab_size(vocab_size, model_cfg.pad_vocab_to_multiple_of),
                  hidden_size=model_cfg.hidden_size, num_hidden_layers=model_cfg.num_layers,
                  num_attention_heads=model_cfg.num_heads, intermediate_size=model_cfg.intermediate_size,
                  pad_token_id=special_ids["pad"])
    if model_cfg.arch == "modernbert":
        return ModernBertConfig(
            **common, max_position_embeddings=model_cfg.max_position_embeddings,
            attention_dropout=attention_dropout(model_cfg), mlp_dropout=model_cfg.dropout,
            embedding_dropout=model_cfg.dropout, local_attention=model_cfg.local_attention_window,
            cls_token_id=special_ids["cls"], bos_token_id=special_ids["cls"],
            sep_token_id=special_ids["sep"], eos_token_id=special_ids["sep"],
        )
    dropouts = dict(hidden_dropout_prob=model_cfg.dropout, attention_probs_dropout_prob=attention_dropout(model_cfg))
    if model_cfg.arch == "roberta":
        # RoBERTa numbers positions from pad_token_id + 1, so its table needs that many extra rows
        # for the same usable length.
        return RobertaConfig(**common, **dropouts, type_vocab_size=1, layer_norm_eps=1e-5,
                             max_position_embeddings=model_cfg.max_position_embeddings + special_ids["pad"] + 1,
                             bos_token_id=special_ids["cls"], eos_token_id=special_ids["sep"])
    return BertConfig(**common, **dropouts, max_position_embeddings=model_cfg.max_position_embeddings)


def build_model(model_cfg: ModelConfig, vocab_size: int, pad_token_id: int, seq_len: int,
                special_ids: dict[str, int] | None = None, attention: str = "sdpa"):
    """A freshly initialised masked-LM model of the configured architecture and size.

    `vocab_size` is the tokenizer's; the embedding is padded to `model.pad_vocab_to_multiple_of`.
    `attention` is an `impl.attention` value (a speed switch).
    """
    check_model_config(model_cfg, seq_len)
    attention = attn_implementation(attention)
    special = {"pad": pad_token_id, "cls": pad_token_id, "sep": pad_token_id} | (special_ids or {})
    config = hf_config(model_cfg, vocab_size, special)
    return AutoModelForMaskedLM.from_config(config, attn_implementation=attention)


class Bf16LayerNorm(torch.nn.LayerNorm):
    """A LayerNorm that, under bf16 autocast, takes and returns bf16 (the kernel still normalises in fp32)
    where autocast would cast to fp32 and return fp32. The residual stream around it then stays in bf16, so
    the memory-bound kernels of norm, dropout and residual add move half the bytes. Outside bf16 autocast
    (evaluation, fp32 runs) it is a plain LayerNorm; the weights and their names are the same."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        device = hidden.device.type
        if not (torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16):
            return super().forward(hidden)
        with torch.autocast(device, enabled=False):
            weight = self.weight.to(torch.bfloat16) if self.weight is not None else None
            bias = self.bias.to(torch.bfloat16) if self.bias is not None else None
            return F.layer_norm(hidden.to(torch.bfloat16), self.normalized_shape, weight, bias, self.eps)


def use_bf16_layer_norms(model: torch.nn.Module) -> int:
    """Make every LayerNorm of `model` a `Bf16LayerNorm` in place (`impl.bf16_layer_norm`); how many there were.
    Only the class changes: the state dict, and so every checkpoint and export, stays as it was."""
    norms = [module for module in model.modules() if type(module) is torch.nn.LayerNorm]
    for module in norms:
        module.__class__ = Bf16LayerNorm
    return len(norms)


def encoder_and_head(model) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """(encoder, head) of a transformers masked-LM: hidden = encoder(input_ids=...).last_hidden_state,
    logits = head(hidden). Splitting them lets the head run on the masked positions only."""
    model_type = model.config.model_type
    if model_type == "bert":
        # cls.predictions: the MLM head of BertForMaskedLM and of BertForPreTraining (whose cls also holds
        # the next-sentence head, see pretrain.objectives) alike.
        return model.bert, model.cls.predictions
    if model_type in ("roberta", "xlm-roberta"):
        return model.roberta, model.lm_head
    if model_type == "modernbert":
        return model.model, lambda hidden: model.decoder(model.head(hidden))
    raise ConfigError(f"no sparse MLM head for model type {model_type!r}: use one of {list(ARCHS)}")
