"""Dynamic masked-language-model masking, drawn on the device for every batch."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: torch.Tensor,
    ratio: float,
    mask_id: int,
    vocab_size: int,
    special_ids: torch.Tensor,
    replace_with_mask: float = 0.8,
    replace_with_random: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose `ratio` of the non-special tokens; return (masked input ids, labels).

    Labels hold the original id at chosen positions and IGNORE_INDEX elsewhere. Of the chosen
    positions, `replace_with_mask` become [MASK], `replace_with_random` a random non-special
    token, and the rest keep their token (BERT's 80/10/10).
    """
    device = input_ids.device
    maskable = ~torch.isin(input_ids, special_ids)  # (batch, seq)
    draw = torch.rand(input_ids.shape, device=device, generator=generator)
    chosen = (draw < ratio) & maskable
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    # One more uniform draw splits the chosen positions into mask / random / keep.
    split = torch.rand(input_ids.shape, device=device, generator=generator)
    to_mask = chosen & (split < replace_with_mask)
    to_random = chosen & (split >= replace_with_mask) & (split < replace_with_mask + replace_with_random)
    random_ids = torch.randint(0, vocab_size, input_ids.shape, device=device, generator=generator)
    # A random draw that lands on a special token keeps the original instead (rare, unbiased enough).
    random_ids = torch.where(torch.isin(random_ids, special_ids), input_ids, random_ids)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels
