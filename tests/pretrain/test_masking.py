"""Masking statistics: the ratio, the 80/10/10 split, and special tokens never chosen."""

import torch

from pretrain.masking import IGNORE_INDEX, mask_tokens

SPECIAL = torch.tensor([0, 1, 2, 3, 4])
MASK_ID, VOCAB = 4, 1000


def draw(ratio=0.15, shape=(256, 128), seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, shape, generator=gen)
    ids[:, 0] = 2  # [CLS]
    ids[:, 64] = 3  # [SEP]
    masked, labels = mask_tokens(ids, ratio, MASK_ID, VOCAB, SPECIAL, generator=gen)
    return ids, masked, labels


def test_ratio_matches_over_maskable_tokens():
    for ratio in (0.15, 0.3):
        ids, _, labels = draw(ratio)
        chosen = (labels != IGNORE_INDEX).float()
        maskable = ids.numel() - 2 * ids.shape[0]
        assert abs(chosen.sum().item() / maskable - ratio) < 0.01


def test_eighty_ten_ten_split():
    ids, masked, labels = draw(shape=(512, 128))
    chosen = labels != IGNORE_INDEX
    n = chosen.sum().item()
    to_mask = (masked[chosen] == MASK_ID).sum().item() / n
    unchanged = (masked[chosen] == ids[chosen]).sum().item() / n
    randomised = 1 - to_mask - unchanged
    assert abs(to_mask - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01 and abs(randomised - 0.1) < 0.01
    assert (labels[chosen] == ids[chosen]).all()  # labels hold the original tokens
    assert (masked[~chosen] == ids[~chosen]).all()  # nothing else is touched


def test_special_tokens_are_never_chosen_or_inserted():
    ids, masked, labels = draw()
    assert (labels[:, 0] == IGNORE_INDEX).all() and (labels[:, 64] == IGNORE_INDEX).all()
    random_positions = (labels != IGNORE_INDEX) & (masked != MASK_ID) & (masked != ids)
    assert not torch.isin(masked[random_positions], SPECIAL).any()


def test_same_seed_same_masks():
    assert torch.equal(draw(seed=7)[1], draw(seed=7)[1])
    assert not torch.equal(draw(seed=7)[1], draw(seed=8)[1])
