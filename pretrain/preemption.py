"""Stopping a run cleanly when the cluster says it is about to end it, so the next attempt resumes in place.

SLURM warns a job before its time limit or a preemption with SIGUSR1 (`--signal=USR1@90` in
launch/slurm/*.sbatch); a job of a `hydra/launcher=slurm` sweep is warned with the signal submitit asked
for (SUBMITIT_PREEMPT_SIGNAL, by default USR2). Lightning's own SLURM handler saves a checkpoint *inside*
the signal handler, which waits at a barrier for the other ranks: a rank that gets the signal while another
is elsewhere (starting up, in a collective, between steps) waits there forever, and the job hangs until it
is killed. submitit's handler runs `scontrol requeue` and exits from inside the handler, mid-step.

Here the handler only raises a flag (`pretrain.signal_flag`, set up from the command's start, so a signal
that comes while the run still plans or waits for upstream stages is kept, and training stops at its first
step boundary). At each
optimiser-step boundary every rank learns, through one tiny all-reduce over CPU (gloo, so no GPU sync),
whether any rank has the flag; then all of them, at the same step, save `checkpoints/last.ckpt` together,
rank 0 runs `scontrol requeue` (under SLURM), and training stops. The checkpoint sits exactly on a step
boundary, so the next attempt repeats and skips nothing.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
import torch.distributed as dist

from pretrain.signal_flag import SignalFlag

log = logging.getLogger("bertforge.pretrain")


class StopOnPreemption(L.Callback):
    """At each optimiser-step boundary: if any rank got the signal, every rank saves `checkpoint` at that
    step, rank 0 runs `requeue` (a command, or None outside SLURM), and training stops. A flag raised
    before training stops it at its first step boundary.

    After `fit` returns, `stopped_at` is the step saved at (None when the run was not preempted).
    """

    def __init__(self, flag: SignalFlag, checkpoint: Path, requeue: Sequence[str] | None = None):
        self.flag, self.checkpoint, self.requeue = flag, Path(checkpoint), list(requeue) if requeue else None
        self.stopped_at: int | None = None
        self._collective = False
        self._group = None
        self._last_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step
        self._collective = trainer.world_size > 1 and dist.is_initialized()
        if self._collective:
            # The flag travels over CPU: on a NCCL run a CUDA tensor here would sync the host every step.
            # new_group is collective; every rank reaches on_train_start.
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step:  # mid-accumulation: no optimiser step yet, nothing consistent to save
            return
        self._last_step = step
        if step >= trainer.max_steps > 0:  # the run is finishing anyway
            return
        if not self._anyone_signalled():
            return
        log.warning("preemption signal: saving %s at step %d and stopping", self.checkpoint, step)
        trainer.save_checkpoint(self.checkpoint)  # every rank takes part (FSDP gathers); ends at a barrier
        if trainer.is_global_zero and self.requeue:
            self._requeue()
        self.stopped_at = step
        trainer.should_stop = True

    def _requeue(self) -> None:
        command = " ".join(self.requeue)
        # Said before it runs: once the requeue succeeds SLURM may kill this task before another line is out.
        log.warning("requeueing: `%s`", command)
        try:
            done = subprocess.run(self.requeue, capture_output=True, text=True)
        except OSError as err:  # scontrol not on PATH
            log.error("`%s` could not run (%s); the checkpoint is saved: resubmit the job to resume", command, err)
            return
        if done.returncode:
            log.error("`%s` failed (%d): %s; the checkpoint is saved: resubmit the job to resume", command,
                      done.returncode, done.stderr.strip())

    def _anyone_signalled(self) -> bool:
        if not self._collective:
            return self.flag.received
        received = torch.tensor([int(self.flag.received)], dtype=torch.int32)
        dist.all_reduce(received, op=dist.ReduceOp.MAX, group=self._group)
        return bool(received.item())

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._group is not None:
            dist.destroy_process_group(self._group)
            self._group = None
