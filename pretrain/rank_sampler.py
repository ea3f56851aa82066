"""Every rank reads a disjoint slice of one seeded order; the data position is a step number.

The rows form an endless stream of positions: `PackedRows` maps position p to a row (pass
p // rows in its own seeded order, so every pass reads each row once). Optimiser step `s` reads stream
positions `[s*G, (s+1)*G)` for a global batch `G` (counted from the first step of the training
phase that owns the rows, after the rows earlier phases of the same length read), whatever the world size. Inside that block
rank `r` reads the contiguous slice `[r*a*m, (r+1)*a*m)` as `a` micro-batches of `m` rows
(accumulation `a`); the micro-batch's *slot* `r*a + k` is its place in the global batch, the same
slot one rank would give it when accumulating alone. Within a pass over the rows none is read
twice or skipped, on any world size, and resuming at step `s` costs nothing: the position is `s*G`.

`MicroBatchSeeding` ties Lightning to that stream: before every micro-batch it reseeds torch's RNG
(masking, dropout) from (seed, step, slot), which is what makes a run on N devices, and a resumed
run, draw exactly the masks and dropout of one uninterrupted run on one device. It also checks that
Lightning's step and the sampler's agree, and can keep a ledger of the positions each rank trained on.
`PhaseAccumulation` gives Lightning each phase's micro-batches per step, also in a resumed run.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Callable

import lightning as L
from lightning.pytorch.callbacks import GradientAccumulationScheduler
import numpy as np
import torch
from torch.utils.data import Sampler

from pretrain.distributed import BatchLayout
from pretrain.phases import Phase


class RankSliceSampler(Sampler[list[int]]):
    """Batch sampler: yields this rank's micro-batches (lists of stream positions) for steps
    `start_step .. stop_step-1`, where step `first_step` (the step this data source starts at; 0 unless
    a later training phase brings its own rows) reads from stream position `first_position` (past the rows
    earlier phases of the same rows read)."""

    def __init__(self, num_rows: int, layout: BatchLayout, rank: int, seed: int, stop_step: int,
                 start_step: int = 0, first_step: int = 0, first_position: int = 0):
        if not 0 <= rank < layout.world_size:
            raise ValueError(f"rank {rank} outside world size {layout.world_size}")
        if num_rows < 1:
            raise ValueError("no rows to sample from: the shards split is empty")
        self.num_rows, self.layout, self.rank, self.seed = num_rows, layout, rank, seed
        self.first_step, self.start_step, self.stop_step = first_step, start_step, stop_step
        self.first_position = first_position
        self.pending: deque[tuple[int, int, int]] = deque()
        """(step, slot, first stream position) of every micro-batch yielded and not yet trained on."""

    def __len__(self) -> int:
        # Counted from first_step, not start_step: Lightning restores its batch counter on resume and
        # compares it with this length, so the length must be that of the whole run.
        return (self.stop_step - self.first_step) * self.layout.accumulation

    def stream_position(self, step: int, micro: int) -> int:
        """First stream position of this rank's micro-batch `micro` of optimiser step `step`."""
        lay = self.layout
        return (self.first_position + (step - self.first_step) * lay.global_batch_size
                + (self.rank * lay.accumulation + micro) * lay.micro_batch_size)

    def __iter__(self):
        self.pending.clear()
        lay = self.layout
        for step in range(self.start_step, self.stop_step):
            for micro in range(lay.accumulation):
                start = self.stream_position(step, micro)
                self.pending.append((step, self.rank * lay.accumulation + micro, start))
                yield list(range(start, start + lay.micro_batch_size))


def micro_batch_seed(seed: int, step: int, slot: int) -> int:
    """A 63-bit seed for one micro-batch's masking and dropout, the same on any world size."""
    return int(np.random.SeedSequence([seed, step, slot]).generate_state(2, dtype=np.uint32).view(np.uint64)[0]
               >> np.uint64(1))


