"""Run a chain of datatrove pipelines on this machine, a SLURM cluster or Ray, chosen by config
(`corpus.executor`, the `executor` config group): the corpus stage's steps and the shards stage's tokenising.

`run_chain` takes (name, pipeline, tasks) steps that must run one after the other and returns
when the last has finished. Locally each step is a `LocalPipelineExecutor` (watched by
`corpora.local_tasks`); on SLURM each is a `SlurmPipelineExecutor` (an sbatch array job) depending on
the previous one, and this process
waits for the last to complete (polling datatrove's completion markers) so the stage folder is
published only when the work is done. With Ray (where installed) each step is a
`RayPipelineExecutor` run. The choice never changes the output.

On every executor a step whose tasks did not all complete stops the chain before the next step reads their
output with `TasksFailed` (naming the tasks, their logs and the error they ended with), and rerunning the same
command runs only those tasks. Locally, bad input (CorpusInputError, ConfigError) is raised as it was raised:
the input is what to fix, and the stage starts over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from datatrove.utils.logging import setup_default_logger

from bertforge.common.errors import ConfigError, CorpusInputError, TasksFailed
from corpora.config import ExecutorConfig
from corpora.local_tasks import WatchedLocalExecutor, run_watched

log = logging.getLogger("bertforge")


START_METHODS = ("fork", "forkserver", "spawn")


def run_chain(executor_cfg: ExecutorConfig, steps: list[tuple[str, list, int]], logging_dir: Path,
              stage: str = "corpus") -> None:
    """Run `steps` in order with the executor `executor_cfg.name` (local, slurm or ray). A task whose
    completion marker is in `logging_dir` (from an earlier, killed attempt of the same stage) is not run
    again: every task writes its own output files from scratch, so a rerun only does what is missing."""
    check_executor(executor_cfg)
    if executor_cfg.name == "local":
        for name, pipeline, tasks in steps:
            workers = max(1, min(tasks, os.cpu_count() or 1))
            log.debug("%s: step %s, %d task(s)", stage, name, tasks)  # the stage's one line comes at its end
            with _console_in_file(logging_dir / name):
                executor = WatchedLocalExecutor(pipeline, tasks=tasks, workers=workers,
                                                logging_dir=str(logging_dir / name), skip_completed=True,
                                                start_method=executor_cfg.start_method)
                try:
                    run_watched(executor, f"{stage}: step {name}")  # a task whose process died: TasksFailed
                except (TasksFailed, CorpusInputError, ConfigError):
                    raise  # bad input is fixed in the input: the stage starts over (its folder is removed)
                except Exception as err:  # a full disk, memory: the tasks that completed are kept for the rerun
                    raise TasksFailed(_failed_tasks(executor, f"{stage}: step {name}", f"a task ended with: "
                                                    f"{type(err).__name__}: {err}; ")) from err
            _check_completed(executor, f"{stage}: step {name}")
        return
    if executor_cfg.name == "slurm":
        _run_on_slurm(executor_cfg, steps, logging_dir, stage)
        return
    _run_on_ray(executor_cfg, steps, logging_dir, stage)


def check_executor(executor_cfg: ExecutorConfig) -> None:
    """ConfigError naming the key when the chosen executor cannot run here. The executor is not hashed,
    so the stage graph calls this also when the corpus stage is reused: an error fails the same either way."""
    import importlib.util

    if executor_cfg.name not in ("local", "slurm", "ray"):
        raise ConfigError(f"corpus.executor.name must be local, slurm or ray, not {executor_cfg.name!r} "
                          "(choose with executor=local, executor=slurm or executor=ray)")
    if executor_cfg.name == "local" and executor_cfg.start_method not in START_METHODS:
        raise ConfigError(f"corpus.executor.start_method={executor_cfg.start_method!r}: choose one of "
                          f"{', '.join(START_METHODS)}")
    if executor_cfg.name == "slurm" and not _which("sbatch"):
        raise ConfigError("executor=slurm but `sbatch` is not on PATH: run on a SLURM login node, or start "
                          "a local cluster with launch/slurm/start_local_cluster.sh")
    if executor_cfg.name == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("executor=ray needs Ray: pip install ray (the project's `ray` extra)")


def _run_on_ray(cfg: ExecutorConfig, steps, logging_dir: Path, stage: str) -> None:
    """Each step on the Ray cluster that `ray.init()` finds (RAY_ADDRESS), one after the other."""
    import ray
    from datatrove.executor.ray import RayPipelineExecutor

    if not ray.is_initialized():
        # The tasks' output (datatrove's progress and, on failure, a long traceback per attempt) stays in
        # their logs; a failed task is reported by the TasksFailed below, once.
        ray.init(log_to_driver=False)
    for name, pipeline, tasks in steps:
        log.info("%s: step %s, %d task(s) on Ray", stage, name, tasks)
        with _console_in_file(logging_dir / name):  # datatrove warns already when the executor is made
            executor = RayPipelineExecutor(pipeline, tasks=tasks, logging_dir=str(logging_dir / name),
                                           skip_completed=True, cpus_per_task=cfg.cpus_per_task,
                                           mem_per_cpu_gb=cfg.mem_per_cpu_gb)
            executor.run()
        # datatrove's Ray executor resubmits a task that Ray lost, but one that raised only shows up as a
        # missing completion marker: without this check the next step would read its missing output
        _check_completed(executor, f"{stage}: step {name} on Ray")


@contextlib.contextmanager
def _console_in_file(folder: Path):
    """datatrove's console output (progress, stats tables and, on failure, a long traceback) goes to
    `folder`/console.log instead of the terminal, where the stage's own lines and errors are what a user
    needs. datatrove's loguru sink holds the stderr of when it was added: it is pointed at the file too,
    and back at the terminal after, or the parent's summary of a many-worker step reaches the terminal."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(folder / "console.log", "a", encoding="utf-8") as console, \
                contextlib.redirect_stderr(console):
            setup_default_logger()
            yield
    finally:
        setup_default_logger()


