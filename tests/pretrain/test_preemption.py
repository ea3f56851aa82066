"""The preemption signal only raises a flag, and only while a resumable run is listening for it.
(The two-process and SLURM runs that stop on it are in tests/launch/.)"""

from __future__ import annotations

import signal
import threading

from pretrain.preemption import PREEMPTION_SIGNAL, flag_on_signal


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


def test_stop_saves_at_the_step_boundary_after_the_signal_even_when_requeue_fails(tmp_path, caplog):
    import lightning as L
    import torch

    from pretrain.preemption import StopOnPreemption

    class SignalAt(L.Callback):  # the cluster's warning, arriving in the middle of an accumulation
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 7:
                signal.raise_signal(PREEMPTION_SIGNAL)

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
