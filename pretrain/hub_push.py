"""Intermediate checkpoints to a hub during pretraining: every `publish.push_every_n_steps`, the HF export
of that step goes to a branch `step-000100` of `publish.repo_id`.

Training does not wait for the network: the export is written on the training thread (a disk write),
the upload runs in one background thread. At most one upload is in flight: a step that comes while the
previous one is still uploading is skipped (not queued: a queue of exports could grow without bound
on a slow link), with a warning; the next multiple of N tries again. A failed upload is a warning,
never a crash. A resumed run asks the hub which step branches hold this model's steps (their head commit
was made for this pretrain stage, by an attempt no later rollback abandoned, and holds config.json and the
weights: `pretrain.publish.hub.holds_step`) and does not push those again; a branch an interrupted upload
left, a step a diverged attempt pushed past its rollback point, or a branch that holds another model (a
sweep, an earlier experiment in the same repo), is pushed again when training reaches it, and so is the step a
run resumes at (its checkpoint's weights), whose upload a crash may have cut short. The rollbacks are the
module's (`rollbacks`, kept in its checkpoints), so this holds for a run resumed after a crash as well. Each
push leaves the branch holding exactly the export (files an earlier push left are deleted in the same
commit). A new step branch starts from the repo's empty first commit (`new_step_branch`), never from main:
a failed or killed upload leaves a branch without a model, not one that serves main's as that step.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

from lightning.pytorch.callbacks import Callback

from pretrain.config import PublishConfig
from pretrain.publish.hub import (empty_start, hub_api, hub_endpoint, holds_step, new_step_branch, step_branch,
                                  step_branches, step_message)

log = logging.getLogger("bertforge.pretrain")

SCRATCH_SUFFIX = ".hub-push"
"""The step exports wait for their upload beside the run's working folder (`<it>.hub-push`: never inside it,
which becomes the published stage folder), so a killed run's export is found and removed by the next start."""


