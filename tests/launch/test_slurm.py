"""The project's own SLURM script on a real one-node SLURM cluster (Debian's slurmctld/slurmd/munge).

The cluster is one that is already running (`.ci/run` starts it with launch/slurm/start_local_cluster.sh
before pytest; see the `slurm_cluster` fixture in tests/conftest.py). Without one these tests are skipped
with a loud warning; the tests themselves never install or start anything.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import torch

from bertforge.common.stage_folder import read_manifest
from tests.launch.conftest import (with_upstream, GLOBAL_BATCH, REPO, STEPS, TINY_RUN, bertforge_env, ledger, metrics,
                                   pretrain_folders)

JOB_SCRIPT = REPO / "launch" / "slurm" / "one_node.sbatch"
MULTI_NODE_SCRIPT = REPO / "launch" / "slurm" / "multi_node.sbatch"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def job_fields(job_id: str) -> dict[str, str]:
    line = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True).stdout
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def wait_for(job_id: str, timeout_s: float, until=lambda fields: fields["JobState"] in FINISHED) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        fields = job_fields(job_id)
        if until(fields):
            return fields
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id])
            pytest.fail(f"SLURM job {job_id} still {fields['JobState']} after {timeout_s:.0f} s")
        time.sleep(1)


def submit(work: Path, upstream_work: Path, data_dir: Path, overrides: list[str], script: Path = JOB_SCRIPT,
           trainer: str = "ddp_cpu") -> tuple[str, Path]:
    """sbatch a launch/slurm script for two CPU tasks; returns (job id, its log file)."""
    with_upstream(upstream_work, work)
    env = bertforge_env(data_dir, work) | {"TRAINER": trainer}
    log = work / "slurm-%j.out"
    # The scripts ask for 8 GPUs (per node); a CPU-only run on this one-node cluster overrides the request on
    # the command line, as a user would.
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--job-name=bertforge-test", "--nodes=1", "--ntasks-per-node=2",
         "--gpus-per-node=0", "--cpus-per-task=1", "--time=10", f"--output={log}", str(script), "demo_ga",
         *[o for o in overrides if o != "experiment=demo_ga"]],
        cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    return job_id, Path(str(log).replace("%j", job_id))


def check_ranks_read_disjoint_halves(stage: Path, steps: int) -> dict:
    ranks = ledger(stage)
    assert sorted(ranks) == [0, 1]
    final = {}  # (step, slot) -> positions, from the last attempt that trained that micro-batch
    for rank, rows in ranks.items():
        for attempt, step, slot, start, stop in rows:
            assert slot == rank  # accumulation 1: rank r holds slot r of every global batch
            final[(step, slot)] = (attempt, start, stop)
    assert sorted(final) == [(s, r) for s in range(steps) for r in (0, 1)]
    seen = sorted(p for _, start, stop in final.values() for p in range(start, stop))
    assert seen == list(range(steps * GLOBAL_BATCH))  # both ranks together: every position once
    return final


def test_sbatch_two_task_run_trains_disjoint_halves_and_writes_one_checkpoint(
        slurm_cluster, upstream_work, tmp_path, data_dir):
    job_id, log = submit(tmp_path, upstream_work, data_dir, TINY_RUN)
    fields = wait_for(job_id, timeout_s=240)
    output = log.read_text() if log.exists() else "(no log)"
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), output[-4000:]
    assert "2 tasks (2 per node)" in output and "0: " in output and "1: " in output  # srun --label
    [stage] = pretrain_folders(tmp_path)
    manifest = read_manifest(stage)
    assert manifest["counts"]["steps"] == STEPS
    assert (manifest["hardware"]["devices"], manifest["hardware"]["cluster"]) == (2, "slurm")
    check_ranks_read_disjoint_halves(stage, STEPS)
    checkpoints = sorted(p.name for p in (stage / "checkpoints").glob("*.ckpt"))
    assert checkpoints == [f"step{STEPS}.ckpt", "last.ckpt"] or checkpoints == ["last.ckpt", f"step{STEPS}.ckpt"]
    assert torch.load(stage / "checkpoints" / f"step{STEPS}.ckpt", weights_only=False)["global_step"] == STEPS
    assert [m["step"] for m in metrics(stage)] == list(range(1, STEPS + 1))


def test_multi_node_script_runs_for_real_on_the_one_node_there_is(
        slurm_cluster, upstream_work, tmp_path, data_dir):
    # The script as a user would submit it for N nodes, here with --nodes=1 (a one-node cluster) and the
    # multinode trainer config on CPUs: its srun line, SLURM variables and launch plan all run for real.
    job_id, log = submit(tmp_path, upstream_work, data_dir, [*TINY_RUN, "trainer.accelerator=cpu"],
                         script=MULTI_NODE_SCRIPT, trainer="multinode")
    fields = wait_for(job_id, timeout_s=240)
    output = log.read_text() if log.exists() else "(no log)"
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), output[-4000:]
    assert "2 tasks on 1 nodes" in output
    [stage] = pretrain_folders(tmp_path)
    layout = read_manifest(stage)["hardware"]
    assert (layout["devices"], layout["num_nodes"], layout["cluster"], layout["strategy"]) == \
        (2, 1, "slurm", "ddp")
    check_ranks_read_disjoint_halves(stage, STEPS)


LONG_STEPS = 60


def test_preempted_job_requeues_and_resumes_at_its_step_and_data_position(
        slurm_cluster, upstream_work, tmp_path, data_dir):
    overrides = [o for o in TINY_RUN if not o.startswith(("training.max_steps", "checkpoint.every"))]
    overrides += [f"training.max_steps={LONG_STEPS}", f"checkpoint.every_n_steps={LONG_STEPS}"]
    job_id, log = submit(tmp_path, upstream_work, data_dir, overrides)

    def training(fields) -> bool:
        assert fields["JobState"] not in FINISHED, "the job ended before it could be preempted"
        # A rank has trained a micro-batch, so both have passed process-group start-up and listen for the
        # signal; the other rank may be anywhere in its step when it arrives.
        return any(p.read_text() for p in tmp_path.glob("pretrain/.pretrain-*.work/data_positions/rank[01].tsv"))

    wait_for(job_id, timeout_s=180, until=training)
    # What SLURM does before a time limit or a preemption (--signal=USR1@90): signal every task of the job.
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
    fields = wait_for(job_id, timeout_s=300)
    output = log.read_text() if log.exists() else "(no log)"
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), output[-4000:]
    assert fields["Restarts"] == "1", output[-4000:]
    assert "attempt 0" in output and "attempt 1" in output
    # Logged by each rank before the checkpoint is saved (after `scontrol requeue` SLURM kills the tasks,
    # so what they would print later may never come).
    stopped = re.findall(r"preemption signal: saving \S+last\.ckpt at step (\d+)", output)
    resumed = re.findall(r"resuming from \S+last\.ckpt at step (\d+)", output)
    assert len(stopped) == 2 and len(resumed) == 2, output[-4000:]  # each line once per rank
    assert "requeueing: `scontrol requeue" in output
    assert set(stopped) == set(resumed) and len(set(stopped)) == 1
    resumed_at = int(stopped[0])
    assert 0 < resumed_at < LONG_STEPS

    [stage] = pretrain_folders(tmp_path)
    assert read_manifest(stage)["counts"]["steps"] == LONG_STEPS
    check_ranks_read_disjoint_halves(stage, LONG_STEPS)
    # The stop came at a step boundary: the first attempt trained steps 0..k-1 and the second k.., each once,
    # starting at step k's data position.
    for rank, rows in ledger(stage).items():
        assert [(attempt, step) for attempt, step, _, _, _ in rows] == (
            [(0, s) for s in range(resumed_at)] + [(1, s) for s in range(resumed_at, LONG_STEPS)])
        assert rows[resumed_at][3] == resumed_at * GLOBAL_BATCH + rank * (GLOBAL_BATCH // 2)
    # One loss curve over both attempts: every step once.
    assert [int(m["step"]) for m in metrics(stage)] == list(range(1, LONG_STEPS + 1))