def _check_completed(executor, what: str) -> None:
    """`TasksFailed` when some of `executor`'s tasks have no completion marker: which, where their logs
    are, and the last error line of the first one's log (datatrove writes each task's traceback there)."""
    if executor.get_incomplete_ranks(skip_completed=True):
        raise TasksFailed(_failed_tasks(executor, what))


def _failed_tasks(executor, what: str, error: str | None = None) -> str:
    """What a TasksFailed says: which tasks did not complete, the error (`error`, or the first one's log's last),
    where their logs are, and that a rerun runs only those."""
    failed = executor.get_incomplete_ranks(skip_completed=True)
    logs = Path(executor.logging_dir.path) / "logs"
    if error is None:
        error = _last_error(logs / f"task_{failed[0]:05d}.log") if failed else ""
    return (f"{what}: {len(failed)} of {executor.world_size} task(s) did not complete "
            f"(ranks {', '.join(map(str, failed[:10]))}{', ...' if len(failed) > 10 else ''}); "
            f"{error}see {logs}. Rerun the same command once the cause is fixed: the tasks that completed are "
            "not run again.")


def _last_error(task_log: Path) -> str:
    """'task N ended with: <exception line>; ' from a datatrove task log, or '' where there is none."""
    if not task_log.exists():
        return ""
    lines = [line.strip() for line in task_log.read_text(encoding="utf-8", errors="replace").splitlines()]
    # a traceback ends with "<module.>ExceptionName: message"; loguru's variable notes do not match this
    ending = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt|Exit)\w*: ", line)]
    return f"{task_log.stem.replace('_', ' ')} ended with: {ending[-1]}; " if ending else ""


