"""A run outside SLURM (local or torchrun) that is interrupted resumes from its last periodic checkpoint
when restarted with the same run id, at that step's data position."""

from __future__ import annotations

import signal
import subprocess
import time

from bertforge.common.stage_folder import read_manifest
from bertforge.experiment import load_config
from bertforge.stages import run_stage
from tests.conftest import compose_raw
from tests.launch.conftest import GLOBAL_BATCH, REPO, TINY_RUN, bertforge_env, ledger, metrics, pretrain_folders

# Long enough that the interrupt lands mid-training even on a fast, idle machine (40 steps took 1.7 s in CI).
STEPS, EVERY = 300, 10
RUN = [o for o in TINY_RUN if not o.startswith(("training.max_steps", "checkpoint.every"))] + [
    f"training.max_steps={STEPS}", f"checkpoint.every_n_steps={EVERY}"]


def test_interrupted_run_resumes_from_last_checkpoint(upstream_work, tmp_path, data_dir, monkeypatch, caplog):
    import shutil

    for stage in ("corpus", "vocab", "shards"):
        shutil.copytree(upstream_work / stage, tmp_path / stage)
    env = bertforge_env(data_dir, tmp_path) | {"BERTFORGE_RUN_ID": "resume-test"}
    with open(tmp_path / "attempt0.log", "w") as log:
        # SIGINT restored in the child: a test run started in the background (nohup, CI) inherits it ignored.
        first = subprocess.Popen(["bertforge", "pretrain", *RUN], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            trained = list(tmp_path.glob("pretrain/.pretrain-*.tmp-resume-test/data_positions/rank0.tsv"))
            if trained and len(trained[0].read_text().splitlines()) >= EVERY + 10:
                break
            time.sleep(0.1)
        assert first.poll() is None, "the run ended before it could be interrupted"
        first.send_signal(signal.SIGINT)  # Ctrl+C, or a cluster killing the job
        assert first.wait(timeout=120) != 0
    [kept] = list(tmp_path.glob("pretrain/.pretrain-*.tmp-resume-test"))
    assert (kept / "checkpoints" / "last.ckpt").is_file() and not pretrain_folders(tmp_path)

    monkeypatch.setenv("BERTFORGE_RUN_ID", "resume-test")  # the restart: same run id, here in-process
    caplog.set_level("INFO", logger="bertforge.pretrain")
    folder = run_stage(load_config(compose_raw("pretrain", [f"paths.data_dir={data_dir}",
                                                               f"paths.work_dir={tmp_path}", *RUN])), "pretrain")
    assert read_manifest(folder)["counts"]["steps"] == STEPS
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from")]
    assert len(resumed) == 1 and "last.ckpt" in resumed[0]
    resumed_at = int(resumed[0].rsplit(" ", 1)[1])
    assert resumed_at % EVERY == 0 and resumed_at >= EVERY

    rows = ledger(folder)[0]  # one process: attempts appended to one file
    # The resumed attempt's first row is the last one at the resume step. (When the interrupt lands right
    # after a checkpoint, no step is repeated, so "where the step goes back" would find nothing.)
    restart = max(i for i, row in enumerate(rows) if row[1] == resumed_at)
    assert rows[restart][3] == resumed_at * GLOBAL_BATCH and rows[restart - 1][1] >= resumed_at - 1
    latest = {step: (start, stop) for _, step, _, start, stop in rows}  # the attempt that counted
    assert sorted(latest) == list(range(STEPS))
    assert sorted(p for start, stop in latest.values() for p in range(start, stop)) == list(range(STEPS * GLOBAL_BATCH))
    # The loss curve keeps the first attempt's steps (Lightning's CSV logger alone would delete them).
    assert [int(m["step"]) for m in metrics(folder)] == list(range(1, STEPS + 1))
