"""Checkpoints that cannot be half-written, and the newest one that can be trusted.

A checkpoint is written to a temporary name beside its place and renamed over it, so a reader sees
the old file or the whole new one. A disk that fills while saving leaves the previous checkpoint as
it was and stops the run with a message saying so. On resume, a newest checkpoint that is truncated
or corrupt (a copy cut short, a bad disk) is passed over, with a warning, for the one before it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bertforge.common.errors import DiskFull

log = logging.getLogger("bertforge.pretrain")

LAST = "last.ckpt"
STEP_FILE = re.compile(r"step(\d+)\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, writing to `<name>.tmp-<pid>` and renaming it into place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            torch.save(checkpoint, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())  # on disk before it replaces the previous one
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                kept = newest_valid_checkpoint(path.parent)
                raise DiskFull(f"the disk filled while saving {path} ({err.strerror}); "
                               + (f"the previous checkpoint {kept} is intact. " if kept else "no checkpoint was lost. ")
                               + "Free space, then rerun the same command to resume.") from None
            raise


def is_readable(path: Path) -> bool:
    """Whether `path` is a whole torch checkpoint (a zip archive whose every member checks out)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def newest_valid_checkpoint(folder: Path) -> Path | None:
    """`last.ckpt`, else the highest `step<N>.ckpt`, that `is_readable`; the ones passed over are named
    in a warning. None when there is none (a fresh start)."""
    folder = Path(folder)
    steps = sorted((p for p in folder.glob("step*.ckpt") if STEP_FILE.search(p.name)),
                   key=lambda p: int(STEP_FILE.search(p.name).group(1)), reverse=True)
    candidates = [p for p in [folder / LAST, *steps] if p.is_file()]
    for index, path in enumerate(candidates):
        if is_readable(path):
            if index:
                log.warning("checkpoints %s are truncated or corrupt: resuming from %s instead",
                            ", ".join(str(p) for p in candidates[:index]), path)
            return path
    if candidates:
        log.warning("no readable checkpoint in %s (%s): starting over", folder, ", ".join(p.name for p in candidates))
    return None


def newest_checkpoint_up_to(folder: Path, step: int) -> Path | None:
    """The readable `step<N>.ckpt` or `pinned-step<N>.ckpt` with the highest N <= `step`: the newest state
    from before a run of bad steps (`last.ckpt` is left out: its step is not in its name)."""
    found = [(int(STEP_FILE.search(p.name).group(1)), p) for p in Path(folder).glob("*step*.ckpt")
             if STEP_FILE.search(p.name)]
    for _, path in sorted((item for item in found if item[0] <= step), reverse=True):
        if is_readable(path):
            return path
    return None


def remove_partial_saves(folder: Path) -> None:
    """Delete the `<name>.tmp-<pid>` files a run killed while saving left (`AtomicCheckpointIO`): no reader
    takes them and `checkpoint.keep_last` never prunes them (a large model's is gigabytes)."""
    for partial in Path(folder).glob("*.ckpt.tmp-*"):
        log.warning("removing %s, a checkpoint a killed run did not finish writing", partial)
        partial.unlink(missing_ok=True)


def set_aside_after(folder: Path, step: int, aside: str) -> list[Path]:
    """Move `last.ckpt` and every step checkpoint past `step` into `folder`/`aside`, out of the way of
    `newest_valid_checkpoint`: after a rollback to `step` they hold the attempt it abandoned, and a run
    resumed before the next attempt saves would go on from them (skipped batches never trained, the
    rollback forgotten). Kept, not deleted. Returns where they went."""
    folder = Path(folder)
    abandoned = [p for p in folder.glob("*.ckpt")
                 if p.name == LAST or (STEP_FILE.search(p.name) and int(STEP_FILE.search(p.name).group(1)) > step)]
    moved = []
    for path in abandoned:
        (folder / aside).mkdir(exist_ok=True)
        moved.append(Path(shutil.move(path, folder / aside / path.name)))
    return moved


Untimed = Callable[[torch.device], AbstractContextManager]  # StepMetricsLogger.untimed: host time left out


def _timed(device: torch.device) -> AbstractContextManager:
    return nullcontext()


class UntimedCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, each save run under `untimed`: a save's host time (the device's copy to the
    host, the write, the fsync) is neither training throughput nor the next step's data wait. `saved` runs
    after each save (the stage folder's `record_attempt`: a killed attempt's time counts to its last checkpoint)."""

    def __init__(self, untimed: Untimed = _timed, saved: Callable[[], None] = lambda: None, **kwargs: Any):
        super().__init__(**kwargs)
        self.untimed, self.saved = untimed, saved

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        with self.untimed(trainer.lightning_module.device):
            super()._save_checkpoint(trainer, filepath)
        self.saved()


class PinnedCheckpoints(Callback):
    """Save the checkpoint of every step in `steps` (checkpoint.pin_steps) as `pinned-step<N>.ckpt`.

    ModelCheckpoint's keep_last deletes only the files it wrote itself, so a pinned one stays for good;
    it is written through the same atomic checkpoint IO, and a rollback may go back to it. Saves run
    under `untimed`, as UntimedCheckpoint's do."""

    def __init__(self, steps: list[int], folder: Path, untimed: Untimed = _timed):
        self.steps, self.folder, self.untimed = set(steps), Path(folder), untimed
        self.seen_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self.seen_step = trainer.global_step  # a resumed run: its pins up to here are on disk already

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self.seen_step:  # between the micro-batches of one optimiser step
            return
        self.seen_step = step
        if step in self.steps:  # every rank calls it (a collective); rank 0 writes
            with self.untimed(pl_module.device):
                trainer.save_checkpoint(self.folder / f"pinned-step{step}.ckpt")
