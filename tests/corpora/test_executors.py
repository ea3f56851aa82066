"""A step whose tasks do not all complete stops the chain on every executor, before the next step reads
their output with `TasksFailed` naming the tasks, their logs and the error they ended with (locally, bad input
is raised as it was). Rerunning the same chain runs only the tasks that had not completed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from datatrove.pipeline.base import PipelineStep

from bertforge.common.errors import TasksFailed
from corpora.config import ExecutorConfig
from corpora.executors import run_chain

REPO = Path(__file__).resolve().parents[2]


class CountRuns(PipelineStep):
    """Appends its rank to `runs.txt` in `folder`; rank 1 raises while `folder`/fixed is missing."""

    name = "count runs"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        with open(Path(self.folder) / "runs.txt", "a", encoding="utf-8") as runs:
            runs.write(f"{rank}\n")
        if rank == 1 and not (Path(self.folder) / "fixed").exists():
            raise ValueError(f"rank {rank} of {world_size} found no {self.folder}/fixed")
        return iter(())


def runs(folder: Path, step: str) -> list[int]:
    path = folder / step / "runs.txt"
    return sorted(int(line) for line in path.read_text().split()) if path.exists() else []


def chain(folder: Path) -> list:
    for step in ("first", "second"):
        (folder / step).mkdir(parents=True, exist_ok=True)
    return [("first", [CountRuns(str(folder / "first"))], 2), ("second", [CountRuns(str(folder / "second"))], 1)]


def fails_then_resumes(executor: ExecutorConfig, folder: Path, after_failure=lambda: None):
    """Run the chain (rank 1 of the first step fails), then again once fixed; the first run's error."""
    with pytest.raises(Exception) as failed:
        run_chain(executor, chain(folder), folder / "logs")
    before = runs(folder, "first")
    assert 1 in before and runs(folder, "second") == []  # the second step never started
    # Rank 0 completed, unless its worker had not started (or was stopped) when rank 1 failed: on a loaded
    # machine the local pool can end the step first. Its completion marker says which.
    completed = (folder / "logs" / "first" / "completions" / "00000").exists()
    assert 0 in before or not completed
    after_failure()
    (folder / "first" / "fixed").touch()
    run_chain(executor, chain(folder), folder / "logs")
    # rank 1 ran again; rank 0 again only if it had not completed; the second step once
    assert runs(folder, "first") == sorted(before + [1] + ([] if completed else [0]))
    assert runs(folder, "second") == [0]
    return failed


def test_local_executor_stops_at_the_failed_task_and_names_it(tmp_path):
    failed = fails_then_resumes(ExecutorConfig(), tmp_path)
    message = str(failed.value)
    assert failed.type is TasksFailed and type(failed.value.__cause__) is ValueError
    # rank 0 too where the pool was ended before its worker completed it (a loaded machine)
    assert re.search(r"corpus: step first: [12] of 2 task\(s\) did not complete \(ranks (0, )?1\)", message)
    assert f"a task ended with: ValueError: rank 1 of 2 found no {tmp_path}/first/fixed" in message
    assert str(tmp_path / "logs" / "first" / "logs") in message and "Rerun the same command" in message


def test_ray_executor_stops_at_the_failed_task_and_names_it(tmp_path, ray_shut_down_after):
    # datatrove's Ray executor alone logs the failure at debug level and returns; the chain would go on
    failed = fails_then_resumes(ExecutorConfig(name="ray"), tmp_path)
    message = str(failed.value)
    assert failed.type is TasksFailed
    assert "corpus: step first on Ray: 1 of 2 task(s) did not complete (ranks 1)" in message
    assert f"ValueError: rank 1 of 2 found no {tmp_path}/first/fixed" in message
    assert str(tmp_path / "logs" / "first" / "logs") in message and "Rerun the same command" in message


def test_slurm_executor_stops_at_the_failed_job_and_cancels_the_ones_waiting_on_it(slurm_cluster, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the jobs unpickle CountRuns from this module
    executor = ExecutorConfig(name="slurm", poll_seconds=1, time="00:05:00", max_wait_hours=0.05)
    def nothing_left_queued():  # the second step's job waited on the failed one (afterok): it was cancelled
        assert subprocess.run(["squeue", "-h", "-n", "bertforge-second", "-o", "%i %T"], capture_output=True,
                              text=True, check=True).stdout.strip() == ""

    failed = fails_then_resumes(executor, tmp_path, nothing_left_queued)
    message = str(failed.value)
    assert failed.type is TasksFailed
    assert "(step first; job output in" in message and "1 of 2 task(s) did not complete (ranks 1)" in message
    assert f"ValueError: rank 1 of 2 found no {tmp_path}/first/fixed" in message


def test_ray_missing_is_a_config_error_that_says_how_to_install_it(monkeypatch, make_cfg, tmp_path):
    import importlib.util

    from bertforge.common.errors import ConfigError
    from bertforge.stages import run_stage

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"executor=ray needs Ray: pip install ray"):
        run_stage(make_cfg("corpus", ["executor=ray"]), "corpus")
    assert not list((tmp_path / "work" / "corpus").glob("corpus-*"))  # nothing looks finished
