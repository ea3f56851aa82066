"""Feeding packed rows to the model: a seeded permutation over a memory-mapped array."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class PackedRows(Dataset):
    """Rows of a shards split in a seeded random order; item i is always the same row.

    Because the order is a pure function of (seed, number of rows), the data position of a run
    is one integer: resuming means starting at that index.
    """

    def __init__(self, rows: np.ndarray, seed: int):
        self.rows = rows
        self.order = np.random.default_rng(seed).permutation(len(rows))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        row = np.asarray(self.rows[self.order[index]], dtype=np.int64)  # (seq_len,)
        return torch.from_numpy(row)
