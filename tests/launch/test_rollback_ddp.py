"""optim.on_divergence=rollback with two processes (gloo), started by Lightning from the command: a NaN
on one rank reaches both through the gradient all-reduce, both skip the same steps, both roll back to the
same checkpoint and train on at the lower rate, and the run ends as one run."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from bertforge.stages import run_stage
from tests.conftest import experiment
from tests.launch.conftest import with_upstream, REPO, bertforge_env, pretrain_folders, run_cli

RUN = ["experiment=demo_ga", "trainer=ddp_cpu", "training.max_steps=12", "training.batch_size=8",
       "optim.warmup_steps=2", "logger.log_every_n_steps=1", "checkpoint.every_n_steps=2", "checkpoint.keep_last=2",
       "logger.progress_bar=false", "optim.max_bad_steps=3", "logger=csv"]


def lr_and_loss(folder):
    with open(folder / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        return {int(r["step"]): (float(r["train/lr"]), float(r["train/loss"]))
                for r in csv.DictReader(handle) if r.get("train/lr")}


def test_two_ranks_roll_back_together_when_one_rank_goes_nan(upstream_work, tmp_path, data_dir):
    # The clean curve from one process accumulating two micro-batches of 4, in this process: it trains as the two
    # ranks do (tests/launch/test_ddp_cpu.py) and saves starting two more processes.
    clean_work = with_upstream(upstream_work, tmp_path / "clean")
    clean = run_stage(experiment("pretrain", data_dir, clean_work,
                                 [*[o for o in RUN if o != "trainer=ddp_cpu"], "trainer.micro_batch_size=4"]), "pretrain")

    work = with_upstream(upstream_work, tmp_path / "nan")
    env = bertforge_env(data_dir, work) | {"BERTFORGE_TEST_NAN_CALLS": "7,8,9"}  # rank 1, steps 7-9
    said = run_cli([sys.executable, str(REPO / "tests" / "launch" / "nan_on_rank1.py"), "pretrain", *RUN,
                    "optim.on_divergence=rollback"], env, timeout_s=400)
    assert said.stderr.count("rolling back to") + said.stdout.count("rolling back to") >= 1
    [folder] = pretrain_folders(work)
    clean_curve, rolled = lr_and_loss(clean), lr_and_loss(folder)
    assert sorted(rolled) == list(range(1, 13))  # each step once in the finished log
    # Before the NaN: the clean run's rate, and its loss up to float32 summation order (5e-7 measured).
    assert all(rolled[step] == pytest.approx(clean_curve[step], abs=1e-5) for step in range(1, 7))
    assert all(rolled[step][0] == pytest.approx(clean_curve[step][0] / 2, rel=1e-6) for step in range(7, 13))
    assert all(rolled[step][1] == rolled[step][1] for step in range(7, 13))  # finite: NaN != NaN
    assert json.loads((folder / "manifest.json").read_text())["rollbacks"] == [
        {"at_step": 9, "to_step": 6, "lr_scale": 0.5}]
