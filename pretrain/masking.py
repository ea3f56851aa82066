"""Dynamic masked-language-model masking, drawn on the device for every batch.

`mask_fixed_count` masks exactly `masked_per_row` positions per row, returned as (batch, k) index and
target tensors, so every shape in the training step is static: the sparse MLM head gathers those
rows without a data-dependent size and without a host sync. `Masker` holds a run's settings and is
the one place a ratio becomes that count: training, held-out scoring (`pretrain.heldout`) and the
FLOP count (`pretrain.flops`) all ask it (`MaskedBatch.dense_labels` gives transformers-style labels
where needed).

Whole-word and span masking work by grouping tokens into *units* (a word, or a span of words or
tokens) and drawing one random score per unit; taking the k lowest-scoring tokens of a row then
takes whole units, except at most one unit per row that is cut at the k-th token so the count stays
fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from bertforge.common.errors import ConfigError
from pretrain.config import MaskingConfig

IGNORE_INDEX = -100
_NEVER = 2.0  # a score above every uniform draw: special tokens are never chosen


@dataclass
class MaskedBatch:
    """One masked batch with a fixed number of masked positions per row."""

    input_ids: torch.Tensor  # (batch, seq) ids fed to the encoder
    positions: torch.Tensor  # (batch, k) masked positions, each row's positions distinct
    targets: torch.Tensor  # (batch, k) original ids at those positions

    def dense_labels(self) -> torch.Tensor:
        """(batch, seq) labels in the transformers convention: the original id where masked, -100 elsewhere."""
        labels = torch.full_like(self.input_ids, IGNORE_INDEX)
        return labels.scatter(1, self.positions, self.targets)


def masked_per_row(ratio: float, seq_len: int, maskable_share: float) -> int:
    """The fixed number of masked tokens per row that makes `ratio` of the maskable tokens masked.

    `maskable_share` is the share of non-special tokens in the shards (their manifest has it), so the
    count is `ratio` of a row's expected maskable tokens, rounded to a whole number (at least one): the
    realised ratio is off by up to 0.5 / (seq_len x maskable_share), e.g. 9 of 62.8 maskable tokens in a
    64-token row is 14.3 % for a ratio of 15 %.
    """
    return max(1, round(ratio * seq_len * maskable_share))


def check_masking_config(masking_cfg: MaskingConfig) -> None:
    """ConfigError naming the key unless the ratios are usable: masking.ratio and masking.eval_ratio strictly
    between 0 and 1 (a row keeps an unmasked token, and 0 would still mask one per row), and the 80/10/10 split
    (replace_with_mask, replace_with_random) two shares of the chosen tokens that add up to at most 1."""
    for key, ratio in (("ratio", masking_cfg.ratio), ("eval_ratio", masking_cfg.eval_ratio)):
        if not 0 < ratio < 1:
            raise ConfigError(f"masking.{key}={ratio} must lie strictly between 0 and 1 (BERT: 0.15)")
    shares = {"replace_with_mask": masking_cfg.replace_with_mask,
              "replace_with_random": masking_cfg.replace_with_random}
    for key, share in shares.items():
        if not 0 <= share <= 1:
            raise ConfigError(f"masking.{key}={share} must lie in [0, 1] (BERT: 0.8 and 0.1)")
    if not masking_cfg.span_mean_len >= 1:
        raise ConfigError(f"masking.span_mean_len={masking_cfg.span_mean_len} must be at least 1 (1: single tokens or "
                          "words; SpanBERT ~3.8)")
    if masking_cfg.max_predictions_per_seq < 0:
        raise ConfigError(f"masking.max_predictions_per_seq={masking_cfg.max_predictions_per_seq} must be 0 (no cap) "
                          "or more")
    if sum(shares.values()) > 1 + 1e-9:
        raise ConfigError(f"masking.replace_with_mask={masking_cfg.replace_with_mask} + masking.replace_with_random="
                          f"{masking_cfg.replace_with_random} is above 1: they are shares of the chosen tokens "
                          "(the rest stay unchanged); lower one of them")


def unit_starts(input_ids: torch.Tensor, word_starts: torch.Tensor | None, span_mean_len: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, seq) bool: where a masking unit begins.

    Without whole-word masking every token is a word. With span masking a unit boundary is kept at a
    word start with probability 1/span_mean_len, so unit lengths (in words) are geometric with that
    mean, as in SpanBERT.
    """
    starts = word_starts[input_ids] if word_starts is not None else torch.ones_like(input_ids, dtype=torch.bool)
    if span_mean_len > 1.0:
        keep = torch.rand(input_ids.shape, device=input_ids.device, generator=generator) < 1.0 / span_mean_len
        starts = starts & keep
    starts[:, 0] = True  # every row begins a unit
    return starts


