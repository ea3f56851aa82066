"""The cluster's warning that a run is about to end, as a flag: the signal handler only raises it.

SLURM warns a job before its time limit or a preemption with SIGUSR1 (`--signal=USR1@90` in
launch/slurm/*.sbatch); a job of a `hydra/launcher=slurm` sweep is warned with the signal submitit asked
for (SUBMITIT_PREEMPT_SIGNAL, by default USR2). The `pretrain` and `run` commands set the flag up from
their start (`bertforge/cli.py`), so a signal that comes while the run still plans or waits for upstream
stages is kept too; `pretrain.preemption.StopOnPreemption` reads it at each step boundary. Without torch or
Lightning: the command sets it up before anything else is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator, Mapping, Sequence

log = logging.getLogger("bertforge.pretrain")

PREEMPTION_SIGNAL = signal.SIGUSR1
SUBMITIT_SIGNAL_VARIABLE = "SUBMITIT_PREEMPT_SIGNAL"  # read by submitit when it submits and in the job


def preemption_signals(env: Mapping[str, str] = os.environ) -> tuple[signal.Signals, ...]:
    """The signals that warn this process of its end: SIGUSR1, and in a job started by submitit (the
    `hydra/launcher=slurm` sweeps, which set SUBMITIT_EXECUTOR) the one submitit asked SLURM for."""
    if not env.get("SUBMITIT_EXECUTOR"):
        return (PREEMPTION_SIGNAL,)
    submitit_signal = signal.Signals[f"SIG{env.get(SUBMITIT_SIGNAL_VARIABLE, 'USR2')}"]  # submitit's default
    return tuple(dict.fromkeys((PREEMPTION_SIGNAL, submitit_signal)))


class SignalFlag:
    """Set by a signal handler; read at step boundaries. The handler does nothing else."""

    def __init__(self) -> None:
        self.received = False

    def _handle(self, signum, frame) -> None:
        self.received = True


def _listening_flag(signums: Sequence[int]) -> SignalFlag | None:
    """The flag an enclosing `flag_on_signal` installed for any of `signums`, if one did."""
    for signum in signums:
        owner = getattr(signal.getsignal(signum), "__self__", None)
        if isinstance(owner, SignalFlag):
            return owner
    return None


@contextlib.contextmanager
def flag_on_signal(enabled: bool = True, signums: Sequence[int] | None = None) -> Iterator[SignalFlag | None]:
    """While inside, the preemption signals (`signums`, by default `preemption_signals()`) only set the
    returned flag (instead of their default, or submitit's handler: ending the process); on leaving, the
    handlers from before come back.

    Enter it as early as possible: a signal that arrives before would end the process. Nested inside
    another, it returns the outer one's flag, so a signal that came before the inner one started is kept.
    Disabled (a run that cannot resume, so stopping it cleanly would save nothing useful), it yields None
    and leaves the signals alone.
    """
    if not enabled:
        yield None
        return
    if threading.current_thread() is not threading.main_thread():  # Python lets only the main thread set handlers
        log.warning("not on the main thread: the preemption signal keeps its default action (this run stops "
                    "without a checkpoint on it; the periodic checkpoints still resume it)")
        yield None
        return
    signums = preemption_signals() if signums is None else signums
    flag = _listening_flag(signums) or SignalFlag()
    previous = {signum: signal.signal(signum, flag._handle) for signum in signums}
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
