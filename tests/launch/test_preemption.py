"""The preemption signal (SIGUSR1, what SLURM sends before a time limit) outside SLURM: a two-rank run that
gets it on one rank only stops on both at the same step boundary, and a restart repeats and skips nothing.

Before pretrain/preemption.py, Lightning's handler checkpointed inside the signal handler behind a barrier,
and a signal that reached the ranks at different moments hung the run (seen in CI under SLURM).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from bertforge.common.stage_folder import read_manifest
from bertforge.common.errors import EXIT_PREEMPTED
from tests.launch.conftest import with_upstream, GLOBAL_BATCH, REPO, TINY_RUN, bertforge_env, ledger, metrics, pretrain_folders, run_cli

STEPS = 80  # long enough that the signal (after step 3) lands mid-training on an idle machine
RUN = [o for o in TINY_RUN if not o.startswith(("training.max_steps", "checkpoint.every"))] + [
    f"training.max_steps={STEPS}", f"checkpoint.every_n_steps={STEPS}", "trainer=ddp_cpu"]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_signal_on_one_rank_stops_both_at_one_step_and_the_restart_repeats_nothing(upstream_work, tmp_path, data_dir):
    env = bertforge_env(data_dir, with_upstream(upstream_work, tmp_path))
    with open(tmp_path / "attempt0.log", "w") as log:
        first = subprocess.Popen(["bertforge", "pretrain", *RUN], cwd=REPO, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        rank1 = tmp_path / "pretrain" / ".pretrain-*.work" / "data_positions" / "rank1.tsv"
        while time.monotonic() < deadline and first.poll() is None:
            trained = list(tmp_path.glob(str(rank1.relative_to(tmp_path))))
            if trained and len(trained[0].read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert first.poll() is None, "the run ended before it could be signalled"
        # Rank 0 is the `bertforge` process; Lightning started rank 1 as its child. Only rank 1 is told.
        [rank1_pid] = children(first.pid)
        subprocess.run(["kill", "-USR1", str(rank1_pid)], check=True)
        code = first.wait(timeout=120)
    output = (tmp_path / "attempt0.log").read_text()
    assert code == EXIT_PREEMPTED, output[-4000:]
    stopped = re.findall(r"bertforge pretrain: stopped on the preemption signal at step (\d+)", output)
    assert len(stopped) == 2 and len(set(stopped)) == 1, output[-4000:]  # both ranks (they share the log), one step
    assert "start the same command again to resume there" in output  # says how to resume
    stopped_at = int(stopped[0])
    assert 0 < stopped_at < STEPS
    assert not pretrain_folders(tmp_path)  # nothing that looks finished

    second = run_cli(["bertforge", "pretrain", *RUN], env)
    assert f"last.ckpt at step {stopped_at}" in second.stdout + second.stderr
    if shutil.which("srun"):  # a local run on a machine with SLURM: no misleading "prepend srun" hint
        assert "`srun` command is available" not in second.stdout + second.stderr + output
    [folder] = pretrain_folders(tmp_path)
    assert read_manifest(folder)["counts"]["steps"] == STEPS
    for rank, rows in ledger(folder).items():
        # Attempt 0 trained steps 0..k-1, the restart (attempt 1, no SLURM here) k..STEPS-1: every step once,
        # each at its data position.
        assert [step for _, step, _, _, _ in rows] == list(range(STEPS))
        attempts = [attempt for attempt, _, _, _, _ in rows]
        assert attempts == sorted(attempts) and set(attempts) == {0, 1}
        assert [start for _, _, _, start, _ in rows] == [s * GLOBAL_BATCH + rank * GLOBAL_BATCH // 2
                                                         for s in range(STEPS)]
    assert [int(m["step"]) for m in metrics(folder)] == list(range(1, STEPS + 1))
