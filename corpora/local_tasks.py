"""datatrove's local executor, stopped when a task's process dies.

`LocalPipelineExecutor` runs the tasks in a process pool. When a worker process is killed mid-task (the
out-of-memory killer, a crash in a native library), the pool starts a new worker but never hears of the
task again, and `run()` waits for it forever: the stage hangs with no message. Here every task writes
its process id when it starts, and a thread of the stage's process checks those processes every second;
when one has gone without completing its task, the thread interrupts the wait (a signal to the main
thread), the pool is terminated, and the stage stops with `TasksFailed` naming the task. Rerunning the
command runs only the tasks that had not completed.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor

from bertforge.common.errors import TasksFailed


class WatchedLocalExecutor(LocalPipelineExecutor):
    """A `LocalPipelineExecutor` whose tasks write their process id to `<logging_dir>/pids/<rank>` as
    they start."""

    def _run_for_rank(self, rank: int, *args, **kwargs):
        if pid_folder(self).is_dir():  # run_watched made it: someone watches
            part = pid_folder(self) / f".{rank:05d}.{os.getpid()}"
            part.write_text(str(os.getpid()))
            os.replace(part, pid_folder(self) / f"{rank:05d}")  # whole, never half-written, to the watcher
        return super()._run_for_rank(rank, *args, **kwargs)


def pid_folder(executor: LocalPipelineExecutor) -> Path:
    return Path(executor.logging_dir.path) / "pids"


class _TaskProcessDied(Exception):
    """Raised in the main thread by the watcher's signal: the pool's wait is over."""


def run_watched(executor: WatchedLocalExecutor, what: str, poll_seconds: float = 1.0) -> None:
    """`executor.run()`, stopped with `TasksFailed` when a task's process dies before completing it.
    Without a pool (one worker: a dying task takes this process with it) or outside the main thread
    (no signal can reach the wait there) it is a plain `run()`."""
    if executor.workers == 1 or threading.current_thread() is not threading.main_thread():
        executor.run()
        return
    shutil.rmtree(pid_folder(executor), ignore_errors=True)  # the ids of an earlier attempt's processes
    pid_folder(executor).mkdir(parents=True)
    dead: list[tuple[int, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(poll_seconds):
            for pid_file in sorted(pid_folder(executor).glob("[0-9]*")):
                rank, pid = int(pid_file.name), int(pid_file.read_text())
                if not _alive(pid) and not executor.is_rank_completed(rank):
                    dead.append((rank, pid))
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR2)
                    return

    def stop_waiting(signum, frame):
        raise _TaskProcessDied

    previous = signal.signal(signal.SIGUSR2, stop_waiting)
    watcher = threading.Thread(target=watch, name="bertforge-task-watcher", daemon=True)
    watcher.start()
    try:
        executor.run()  # on _TaskProcessDied datatrove's `with Pool` terminates the other workers
    except _TaskProcessDied:
        rank, pid = dead[0]
        logs = Path(executor.logging_dir.path) / "logs"
        raise TasksFailed(
            f"{what}: task {rank}'s process ({pid}) ended before completing it: it was killed (by the "
            f"out-of-memory killer, if memory ran short) or crashed; see {logs} and the system log (dmesg). "
            "Rerun the same command: the tasks that completed are not run again.") from None
    finally:
        stop.set()
        watcher.join()
        signal.signal(signal.SIGUSR2, previous)
        shutil.rmtree(pid_folder(executor), ignore_errors=True)  # not part of the stage's output


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True
