"""Logging every N optimiser steps: loss, accuracy, lr, grad norm, tokens/s, MFU, data wait, ETA.

The module keeps its sums on the device; this callback reads them once per interval (the only
host sync of the loop) and times the interval on the host. Between two reads the host may run
ahead of the GPU, but the read at the end of each interval waits for it, so the interval's wall
time and token count are exact. Host time spent on other work inside the loop (held-out
validation, checkpoint saves, the hub push's export) is run under `untimed`, so it counts neither as
training time nor as data wait; each interval logs how much was left out (`time/untimed_s`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from tqdm.auto import tqdm

from pretrain.flops import mfu

log = logging.getLogger("bertforge.pretrain")


class StepMetricsLogger(L.Callback):
    """Logs `train/*` and `throughput/*` to every logger of the trainer every `every_n_steps` optimiser
    steps (and at the last), and drives a progress bar.

    `flops_by_phase[k]` is the training FLOPs per token of phase k (pretrain.flops.flops_per_token).
    """

    def __init__(self, plan, flops_by_phase: list[float], every_n_steps: int, peak_tflops: float,
                 world_size: int = 1, progress_bar: bool = True):
        self.plan, self.flops_by_phase, self.every = plan, flops_by_phase, max(1, every_n_steps)
        self.peak_tflops, self.world_size, self.show_bar = peak_tflops, world_size, progress_bar
        self.bar = None
        self.window_start = self.batch_end = 0.0
        self.data_wait_s = self.untimed_s = 0.0
        self.logged_step = -1
        self.step_lr = 0.0
        self.history: list[dict] = []  # every logged row, for the stage manifest and tests

    @contextmanager
    def untimed(self, device: torch.device | None = None) -> Iterator[None]:
        """Leave the host time of the work inside the block out of the current interval and out of the data
        wait, whichever side of this callback's own hooks it runs on. On a GPU the clock starts once the
        training work already queued is done (one host sync): that work belongs to the interval."""
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            self.window_start += seconds
            self.batch_end += seconds
            self.untimed_s += seconds

    def on_train_start(self, trainer, pl_module) -> None:
        self.window_start = self.batch_end = time.perf_counter()
        # A resumed run's steps so far were logged by the run that trained them (with accumulation, the
        # first micro-batch after a resume ends with global_step still at the resumed step).
        self.logged_step = trainer.global_step
        if self.show_bar and trainer.is_global_zero:
            self.bar = tqdm(total=trainer.max_steps, desc="pretrain", unit="step", dynamic_ncols=True,
                            mininterval=1.0)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.step_lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves on after it)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Host time between the end of the last step and this batch arriving: the loader's share.
        self.data_wait_s += time.perf_counter() - self.batch_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batch_end = time.perf_counter()
        step = trainer.global_step  # optimiser steps done
        # step 0: micro-batches before the first optimiser step (accumulation) belong to step 1's window.
        if step in (0, self.logged_step) or not (step % self.every == 0 or step >= trainer.max_steps):
            return
        self.logged_step = step
        self._log(trainer, pl_module, step)
        self.batch_end = time.perf_counter()  # logging is not data wait

    def _log(self, trainer, pl_module, step: int) -> None:
        metrics = pl_module.pop_window()  # host sync: waits for the device to finish the interval
        now = time.perf_counter()
        elapsed = max(now - self.window_start, 1e-9)
        phase = next(p for p in self.plan if step - 1 < p.end_step)
        tokens_per_s = metrics.pop("tokens") * self.world_size / elapsed
        metrics |= {
            "train/lr": self.step_lr,
            "train/seq_len": phase.seq_len,
            "throughput/tokens_per_s": tokens_per_s,
            "throughput/mfu": mfu(tokens_per_s / self.world_size, self.flops_by_phase[phase.index], self.peak_tflops),
            "throughput/data_wait_share": min(1.0, self.data_wait_s / elapsed),
            "time/data_wait_s": self.data_wait_s,
            "time/untimed_s": self.untimed_s,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        self.history.append({"step": step, **metrics})
        self.window_start, self.data_wait_s, self.untimed_s = now, 0.0, 0.0
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}",
                                 mfu=f"{metrics['throughput/mfu']:.2%}", refresh=False)
            self.bar.update(step - self.bar.n)  # tqdm shows elapsed and the ETA from its rate

    def on_train_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()
        last = next((h for h in reversed(self.history) if "throughput/tokens_per_s" in h), None)
        if last and trainer.is_global_zero:
            log.info("pretrain: %d steps, last loss %.3f, %.0f tokens/s, MFU %.2f%% of %.0f TFLOP/s",
                     trainer.global_step, last["train/loss"], last["throughput/tokens_per_s"],
                     100 * last["throughput/mfu"], self.peak_tflops)
