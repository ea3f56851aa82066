"""Training FLOPs per token of an encoder masked-LM, for throughput/mfu.

Derivation, per token, forward pass (a multiply-add counts as 2 FLOPs; h = hidden size, i =
intermediate size, L = layers, s = attended length, V = padded vocabulary, f = share of a row's
positions the MLM head runs on: k / seq_len for k masked positions per row, 1 for a dense head):

  per layer, weight matmuls   Q, K, V and output projections: 4 h^2 multiply-adds;
                              feed-forward: 2 h i (h -> i -> h), or 3 h i with a GLU (ModernBERT's
                              input projection makes 2i: gate and value)    -> 2 (4 h^2 + c h i)
  per layer, attention        scores Q K^T: s multiply-adds per head-dimension, h in all; the
                              weighted sum of V: the same                   -> 4 s h
  MLM head                    dense h -> h, then decoder h -> V, only on masked tokens
                              (the dense head of transformers has f = 1)     -> 2 f (h^2 + h V)
  embeddings, norms, softmax  lookups and elementwise work: not counted (as in MFU papers)

The backward pass costs twice the forward (gradients with respect to activations and to weights),
so training is 3x forward:

  flops_per_token = 3 [ L (2 (4 h^2 + c h i) + 4 s h) + 2 f (h^2 + h V) ]

For ModernBERT's sliding-window layers the attended length is the window, not the row.

f comes from the count the masking really draws (`pretrain.masking.Masker.per_row`), not from the
configured ratio: the count is a share of the maskable tokens only, rounded to a whole number.
"""

from __future__ import annotations


def flops_per_token(hf_config, seq_len: int, *, masked_per_row: int | None = None) -> float:
    """Training FLOPs (forward + backward) per input token for a transformers MLM config on rows of
    `seq_len` tokens.

    `masked_per_row` is how many positions of each row the MLM head runs on: `Masker.per_row(seq_len)`
    for bertforge's sparse head; None (every position) for transformers' dense head.
    """
    if masked_per_row is None:
        masked_per_row = seq_len
    if masked_per_row != int(masked_per_row) or not 1 <= masked_per_row <= seq_len:  # e.g. a ratio
        raise ValueError(f"masked_per_row={masked_per_row!r}: give the whole number of masked positions per "
                         f"row (1..{seq_len}, e.g. Masker.per_row(seq_len)), not a ratio")
    masked_fraction = masked_per_row / seq_len
    h, i, layers = hf_config.hidden_size, hf_config.intermediate_size, hf_config.num_hidden_layers
    vocab = hf_config.vocab_size
    glu = hf_config.model_type == "modernbert"
    weights = 2 * (4 * h * h + (3 if glu else 2) * h * i)
    attention = sum(4 * _attended(hf_config, layer, seq_len) * h for layer in range(layers))
    head = 2 * masked_fraction * (h * h + h * vocab)
    return 3.0 * (layers * weights + attention + head)


def _attended(hf_config, layer: int, seq_len: int) -> int:
    """Tokens each query attends to in `layer` (ModernBERT alternates global and windowed layers)."""
    types = getattr(hf_config, "layer_types", None)
    if types and types[layer] == "sliding_attention":
        return min(seq_len, hf_config.local_attention)
    return seq_len


def mfu(tokens_per_s: float, flops_token: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the device's peak."""
    return tokens_per_s * flops_token / (peak_tflops * 1e12)
