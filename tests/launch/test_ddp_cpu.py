"""Two CPU processes over gloo, started by Lightning as `bertforge pretrain trainer=ddp_cpu` would on two
GPUs: the same global batch gives the same training as one process that accumulates."""

from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file

from bertforge.common.stage_folder import read_manifest
from bertforge.stages import run_stage
from tests.conftest import experiment
from tests.launch.conftest import with_upstream, GLOBAL_BATCH, STEPS, TINY_RUN, bertforge_env, ledger, metrics, pretrain_folders, run_cli


@pytest.fixture(scope="module")
def one_and_two_ranks(upstream_work, tmp_path_factory, data_dir):
    work = with_upstream(upstream_work, tmp_path_factory.mktemp("ddp"))
    # One process (here, in the test process), micro-batches of 4 accumulated twice; then two processes
    # with 4 rows each, started as a user would: Lightning launches rank 1 from the `bertforge` command.
    one = run_stage(experiment("pretrain", data_dir, work, [*TINY_RUN, "trainer.micro_batch_size=4"]), "pretrain")
    # The hardware is not part of the stage hash (the same experiment on two ranks is the same model), so the
    # two-rank run gets its own work folder or it would simply reuse the one-rank result.
    # `evaluate`, not `pretrain`: rank 1 runs the same command and must stop after pretrain, leaving the
    # single-process evaluate to rank 0 (were it to build it too, it would find it busy and end the launch).
    work_two = with_upstream(upstream_work, tmp_path_factory.mktemp("ddp_two"))
    run_cli(["bertforge", "evaluate", *TINY_RUN, "trainer=ddp_cpu"], bertforge_env(data_dir, work_two))
    [two] = pretrain_folders(work_two)
    assert read_manifest(next((work_two / "evaluate").glob("evaluate-*")))["counts"]["trained"]["accuracy"] >= 0
    assert two.name == one.name  # same stage hash on one and on two ranks
    return one, two


def test_two_ranks_train_like_one_rank_on_the_same_global_batch(one_and_two_ranks):
    one, two = (metrics(folder) for folder in one_and_two_ranks)
    assert [m["step"] for m in one] == [m["step"] for m in two] == list(range(1, STEPS + 1))
    assert [m["train/lr"] for m in one] == [m["train/lr"] for m in two]  # the schedule ignores the world size
    for a, b in zip(one, two):
        # Measured here: equal to 5e-7 (float32 summation order); a different mask or batch moves it by ~0.05.
        assert b["train/loss"] == pytest.approx(a["train/loss"], abs=1e-5)
        assert b["train/grad_norm"] == pytest.approx(a["train/grad_norm"], rel=1e-5)
    assert one[-1]["train/loss"] < one[0]["train/loss"]  # it did learn
    weights = [load_file(folder / "hf" / "model.safetensors") for folder in one_and_two_ranks]
    worst = max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0])
    assert worst < 1e-5, f"final weights differ by up to {worst}"


def test_each_rank_read_its_own_half_of_every_global_batch(one_and_two_ranks):
    _, two = one_and_two_ranks
    ranks = ledger(two)
    assert sorted(ranks) == [0, 1]
    seen = [p for rows in ranks.values() for (_, _, _, start, stop) in rows for p in range(start, stop)]
    assert sorted(seen) == list(range(STEPS * GLOBAL_BATCH))  # disjoint, nothing skipped
    for rank, rows in ranks.items():
        assert [(step, slot) for _, step, slot, _, _ in rows] == [(s, rank) for s in range(STEPS)]
    manifest = read_manifest(two)
    assert manifest["counts"]["steps"] == STEPS and manifest["hardware"]["strategy"] == "ddp"
    assert torch.load(two / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == STEPS