class MicroBatchSeeding(L.Callback):
    """Reseeds torch's RNG before every micro-batch from (seed, step, slot), so masks and dropout are
    those of the micro-batch's place in the global batch, whatever the world size and wherever the run
    resumed; refuses to run when Lightning's step and the sampler's stream disagree.

    `current_sampler` returns the sampler of the loader Lightning is iterating (one per training phase).
    `ledger_dir`: when given, each rank appends `attempt step slot start stop` per trained
    micro-batch to `rank<r>.tsv` there (an audit that ranks read disjoint data and resumed in place). The
    attempt is one more than the last one the ledger holds: a rerun, a requeued job, a restarted torchrun or a
    rollback each start one.
    """

    def __init__(self, current_sampler: Callable[[], RankSliceSampler], seed: int, ledger_dir: Path | None = None):
        self.current_sampler, self.seed, self.attempt = current_sampler, seed, 0
        self.ledger_dir = Path(ledger_dir) if ledger_dir else None
        self._ledger = None
        self.saved_accumulation: int | None = None  # that of the run that wrote the checkpoint resumed from

    def state_dict(self) -> dict:
        # trainer.micro_batch_size is hardware, not hashed: a resume on other hardware accumulates another
        # number of micro-batches, and the checkpoint's batch count is in the saving run's
        return {"accumulation": self.current_sampler().layout.accumulation}

    def load_state_dict(self, state_dict: dict) -> None:
        self.saved_accumulation = state_dict.get("accumulation")

    def on_train_start(self, trainer, pl_module) -> None:
        sampler = self.current_sampler()
        accumulation, saved = sampler.layout.accumulation, self.saved_accumulation or sampler.layout.accumulation
        check_step_boundary(trainer, saved)
        if saved != accumulation:
            recount_micro_batches(trainer, (sampler.start_step - sampler.first_step) * accumulation)
        if trainer.global_step != sampler.start_step:
            raise RuntimeError(f"Lightning resumed at step {trainer.global_step} but the data sampler starts at step "
                               f"{sampler.start_step}: pass the step of the checkpoint given to fit()")
        if trainer.global_rank != sampler.rank:
            raise RuntimeError(f"this process is Lightning rank {trainer.global_rank} but reads the data slice of "
                               f"rank {sampler.rank}: the launch environment and the config disagree")
        if self.ledger_dir is not None:
            self.ledger_dir.mkdir(parents=True, exist_ok=True)
            path = self.ledger_dir / f"rank{sampler.rank}.tsv"
            self.attempt = _last_attempt(path) + 1
            self._ledger = open(path, "a", encoding="utf-8")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        step, slot, _ = self.current_sampler().pending[0]
        if step != trainer.global_step:
            raise RuntimeError(f"micro-batch of step {step} reached the model at Lightning step {trainer.global_step}: "
                               "gradient accumulation and the sampler are out of step")
        torch.manual_seed(micro_batch_seed(self.seed, step, slot))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        sampler = self.current_sampler()
        step, slot, start = sampler.pending.popleft()
        if self._ledger is not None:
            stop = start + sampler.layout.micro_batch_size
            self._ledger.write(f"{self.attempt}\t{step}\t{slot}\t{start}\t{stop}\n")
            self._ledger.flush()  # a preempted attempt keeps what it trained on

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


def _last_attempt(ledger: Path) -> int:
    """The attempt of the ledger's last line (its lines are appended, attempts in order); -1 for none. Reads
    only the file's tail: a ledger has a line per micro-batch ever trained."""
    if not ledger.exists():
        return -1
    with open(ledger, "rb") as handle:
        handle.seek(max(0, handle.seek(0, 2) - 4096))
        lines = handle.read().splitlines()
    # The tail's first line may start mid-line; a kill may cut the last, but a tab after it means its attempt
    # is whole.
    read = [line for line in (lines[1:] or lines) if b"\t" in line]
    return int(read[-1].split(b"\t")[0]) if read else -1


def check_step_boundary(trainer, accumulation: int) -> None:
    """Refuse a checkpoint taken part-way through a gradient accumulation.

    The sampler restarts a step at its first micro-batch, while Lightning would go on counting from the
    middle and step the optimiser at the wrong micro-batch. bertforge saves only at step boundaries
    (periodic checkpoints and preemption stops both save right after an optimiser step).
    """
    partial = _completed_batches(trainer.fit_loop.epoch_loop.batch_progress.current) % accumulation
    if partial:
        raise RuntimeError(f"the checkpoint was saved after {partial} of {accumulation} micro-batches of a step; "
                           "resume from one saved at a step boundary (checkpoints/step*.ckpt)")


def recount_micro_batches(trainer, done: int) -> None:
    """Count the micro-batches of this phase already trained as `done`, in this run's accumulation.

    Lightning restores the checkpoint's count, in the accumulation of the run that saved it (another
    `trainer.micro_batch_size` or number of devices), and goes on from there: it steps the optimiser when
    the count is a multiple of this run's accumulation, and ends the phase when it reaches the loader's
    length, counted in this run's. Unchanged, a run that accumulates fewer micro-batches than the one it
    resumed ended its phase early, mid-way through the sampler, and every resume after it failed."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    shift = done - _completed_batches(progress.current)
    for tracker in (progress.current, progress.total):  # every counter moves: Lightning compares them on restart
        tracker.ready += shift
        tracker.started += shift
        tracker.processed += shift
        tracker.completed += shift


def _completed_batches(tracker) -> int:
    # A checkpoint written inside on_train_batch_end has the batch processed but not yet completed;
    # Lightning counts it as completed on restart, and so do we.
    if tracker.ready == tracker.started == tracker.processed == tracker.completed + 1:
        return tracker.processed
    return tracker.completed


class PhaseAccumulation(GradientAccumulationScheduler):
    """Micro-batches per optimiser step of each phase (one Lightning epoch a phase). Lightning's scheduler
    sets them only when an epoch starts, a hook a resumed run skips when it resumes inside an epoch, which
    left a resumed run at one micro-batch a step; this also sets them when training starts."""

    def __init__(self, plan: list[Phase]):
        super().__init__({phase.index: phase.accumulation for phase in plan})

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)