def _run_on_slurm(cfg: ExecutorConfig, steps, logging_dir: Path, stage: str) -> None:
    from datatrove.executor import SlurmPipelineExecutor

    # the job runs the same interpreter that runs bertforge unless a venv is named
    env_command = f"source {cfg.venv_path}" if cfg.venv_path else f"export PATH={Path(sys.executable).parent}:$PATH"
    partition = cfg.partition or _default_partition()
    previous = None
    executors = []
    for name, pipeline, tasks in steps:
        executor = SlurmPipelineExecutor(
            pipeline=pipeline, tasks=tasks, time=cfg.time, partition=partition,
            cpus_per_task=cfg.cpus_per_task, mem_per_cpu_gb=cfg.mem_per_cpu_gb, job_name=f"bertforge-{name}",
            env_command=env_command, logging_dir=str(logging_dir / name), skip_completed=True,
            depends=previous, qos="", mail_type="NONE", requeue=False)
        executors.append(executor)
        previous = executor
    executors[-1].run()  # launches the whole chain through `depends`
    _wait(executors, cfg, logging_dir, stage)


def _default_partition() -> str:
    """The cluster's default partition (marked `*` by sinfo)."""
    names = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
    for name in names:
        if name.endswith("*"):
            return name.rstrip("*")
    if names:
        return names[0]
    raise ConfigError("executor=slurm: sinfo lists no partition; set corpus.executor.partition")


def _which(tool: str) -> bool:
    return any((Path(p) / tool).exists() for p in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"])


def _wait(executors, cfg: ExecutorConfig, logging_dir: Path, stage: str) -> None:
    """Return when every step's tasks have completed. A step with tasks not completed and no job left that
    can still run raises `TasksFailed` at once, after cancelling the chain's jobs still queued: they wait on
    it (afterok: the later steps and datatrove's stats merge of each step) and could never start."""
    deadline = time.time() + cfg.max_wait_hours * 3600
    job_ids = [str(e.job_id) for e in executors if e.job_id not in (None, -1)]  # the others completed before
    log.info("%s: waiting for SLURM jobs %s", stage, ", ".join(job_ids))
    while time.time() < deadline:
        # one look at the completion markers per poll (a file per task, on a shared filesystem)
        unfinished = [e for e in executors if e.get_incomplete_ranks(skip_completed=True)]
        if not unfinished:
            return
        queued = _queued_jobs()
        for e in unfinished:
            step = Path(e.logging_dir.path)
            # a step's jobs (its array jobs, several past the cluster's MaxArraySize, and its stats merge)
            # write their output under its folder
            if any(reason != NEVER and _under(out, step) for _, reason, out in queued):
                continue
            time.sleep(2 * cfg.poll_seconds)  # completion markers may trail the job's end a little
            if e.get_incomplete_ranks(skip_completed=True):
                ours = sorted({job for job, _, out in _queued_jobs() if _under(out, logging_dir)})
                if ours:
                    log.info("%s: cancelling SLURM jobs %s (they wait on the failed step)", stage,
                             ", ".join(ours))
                    subprocess.run(["scancel", *ours], capture_output=True)
                _check_completed(e, f"{stage}: SLURM job {e.job_id} (step {step.name}; job output in "
                                    f"{step / 'slurm_logs'})")
        time.sleep(cfg.poll_seconds)
    raise RuntimeError(f"SLURM jobs {', '.join(job_ids)} did not finish within corpus.executor.max_wait_hours")


NEVER = "DependencyNeverSatisfied"  # the reason SLURM gives a job whose afterok dependency failed


def _queued_jobs() -> list[tuple[str, str, str]]:
    """(array job id, the reason it waits, its output path) of each of this user's queued jobs."""
    job, reason = 20, 40  # squeue -O pads each field to its width; the path comes last
    listed = subprocess.run(["squeue", "-h", "--me", "-O", f"ArrayJobID:{job},Reason:{reason},StdOut:4096"],
                            capture_output=True, text=True).stdout.splitlines()
    return [(line[:job].strip(), line[job:job + reason].strip(), line[job + reason:].strip())
            for line in listed]


def _under(path: str, folder: Path) -> bool:
    return path.startswith(tuple(f"{f}{os.sep}" for f in {folder.absolute(), folder.resolve()}))