def _unit_scores(starts: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(batch, seq) one uniform draw per unit, copied onto every token of the unit."""
    seq = starts.shape[1]
    draw = torch.rand(starts.shape, device=starts.device, generator=generator)
    position = torch.arange(seq, device=starts.device).expand_as(starts)  # (batch, seq)
    # Index of the unit's first token for every token: running max of the start positions.
    first = torch.where(starts, position, torch.zeros_like(position)).cummax(dim=1).values  # (batch, seq)
    return draw.gather(1, first)


def mask_fixed_count(
    input_ids: torch.Tensor,
    count: int,
    mask_id: int,
    vocab_size: int,
    special_ids: torch.Tensor,
    replace_with_mask: float = 0.8,
    replace_with_random: float = 0.1,
    word_starts: torch.Tensor | None = None,
    span_mean_len: float = 1.0,
    generator: torch.Generator | None = None,
) -> MaskedBatch:
    """Mask exactly `count` non-special tokens in every row; shapes depend only on the input shape.

    `word_starts` is a (vocab,) bool table (see `pretrain.word_starts`) for whole-word masking;
    `span_mean_len` > 1 masks spans of that mean length (in words when whole-word masking is on).
    Of the chosen positions `replace_with_mask` become [MASK], `replace_with_random` a random
    non-special token, and the rest keep their token (BERT's 80/10/10).
    """
    special = torch.isin(input_ids, special_ids)  # (batch, seq)
    if word_starts is None and span_mean_len <= 1.0:
        scores = torch.rand(input_ids.shape, device=input_ids.device, generator=generator)
    else:
        scores = _unit_scores(unit_starts(input_ids, word_starts, span_mean_len, generator), generator)
    scores = scores.masked_fill(special, _NEVER)
    positions = scores.topk(count, dim=1, largest=False).indices  # (batch, count)
    targets = input_ids.gather(1, positions)  # (batch, count)
    replaced = _replacements(targets, mask_id, vocab_size, special_ids, replace_with_mask,
                             replace_with_random, generator)
    return MaskedBatch(input_ids.scatter(1, positions, replaced), positions, targets)


def _replacements(targets: torch.Tensor, mask_id: int, vocab_size: int, special_ids: torch.Tensor,
                  replace_with_mask: float, replace_with_random: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """What each chosen token becomes: [MASK], a random non-special token, or itself."""
    split = torch.rand(targets.shape, device=targets.device, generator=generator)
    random_ids = torch.randint(0, vocab_size, targets.shape, device=targets.device, generator=generator)
    # A random draw that lands on a special token keeps the original instead (rare; the split stays
    # within a fraction of a percent of the configured one for any real vocabulary).
    random_ids = torch.where(torch.isin(random_ids, special_ids), targets, random_ids)
    out = torch.where(split < replace_with_mask, torch.full_like(targets, mask_id), targets)
    use_random = (split >= replace_with_mask) & (split < replace_with_mask + replace_with_random)
    return torch.where(use_random, random_ids, out)


class Masker(torch.nn.Module):
    """A run's masking, resolved: how many tokens each row loses (`per_row`) and which (`forward`).

    The ratio is a share of the maskable (non-special) tokens; `maskable_share` maps a row length to
    the share of such tokens in the shards (1.0 for a length it does not list). The vocabulary tables
    are buffers (not saved), so a masker registered on a module moves to the module's device.
    """

    def __init__(self, ratio: float, mask_id: int, vocab_size: int, special_ids: torch.Tensor,
                 maskable_share: Mapping[int, float] | None = None, replace_with_mask: float = 0.8,
                 replace_with_random: float = 0.1, word_starts: torch.Tensor | None = None,
                 span_mean_len: float = 1.0, max_per_row: int = 0):
        super().__init__()
        self.max_per_row = max_per_row  # masking.max_predictions_per_seq (training only); 0: no cap
        self.ratio, self.mask_id = ratio, mask_id
        self.vocab_size = vocab_size  # the tokenizer's, not the padded embedding's: random ids are real tokens
        self.maskable_share = dict(maskable_share or {})
        self.replace_with_mask, self.replace_with_random = replace_with_mask, replace_with_random
        self.span_mean_len = span_mean_len
        self.register_buffer("special_ids", special_ids, persistent=False)
        self.register_buffer("word_starts", word_starts, persistent=False)

    @classmethod
    def from_config(cls, masking_cfg: MaskingConfig, special_ids: Mapping[str, int], vocab_size: int,
                    maskable_share: Mapping[int | str, float], word_starts: torch.Tensor | None = None,
                    ratio: float | None = None) -> "Masker":
        """The masker of a `pretrain.config.MaskingConfig`, at its training ratio or at `ratio`.

        `special_ids` and `maskable_share` are as in the shards manifest's format (its string length
        keys are accepted); `word_starts` is the vocabulary's table (`pretrain.word_starts`), required
        when `masking.whole_word` is on and ignored otherwise. `masking.max_predictions_per_seq` caps
        the training masker only, not one made at another `ratio` (held-out scoring).
        """
        check_masking_config(masking_cfg)
        if masking_cfg.whole_word and word_starts is None:
            raise ValueError("masking.whole_word=true needs the vocabulary's word-start table: pass "
                             "word_starts=pretrain.word_starts.load_word_start_table(<vocab>/tokenizer.json)")
        return cls(masking_cfg.ratio if ratio is None else ratio, special_ids["mask"], vocab_size,
                   torch.tensor(sorted(set(special_ids.values()))),
                   {int(length): float(share) for length, share in maskable_share.items()},
                   masking_cfg.replace_with_mask, masking_cfg.replace_with_random,
                   word_starts if masking_cfg.whole_word else None, masking_cfg.span_mean_len,
                   masking_cfg.max_predictions_per_seq if ratio is None else 0)

    def at_ratio(self, ratio: float) -> "Masker":
        """The same masking at another ratio (sharing the tables, on the same device)."""
        return Masker(ratio, self.mask_id, self.vocab_size, self.special_ids, self.maskable_share,
                      self.replace_with_mask, self.replace_with_random, self.word_starts, self.span_mean_len)

    def per_row(self, seq_len: int) -> int:
        """Masked positions in every row of length `seq_len`: the count training, scoring and FLOPs use."""
        count = masked_per_row(self.ratio, seq_len, self.maskable_share.get(seq_len, 1.0))
        return min(count, self.max_per_row) if self.max_per_row else count

    def forward(self, input_ids: torch.Tensor, generator: torch.Generator | None = None) -> MaskedBatch:
        """`per_row` positions of every row of `input_ids` (batch, seq) masked with these settings.

        Draws from `generator`, or from torch's global RNG (reseeded per micro-batch in training).
        """
        return mask_fixed_count(input_ids, self.per_row(input_ids.shape[1]), self.mask_id, self.vocab_size,
                                self.special_ids, self.replace_with_mask, self.replace_with_random,
                                self.word_starts, self.span_mean_len, generator)
