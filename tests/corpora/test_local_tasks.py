"""A task whose process dies (killed by the out-of-memory killer, say) stops the local step with a clear error
at once, where datatrove's process pool alone would wait for it forever; the rerun runs only what had not
completed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

REPO = Path(__file__).resolve().parents[2]


class KilledOnce(PipelineStep):
    """Rank 1 kills its own process with SIGKILL while `folder`/fixed is missing; every rank logs its start
    and its end to `folder`/runs.txt."""

    name = "killed once"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        folder = Path(self.folder)
        with open(folder / "runs.txt", "a", encoding="utf-8") as runs:
            runs.write(f"start {rank}\n")
        if rank == 1 and not (folder / "fixed").exists():
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.2)
        with open(folder / "runs.txt", "a", encoding="utf-8") as runs:
            runs.write(f"done {rank}\n")
        return iter(())


def run_step(folder: Path) -> subprocess.CompletedProcess:
    """Three tasks on a pool of two workers, in a process of their own (a hang fails on the timeout)."""
    code = ("import os\nfrom pathlib import Path\nfrom corpora.config import ExecutorConfig\n"
            "from corpora.executors import run_chain\nfrom tests.corpora.test_local_tasks import KilledOnce\n"
            "os.cpu_count = lambda: 2\n"
            f"run_chain(ExecutorConfig(), [('step', [KilledOnce({str(folder)!r})], 3)], Path({str(folder)!r}) / 'logs')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def events(folder: Path) -> list[tuple[str, int]]:
    return [(word, int(rank)) for word, rank in (line.split() for line in (folder / "runs.txt").read_text().splitlines())]


def test_a_killed_task_process_stops_the_step_instead_of_hanging_it_and_the_rerun_finishes(tmp_path):
    started = time.monotonic()
    first = run_step(tmp_path)
    assert first.returncode == 1 and time.monotonic() - started < 60
    assert "TasksFailed: corpus: step step: task 1's process (" in first.stderr
    assert "ended before completing it: it was killed (by the out-of-memory killer" in first.stderr
    assert "Rerun the same command" in first.stderr
    before = events(tmp_path)
    assert ("start", 1) in before and ("done", 1) not in before
    done_before = {rank for word, rank in before if word == "done"}

    (tmp_path / "fixed").touch()
    assert run_step(tmp_path).returncode == 0
    rerun = events(tmp_path)[len(before):]
    assert {rank for word, rank in rerun if word == "start"} == {0, 1, 2} - done_before  # nothing done twice
    assert sorted(p.name for p in (tmp_path / "logs" / "step" / "completions").iterdir()) == ["00000", "00001", "00002"]
