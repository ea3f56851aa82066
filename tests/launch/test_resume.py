"""A run killed outright (SIGKILL: out of memory, a lost node) resumes when the same command is run
again, from its newest checkpoint and that step's data position, and ends exactly where an
uninterrupted run ends: the same loss at every step and the same weights, bit for bit on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from safetensors.torch import load_file

from tests.launch.conftest import with_upstream, GLOBAL_BATCH, REPO, TINY_RUN, bertforge_env, ledger, metrics, pretrain_folders, run_cli

# Long enough that the kill (after step 17) lands mid-training even on a fast, idle machine: 40 steps took
# 1.7 s in CI, and the test looks every 50 ms.
STEPS, EVERY = 80, 10
RUN = ["bertforge", "pretrain", *[o for o in TINY_RUN if not o.startswith(("training.max_steps", "checkpoint.every"))],
       f"training.max_steps={STEPS}", f"checkpoint.every_n_steps={EVERY}", "model.dropout=0.1",
       f"trainer.micro_batch_size={GLOBAL_BATCH // 2}"]  # two micro-batches a step: accumulation resumes too


def test_a_killed_run_resumes_by_rerunning_the_same_command_exactly(upstream_work, tmp_path, data_dir):
    whole = with_upstream(upstream_work, tmp_path / "uninterrupted")
    said = run_cli(RUN, bertforge_env(data_dir, whole))
    # Quiet by default: one line per stage, none from the libraries (Lightning's device lines and tips, its
    # deprecation warnings, wandb's banner, transformers' loading and writing bars).
    lines = (said.stdout + said.stderr).splitlines()
    assert [line.split("] - ", 1)[-1].split(":", 1)[0] for line in lines] == ["corpus", "vocab", "shards", "pretrain"], lines
    [reference] = pretrain_folders(whole)

    # The killed run asks for deterministic kernels (what a GPU run needs to repeat itself; trainer is not
    # hashed): every op of the training step has one, and on CPU it changes no number.
    command = [*RUN, "trainer.deterministic=true"]
    work = with_upstream(upstream_work, tmp_path / "killed")
    env = bertforge_env(data_dir, work)
    with open(tmp_path / "attempt0.log", "w") as log:
        first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            trained = list(work.glob("pretrain/.pretrain-*.work/data_positions/rank0.tsv"))
            if trained and len(trained[0].read_text().splitlines()) >= 2 * (EVERY + 7):  # a line a micro-batch
                break
            time.sleep(0.05)
        assert first.poll() is None, "the run ended before it could be killed"
        os.kill(first.pid, signal.SIGKILL)  # no handler runs, no checkpoint is written on the way out
        first.wait(timeout=60)
    [kept] = list(work.glob("pretrain/.pretrain-*.work"))
    assert (kept / "checkpoints" / "last.ckpt").is_file() and not pretrain_folders(work)

    rerun = run_cli(command, env)  # the same command, nothing else
    said = rerun.stdout + rerun.stderr
    resumed_at = int(said.split("at step ", 1)[1].split()[0]) if "resuming from" in said else -1
    assert resumed_at >= EVERY and resumed_at % EVERY == 0, said[-3000:]
    [folder] = pretrain_folders(work)
    assert not list(work.glob("pretrain/.pretrain-*.work"))  # the working folder became the finished one

    # Every step trained once in the attempt that counts, each micro-batch at its data position.
    rows = ledger(folder)[0]
    latest = {(step, slot): (start, stop) for _, step, slot, start, stop in rows}
    half = GLOBAL_BATCH // 2
    assert latest == {(step, slot): (step * GLOBAL_BATCH + slot * half, step * GLOBAL_BATCH + (slot + 1) * half)
                      for step in range(STEPS) for slot in range(2)}
    # The resumed run is the uninterrupted run: loss, learning rate and gradient norm at every step...
    keys = ("train/loss", "train/lr", "train/grad_norm")
    resumed = [{k: row[k] for k in ("step", *keys)} for row in metrics(folder)]
    assert resumed == [{k: row[k] for k in ("step", *keys)} for row in metrics(reference)]
    assert [int(r["step"]) for r in resumed] == list(range(1, STEPS + 1))
    # ...and the exported weights, bit for bit.
    ours, theirs = load_file(str(folder / "hf" / "model.safetensors")), load_file(str(reference / "hf" / "model.safetensors"))
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)


def test_a_second_run_of_the_same_stage_is_refused_and_told_who_runs_it(upstream_work, tmp_path, data_dir):
    work = with_upstream(upstream_work, tmp_path / "w")
    env = bertforge_env(data_dir, work)
    # The first run must outlast the second's start-up; it is stopped when the test is done with it.
    endless = [*RUN, "training.max_steps=100000"]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(endless, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            # The holder writes its pid into the lock once it holds it (before it trains at all).
            while time.monotonic() < deadline and not any(p.read_text() for p in work.glob(".locks/pretrain-*.lock")):
                time.sleep(0.05)
            second = subprocess.run(endless, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2
            assert f"is being built by pid {first.pid} on" in second.stderr and "wait for that run" in second.stderr
        finally:
            first.kill()
            first.wait(timeout=60)
