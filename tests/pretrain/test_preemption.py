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