class HubCheckpointPush(Callback):
    """Pushes the model every `publish.push_every_n_steps` optimiser steps (global rank 0 only).

    `export(model, folder)` writes a loadable HF folder (weights, config, tokenizer). Step N's commit is
    titled `<message>: step N` (with " (rollback K)" after K rollbacks); `mark`, the part of `message` that names
    the model (the pretrain stage's `stage_mark`, not the run's name), is what a branch's head commit must say to
    hold this model's step (default: the whole message). Besides every Nth step, the step a fit resumes at is
    pushed when the hub lacks it. After fit, `pushed`, `skipped` and `failed` list the branches; `finish()`
    waits for the upload in flight.
    """

    def __init__(self, publish: PublishConfig, export: Callable[[object, Path], None], message: str,
                 mark: str | None = None):
        self.publish, self.export, self.message = publish, export, message
        self.mark = mark or message
        self.pushed: list[str] = []
        self.skipped: list[str] = []
        self.failed: list[str] = []
        self.already_there: set[str] = set()
        self.rollbacks = 0  # the rollbacks before this attempt: named in its commits
        self._thread: threading.Thread | None = None
        self._last_step = -1
        self._scratch: Path | None = None
        self._api = None
        self._branch_start: str | None = None  # `empty_start`: None until known (a new branch is then emptied)

    def on_fit_start(self, trainer, pl_module) -> None:
        """Each fit: the first, a resumed one, or the next attempt after a rollback (the module's `rollbacks`,
        restored from its checkpoint before this hook, say which pushed steps were abandoned)."""
        if not trainer.is_global_zero:
            return
        rollback_steps = [rollback["to_step"] for rollback in pl_module.rollbacks]
        self.rollbacks, self._last_step = len(rollback_steps), -1
        self._api = self._api or hub_api(self.publish)
        try:
            self._api.create_repo(self.publish.repo_id, private=self.publish.private, exist_ok=True)
            branches = step_branches(self._api, self.publish.repo_id)
            self.already_there = {b for b in branches
                                  if holds_step(self._api, self.publish.repo_id, b, self.mark, rollback_steps)}
            self._branch_start = empty_start(self._api, self.publish.repo_id)
            others = [b for b in branches if b not in self.already_there]
            if others:
                log.warning("hub: %s has step branches that do not hold this model's steps (an interrupted upload, "
                            "a diverged attempt's step, or another model, whose card may list them): %s; this run "
                            "pushes its own step to each it reaches", self.publish.repo_id,
                            ", ".join(others[:5]) + (", ..." if len(others) > 5 else ""))
        except Exception as err:  # checked before training; a later network failure must not stop it
            log.warning("hub: cannot list %s's revisions (%s); steps already pushed may be pushed again",
                        self.publish.repo_id, _short(err))
        if self._scratch is None:  # the first fit of this process: a killed run's exports are removed
            self._scratch = _scratch_folder(getattr(trainer, "default_root_dir", None))

    def on_train_start(self, trainer, pl_module) -> None:
        """The step a resumed fit starts at (restored by now): pushed when the hub lacks it, as after a crash
        during its upload (training never reaches that step again)."""
        self._push_step(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._push_step(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        """A fit resumed at its last step trains nothing (no on_train_start): its step is pushed here."""
        self._push_step(trainer, pl_module)

    def _push_step(self, trainer, pl_module) -> None:
        step = trainer.global_step  # optimiser steps: with accumulation several micro-batches share one
        if not trainer.is_global_zero or step == self._last_step or step == 0 or step % self.publish.push_every_n_steps:
            return
        self._last_step = step
        branch = step_branch(step)
        if branch in self.already_there:
            log.info("hub: %s on %s already holds this model's step %d (a resumed run): not pushed again", branch,
                     self.publish.repo_id, step)
            return
        if self._thread is not None and self._thread.is_alive():
            self.skipped.append(branch)
            log.warning("hub: %s not pushed: the previous upload is still running (at most one in flight)", branch)
            return
        folder = self._scratch / branch
        self.export(pl_module.model, folder)  # on this thread: the weights are not changing while it writes
        self._thread = threading.Thread(target=self._upload, args=(folder, branch, step), name=f"hub-push-{branch}",
                                        daemon=True)
        self._thread.start()

    def _upload(self, folder: Path, branch: str, step: int) -> None:
        try:
            # A new branch holds no model (`new_step_branch`); delete_patterns="*" deletes, in the upload's
            # commit, every file the export lacks (another push's files) but the hub's .gitattributes. A failure
            # after the branch is made leaves it without this commit: `holds_step` says not done.
            new_step_branch(self._api, self.publish.repo_id, branch, self._branch_start)
            self._api.upload_folder(repo_id=self.publish.repo_id, folder_path=str(folder), revision=branch,
                                    commit_message=step_message(self.message, step, self.rollbacks),
                                    delete_patterns="*")
            self.pushed.append(branch)
            log.info("hub: pushed step %d to %s@%s", step, self.publish.repo_id, branch)
        except Exception as err:  # a warning, not a crash: training goes on, the final push still happens
            self.failed.append(branch)
            log.warning("hub: pushing step %d to %s@%s failed (%s); training goes on", step, self.publish.repo_id,
                        branch, _short(err))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def finish(self) -> None:
        """Wait for the upload in flight, then drop the scratch exports."""
        if self._thread is not None:
            self._thread.join()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def summary(self) -> dict:
        return {"repo_id": self.publish.repo_id, "endpoint": hub_endpoint(self.publish),
                "every_n_steps": self.publish.push_every_n_steps,
                "pushed": self.pushed, "skipped": self.skipped, "failed": self.failed,
                "already_there": sorted(self.already_there)}


def _scratch_folder(run_folder: str | None) -> Path:
    """An empty folder for the step exports: `<run folder>.hub-push` (what a killed run left there removed), or
    a new temporary folder when the trainer names no run folder."""
    if not run_folder:
        return Path(tempfile.mkdtemp(prefix="bertforge-hub-push-"))
    scratch = Path(run_folder).with_name(Path(run_folder).name + SCRATCH_SUFFIX)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return scratch


def _short(err: Exception) -> str:
    text = str(err).splitlines()[0][:200] if str(err) else ""
    return f"{type(err).__name__}: {text}"
