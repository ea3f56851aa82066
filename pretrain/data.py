"""Feeding packed rows to the model: a seeded permutation over a memory-mapped array, one phase at a time."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class PackedRows(Dataset):
    """Rows of a shards split in a seeded random order; item i is always the same row.

    Because the order is a pure function of (seed, number of rows), the data position of a run
    is one integer: resuming means starting at that index. Indices past the end continue into
    further passes over the data, each in its own seeded order, so a long phase never runs dry.
    """

    def __init__(self, rows: np.ndarray, seed: int, static_masks: tuple[np.ndarray, np.ndarray] | None = None,
                 pair_info: np.ndarray | None = None, copies: list[np.ndarray] | None = None):
        self.rows, self.seed = rows, seed
        # BPE-dropout copies of the training rows (all of len(rows) rows): pass p reads copy p mod len(copies).
        self.copies = copies
        # Static masking: (dupe, rows, k) positions and fed ids from the shards; pass p reads copy p mod dupe.
        self.static_masks = static_masks
        # Sentence pairs: (rows, 3) len(A), len(B), label of padded [CLS] A [SEP] B [SEP] rows.
        self.pair_info = pair_info
        self.order = np.random.default_rng(seed).permutation(len(rows))
        self._pass, self._pass_order = 0, self.order

    def __len__(self) -> int:
        return len(self.rows)

    def row_index(self, index: int) -> int:
        """Which stored row item `index` is."""
        data_pass, offset = divmod(index, len(self.rows))
        if data_pass != self._pass:
            self._pass = data_pass
            self._pass_order = self.order if data_pass == 0 else \
                np.random.default_rng([self.seed, data_pass]).permutation(len(self.rows))
        return int(self._pass_order[offset])

    def __getitem__(self, index: int) -> torch.Tensor | tuple | dict:
        """The row (seq_len,); with static masks, (masked row, positions (k,), targets (k,)); with sentence
        pairs, a dict of input_ids, token_type_ids, attention_mask, pair_label (+ positions, targets)."""
        stored = self.row_index(index)
        source = self.copies[(index // len(self.rows)) % len(self.copies)] if self.copies else self.rows
        row = np.asarray(source[stored], dtype=np.int64)  # (seq_len,)
        if self.static_masks is None and self.pair_info is None:
            return torch.from_numpy(row)
        masked = ()
        if self.static_masks is not None:
            positions_all, inputs_all = self.static_masks
            copy = (index // len(self.rows)) % len(positions_all)
            positions = np.asarray(positions_all[copy, stored], dtype=np.int64)  # (k,)
            targets = row[positions]
            row[positions] = inputs_all[copy, stored]
            masked = (torch.from_numpy(row), torch.from_numpy(positions), torch.from_numpy(targets))
        if self.pair_info is None:
            return masked
        len_a, len_b, label = (int(v) for v in self.pair_info[stored])
        used = len_a + len_b + 3  # [CLS] A [SEP] B [SEP]
        token_types = torch.zeros(len(row), dtype=torch.long)
        token_types[len_a + 2:used] = 1
        attention = torch.zeros(len(row), dtype=torch.long)
        attention[:used] = 1
        item = {"input_ids": torch.from_numpy(row), "token_type_ids": token_types, "attention_mask": attention,
                "pair_label": torch.tensor(label)}
        return item | ({"positions": masked[1], "targets": masked[2]} if masked else {})


class PhasedData(L.LightningDataModule):
    """One Lightning epoch per phase: the loader of epoch k serves phase k's rows and batch size.

    Needs `Trainer(reload_dataloaders_every_n_epochs=1)`. Phase k reads the shards of its own length
    (steps x global batch rows), from data position 0, or, when an earlier phase had the same length (a
    batch or learning-rate change), from where the last such phase stopped, so no phase re-reads its rows.
    """

    def __init__(self, plan, rows_by_len: dict[int, PackedRows], num_workers: int = 0, pin_memory: bool = False,
                 rank: int = 0, world_size: int = 1):
        super().__init__()
        self.plan, self.rows_by_len = plan, rows_by_len
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.rank, self.world_size = rank, world_size
        self.start_step = 0
        """Optimiser step to resume at (the step of the checkpoint given to fit); 0 for a fresh run."""
        self.sampler = None
        """The current phase's RankSliceSampler (read by MicroBatchSeeding)."""

    def loader(self, phase) -> DataLoader:
        """The loader of one phase for this rank: its slice of every global batch, from `start_step` on."""
        from pretrain.distributed import BatchLayout
        from pretrain.rank_sampler import RankSliceSampler

        layout = BatchLayout(phase.batch_size, phase.micro_batch_size, phase.accumulation, self.world_size)
        rows = self.rows_by_len[phase.seq_len]
        read_before = sum(p.steps * p.batch_size for p in self.plan[:phase.index] if p.seq_len == phase.seq_len)
        self.sampler = RankSliceSampler(len(rows), layout, self.rank, rows.seed, stop_step=phase.end_step,
                                        start_step=max(self.start_step, phase.start_step),
                                        first_step=phase.start_step, first_position=read_before)
        return DataLoader(rows, batch_sampler=self.sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer else 0
        return self.loader(self.plan[min(epoch, len(self.plan) - 1)])
