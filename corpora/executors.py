"""Run a chain of datatrove pipelines on this machine, a SLURM cluster or Ray, chosen by config
(`corpus.executor`, the `executor` config group): the corpus stage's steps and the shards stage's tokenising.

`run_chain` takes (name, pipeline, tasks) steps that must run one after the other and returns
when the last has finished. Locally each step is a `LocalPipelineExecutor`; on SLURM each is a
`SlurmPipelineExecutor` (an sbatch array job) depending on the previous one, and this process
waits for the last to complete (polling datatrove's completion markers) so the stage folder is
published only when the work is done. With Ray (where installed) each step is a
`RayPipelineExecutor` run. The choice never changes the output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.utils.logging import setup_default_logger

from bertforge.common.errors import ConfigError
from corpora.config import ExecutorConfig

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
            (logging_dir / name).mkdir(parents=True, exist_ok=True)
            log.debug("%s: step %s, %d task(s)", stage, name, tasks)  # the stage's one line comes at its end
            # datatrove logs progress (and, on failure, a long traceback) to stderr; the stage's
            # own error message is what a user needs there, so its console goes to a file instead
            # (datatrove's loguru sink holds the stderr of when it was added: it is pointed at the file too,
            # and back at the terminal after, or the parent's summary of a many-worker step reaches the terminal)
            with open(logging_dir / name / "console.log", "a", encoding="utf-8") as console, \
                    contextlib.redirect_stderr(console):
                setup_default_logger()
                LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir / name),
                                      skip_completed=True, start_method=executor_cfg.start_method).run()
            setup_default_logger()
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
        raise ConfigError("executor=ray needs Ray: pip install 'ray[default]'")


def _run_on_ray(cfg: ExecutorConfig, steps, logging_dir: Path, stage: str) -> None:
    """Each step on the Ray cluster that `ray.init()` finds (RAY_ADDRESS), one after the other."""
    import ray
    from datatrove.executor.ray import RayPipelineExecutor

    if not ray.is_initialized():
        ray.init()
    for name, pipeline, tasks in steps:
        log.info("%s: step %s, %d task(s) on Ray", stage, name, tasks)
        RayPipelineExecutor(pipeline, tasks=tasks, logging_dir=str(logging_dir / name), skip_completed=True,
                            cpus_per_task=cfg.cpus_per_task, mem_per_cpu_gb=cfg.mem_per_cpu_gb).run()


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
    _wait(executors, cfg, stage)


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


def _wait(executors, cfg: ExecutorConfig, stage: str) -> None:
    deadline = time.time() + cfg.max_wait_hours * 3600
    job_ids = [str(e.job_id) for e in executors if e.job_id not in (None, -1)]
    log.info("%s: waiting for SLURM jobs %s", stage, ", ".join(job_ids))
    while time.time() < deadline:
        if all(not e.get_incomplete_ranks(skip_completed=True) for e in executors):
            return
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"],
                                capture_output=True, text=True).stdout.strip()
        if not queued and any(e.get_incomplete_ranks(skip_completed=True) for e in executors):
            time.sleep(2 * cfg.poll_seconds)  # completion markers may trail the job's end a little
            failed = [e.job_name for e in executors if e.get_incomplete_ranks(skip_completed=True)]
            if failed:
                raise RuntimeError(f"SLURM jobs {', '.join(job_ids)} ended but {', '.join(failed)} did not "
                                   f"complete; see the slurm_logs under {executors[0].logging_dir.path}/..")
        time.sleep(cfg.poll_seconds)
    raise RuntimeError(f"SLURM jobs {', '.join(job_ids)} did not finish within corpus.executor.max_wait_hours")
