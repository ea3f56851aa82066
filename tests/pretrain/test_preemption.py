"""The preemption signal only raises a flag, and only while a resumable run is listening for it.
(The two-process and SLURM runs that stop on it are in tests/launch/.)"""

from __future__ import annotations

import signal
import threading

import pytest

from pretrain.signal_flag import PREEMPTION_SIGNAL, flag_on_signal


def test_signal_sets_the_flag_and_the_old_handler_comes_back():
    before = signal.getsignal(PREEMPTION_SIGNAL)
    with flag_on_signal() as flag:
        assert not flag.received
        signal.raise_signal(PREEMPTION_SIGNAL)  # would end the process under the default handler
        assert flag.received
    assert signal.getsignal(PREEMPTION_SIGNAL) == before


def test_a_run_that_cannot_resume_or_is_off_the_main_thread_leaves_the_signal_alone():
    before = signal.getsignal(PREEMPTION_SIGNAL)
    with flag_on_signal(enabled=False) as flag:
        assert flag is None and signal.getsignal(PREEMPTION_SIGNAL) == before
    seen = []

    def worker():
        with flag_on_signal() as flag:
            seen.append((flag, signal.getsignal(PREEMPTION_SIGNAL)))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [(None, before)]


@pytest.fixture
def submitit_job(monkeypatch, request):
    """The environment of a `hydra/launcher=slurm` job (`request.param`: SUBMITIT_PREEMPT_SIGNAL, by default
    unset), with submitit's own handler on the signal it asked SLURM for; yields that signal."""
    name = getattr(request, "param", None)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    if name:
        monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", name)
    else:
        monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    signum = getattr(signal, f"SIG{name or 'USR2'}")

    def submitits_handler(signum, frame):  # submitit's: scontrol requeue and sys.exit, mid-step
        raise AssertionError(f"submitit's handler got {signal.Signals(signum).name}")

    before = signal.signal(signum, submitits_handler)
    yield signum
    signal.signal(signum, before)


@pytest.mark.parametrize("submitit_job", [None, "HUP"], indirect=True)
def test_in_a_submitit_job_the_signal_submitit_asked_for_sets_the_flag(submitit_job):
    """The SLURM sweep launcher asks for --signal=USR2@120 (or SUBMITIT_PREEMPT_SIGNAL): it raises the
    flag, not submitit's handler, and submitit's comes back after."""
    handler = signal.getsignal(submitit_job)
    with flag_on_signal() as flag:
        signal.raise_signal(submitit_job)
        assert flag.received
    assert signal.getsignal(submitit_job) is handler


def test_a_signal_before_training_is_kept_for_the_train_stages_flag_and_stops_at_the_first_step(tmp_path):
    """The command sets the flag up from its start; the train stage's own `flag_on_signal` inside it
    returns the same flag, so a signal that came while the run still planned stops training at its first
    step boundary. Each exit puts back the handler it found."""
    import lightning as L

    from pretrain.preemption import StopOnPreemption

    before = signal.getsignal(PREEMPTION_SIGNAL)
    with flag_on_signal() as command_flag:
        signal.raise_signal(PREEMPTION_SIGNAL)  # planning, hashing init_from weights, waiting for shards
        with flag_on_signal() as flag:
            assert flag is command_flag and flag.received
            stopper = StopOnPreemption(flag, tmp_path / "last.ckpt")
            trainer = L.Trainer(max_steps=20, callbacks=[stopper], logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
            trainer.fit(Tiny())
        assert signal.getsignal(PREEMPTION_SIGNAL) == command_flag._handle
    assert signal.getsignal(PREEMPTION_SIGNAL) == before
    assert stopper.stopped_at == trainer.global_step == 1 and (tmp_path / "last.ckpt").exists()


class Tiny(__import__("lightning").LightningModule):
    """A linear model on random data: enough for Lightning's loop, optimiser steps and checkpoints."""

    def __init__(self):
        super().__init__()
        import torch

        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        import torch

        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        import torch

        return torch.utils.data.DataLoader(torch.randn(64, 4), batch_size=2)


@pytest.mark.parametrize("launcher", ["sbatch", "submitit"])
def test_stop_saves_at_the_step_boundary_after_the_signal_even_when_requeue_fails(tmp_path, caplog, request,
                                                                                 launcher):
    import lightning as L
    import torch

    from pretrain.preemption import StopOnPreemption

    # launch/slurm/*.sbatch ask SLURM for SIGUSR1; the hydra/launcher=slurm sweeps (submitit) for USR2
    signum = request.getfixturevalue("submitit_job") if launcher == "submitit" else PREEMPTION_SIGNAL

    class SignalAt(L.Callback):  # the cluster's warning, arriving in the middle of an accumulation
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 7:
                signal.raise_signal(signum)

    caplog.set_level("WARNING", logger="bertforge.pretrain")
    with flag_on_signal() as flag:
        stopper = StopOnPreemption(flag, tmp_path / "last.ckpt", requeue=[str(tmp_path / "no-scontrol"), "requeue"])
        trainer = L.Trainer(max_steps=20, accumulate_grad_batches=2, callbacks=[SignalAt(), stopper],
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu")
        trainer.fit(Tiny())
    # batch 7 is the second of the two micro-batches of the 4th optimiser step: the stop comes right after it
    assert stopper.stopped_at == trainer.global_step == 4
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 4
    assert any("could not run" in r.getMessage() and "resubmit" in r.getMessage() for r in caplog.records)
