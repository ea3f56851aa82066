"""Batch layout, per-rank data slices, launch validation: the parts of multi-device training that need no
second process. The runs with two processes are in tests/launch/."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bertforge.common import stage_folder
from bertforge.common.errors import ConfigError, StageBusy
from bertforge.common.stage_folder import StageOutput, is_complete
from pretrain.config import TrainerConfig
from pretrain.data import PackedRows
from pretrain.distributed import (LaunchPlan, batch_layout, plan_launch, trainer_arguments,
                                  transformer_layer_classes, wait_for_stage)
from pretrain.rank_sampler import RankSliceSampler, check_step_boundary, micro_batch_seed

GLOBAL_BATCH = 24


@pytest.mark.parametrize("world,micro,accumulation", [(1, 0, 1), (1, 6, 4), (2, 0, 1), (2, 4, 3), (3, 8, 1),
                                                      (4, 2, 3), (8, 3, 1), (24, 1, 1)])
def test_global_batch_stays_whatever_the_world_size(world, micro, accumulation):
    layout = batch_layout(GLOBAL_BATCH, micro, world)
    assert layout.accumulation == accumulation
    assert layout.world_size * layout.micro_batch_size * layout.accumulation == GLOBAL_BATCH


@pytest.mark.parametrize("world,micro", [(5, 0), (2, 5), (4, 4), (48, 0)])
def test_indivisible_global_batch_is_a_clear_error(world, micro):
    with pytest.raises(ConfigError, match=r"training.batch_size=24 .*world size .*trainer.micro_batch_size"):
        batch_layout(GLOBAL_BATCH, micro, world)


def rank_streams(num_rows: int, world: int, micro: int, steps: int, seed: int = 7, start: int = 0):
    """Per rank: the (step, slot, row ids) of every micro-batch it would read, through the real PackedRows."""
    layout = batch_layout(GLOBAL_BATCH, micro, world)
    rows = PackedRows(np.arange(num_rows, dtype=np.uint16).reshape(num_rows, 1), seed=seed)  # row i holds i
    out = []
    for rank in range(world):
        sampler = RankSliceSampler(num_rows, layout, rank, seed, stop_step=steps, start_step=start)
        micro_batches = []
        for positions in sampler:
            step, slot, first = sampler.pending.popleft()
            assert positions == list(range(first, first + layout.micro_batch_size))
            micro_batches.append((step, slot, [int(rows[p][0]) for p in positions]))
        out.append(micro_batches)
    return out


def global_order(streams) -> list[int]:
    """Every rank's rows put back in their place in the global batches: (step, slot) order."""
    merged = sorted((step, slot, indices) for rank in streams for step, slot, indices in rank)
    return [i for _, _, indices in merged for i in indices]


@pytest.mark.parametrize("world,micro", [(1, 0), (1, 4), (2, 0), (2, 3), (3, 2), (4, 6), (6, 1), (12, 2)])
def test_ranks_read_disjoint_slices_of_one_order_covering_each_epoch(world, micro):
    num_rows, steps = 101, 10  # 240 positions: two full epochs of 101 rows and 38 rows of a third
    streams = rank_streams(num_rows, world, micro, steps)
    order = global_order(streams)
    assert len(order) == steps * GLOBAL_BATCH
    for epoch in range(2):  # within an epoch every row exactly once, on any world size
        assert sorted(order[epoch * num_rows:(epoch + 1) * num_rows]) == list(range(num_rows))
    assert len(set(order[2 * num_rows:])) == len(order) - 2 * num_rows  # the partial third epoch: no repeats
    assert order[:num_rows] == PackedRows(np.zeros((num_rows, 1)), seed=7).order.tolist()  # the seeded order
    assert order[num_rows:2 * num_rows] != order[:num_rows]  # later epochs are reshuffled
    # The same global order as one device reading everything: world size changes only who reads what.
    assert order == global_order(rank_streams(num_rows, 1, 0, steps))
    per_step = {}
    for micro_batches in streams:
        for step, _, indices in micro_batches:
            per_step.setdefault(step, []).append(set(indices))
    for step, slices in per_step.items():
        if (step * GLOBAL_BATCH) // num_rows == ((step + 1) * GLOBAL_BATCH - 1) // num_rows:  # inside one epoch
            union = set().union(*slices)
            assert sum(len(s) for s in slices) == len(union) == GLOBAL_BATCH  # ranks' slices are disjoint


def test_resume_at_a_step_reads_exactly_the_rest():
    full = rank_streams(50, 2, 4, steps=9)
    resumed = rank_streams(50, 2, 4, steps=9, start=5)
    for rank in range(2):
        assert resumed[rank] == [mb for mb in full[rank] if mb[0] >= 5]


def test_sampler_length_is_the_whole_run_even_when_resumed():
    layout = batch_layout(GLOBAL_BATCH, 4, 2)
    sampler = RankSliceSampler(50, layout, 1, 0, stop_step=9, start_step=5)
    assert len(sampler) == 9 * 3 and len(list(sampler)) == 4 * 3


def test_phases_of_one_length_read_on_where_the_last_one_stopped():
    """A batch-size ramp at one length: each phase reads new stream positions, none again; a resumed run
    inside the second phase reads its remaining positions."""
    from pretrain.data import PhasedData
    from pretrain.phases import Phase

    plan = [Phase(0, 16, 0, 3, 4, 2, 2, 1.0, 0), Phase(1, 16, 3, 6, 8, 4, 2, 1.0, 0),
            Phase(2, 32, 6, 8, 8, 8, 1, 1.0, 0)]

    class Rows:  # what the loader reads of PackedRows: its stream's length and seed
        seed = 0

        def __len__(self):
            return 1000

    data = PhasedData(plan, {16: Rows(), 32: Rows()})

    def positions(phase, start_step=0):
        data.start_step = start_step
        return [i for batch in data.loader(phase).batch_sampler for i in batch]

    first, second, other_length = (positions(phase) for phase in plan)
    assert first == list(range(12)) and second == list(range(12, 36)) and other_length == list(range(16))
    assert positions(plan[1], start_step=5) == list(range(28, 36))


def test_micro_batch_seed_depends_on_place_not_rank_count():
    seeds = {micro_batch_seed(1, step, slot) for step in range(50) for slot in range(8)}
    assert len(seeds) == 400 and all(0 <= s < 2 ** 63 for s in seeds)
    assert micro_batch_seed(1, 3, 2) == micro_batch_seed(1, 3, 2) != micro_batch_seed(2, 3, 2)


def cpu_trainer(**overrides) -> TrainerConfig:
    return replace(TrainerConfig(accelerator="cpu", devices=1), **overrides)


SLURM_ENV = {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "1",
             "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NAME": "bf"}


def test_slurm_plan_reads_rank_and_world_size():
    plan = plan_launch(cpu_trainer(devices=2, strategy="ddp", cluster="slurm"), SLURM_ENV)
    assert (plan.cluster, plan.rank, plan.world_size) == ("slurm", 1, 2)
    assert plan_launch(cpu_trainer(devices=2, strategy="ddp"), SLURM_ENV).cluster == "slurm"  # auto-detected


def test_a_slurm_task_bound_to_its_own_core_is_not_a_machine_with_one_core(monkeypatch):
    """srun --cpus-per-task=1 with CPU binding: each of the 2 tasks sees 1 core; SLURM's task count rules."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert plan_launch(cpu_trainer(devices=2, strategy="ddp", cluster="slurm"), SLURM_ENV).world_size == 2
    with pytest.raises(ConfigError, match="this machine has 1 CPU cores visible"):  # outside a launcher it is
        plan_launch(cpu_trainer(devices=2, strategy="ddp", cluster="local"), {})


@pytest.mark.parametrize("missing", ["SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_ID"])
def test_missing_slurm_variables_are_named(missing):
    env = {k: v for k, v in SLURM_ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=rf"trainer.cluster=slurm but {missing} is not set.*sbatch launch/slurm"):
        plan_launch(cpu_trainer(devices=2, strategy="ddp", cluster="slurm"), env)


def test_slurm_task_count_must_match_devices_and_nodes():
    with pytest.raises(ConfigError, match=r"SLURM started 2 tasks on 1 node\(s\) .*trainer.devices=1"):
        plan_launch(cpu_trainer(devices=1, strategy="ddp", cluster="slurm"), SLURM_ENV)


def test_torchrun_world_size_must_match():
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "4", "MASTER_ADDR": "h", "MASTER_PORT": "29500",
           "TORCHELASTIC_RUN_ID": "none"}
    with pytest.raises(ConfigError, match=r"WORLD_SIZE=4 .*trainer.devices=2"):
        plan_launch(cpu_trainer(devices=2, strategy="ddp"), env)
    plan = plan_launch(cpu_trainer(devices=2, strategy="ddp"), {**env, "WORLD_SIZE": "2", "RANK": "1"})
    assert (plan.cluster, plan.rank) == ("torchrun", 1)


def test_more_devices_than_exist_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"trainer.devices=4096 but this machine has \d+ CPU cores"):
        plan_launch(cpu_trainer(devices=4096, strategy="ddp"), {})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"trainer.accelerator=gpu but no GPU is visible .*trainer=ddp_cpu"):
            plan_launch(cpu_trainer(accelerator="gpu", devices=-1, strategy="fsdp"), {})


def test_bad_strategy_combinations_are_named():
    with pytest.raises(ConfigError, match="trainer.strategy=fsdp needs GPUs"):
        plan_launch(cpu_trainer(strategy="fsdp"), {})
    with pytest.raises(ConfigError, match="need trainer.strategy=ddp or fsdp"):
        plan_launch(cpu_trainer(devices=2), {})
    with pytest.raises(ConfigError, match="several nodes need a cluster launcher"):
        plan_launch(cpu_trainer(num_nodes=2, strategy="ddp"), {})
    with pytest.raises(ConfigError, match="trainer.cluster='pbs'"):
        plan_launch(cpu_trainer(cluster="pbs"), {})


def test_local_ranks_take_their_rank_from_lightning():
    plan = plan_launch(cpu_trainer(devices=2, strategy="ddp"), {})
    assert plan.rank == 0 and plan.is_global_zero
    child = plan_launch(cpu_trainer(devices=2, strategy="ddp"), {"LOCAL_RANK": "1"})
    assert child.rank == 1 and not child.is_global_zero


def tiny_bert():
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=32))


def test_fsdp_config_builds_a_sharded_strategy_wrapping_each_block():
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import ShardingStrategy
    from transformers.models.bert.modeling_bert import BertLayer

    model = tiny_bert()
    assert transformer_layer_classes(model) == {BertLayer}
    plan = LaunchPlan("slurm", "gpu", 8, 2, 0)
    cfg = TrainerConfig(strategy="fsdp", fsdp_sharding="HYBRID_SHARD", devices=8, num_nodes=2)
    args = trainer_arguments(cfg, plan, model)
    strategy = args["strategy"]
    assert isinstance(strategy, FSDPStrategy) and strategy.sharding_strategy == ShardingStrategy.HYBRID_SHARD
    assert strategy._state_dict_type == "full"
    assert (args["devices"], args["num_nodes"]) == (8, 2)
    assert args["use_distributed_sampler"] is False
    environment = args["plugins"][0]
    assert not environment.auto_requeue  # Lightning's in-handler requeue is off: pretrain/preemption.py does it


def progress(ready, started, processed, completed):
    from lightning.pytorch.loops.progress import _BatchProgress

    bp = _BatchProgress()
    for tracker in (bp.current, bp.total):
        tracker.ready, tracker.started, tracker.processed, tracker.completed = ready, started, processed, completed
    return SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=bp))), bp


def test_checkpoint_from_the_middle_of_an_accumulation_is_refused():
    trainer, _ = progress(11, 11, 10, 10)  # saved during micro-batch 3 of step 3 (accumulation 4)
    with pytest.raises(RuntimeError, match="2 of 4 micro-batches"):
        check_step_boundary(trainer, 4)
    trainer, _ = progress(8, 8, 8, 7)  # saved inside on_train_batch_end right after step 2's last micro-batch
    check_step_boundary(trainer, 4)


def _clip_under_fsdp(rank: int, port: int, out: str) -> None:
    """One rank of `test_fsdp_clips_by_the_norm_of_the_whole_model`: a training step of the module inside FSDP
    (full sharding, one unit, as Lightning wraps it: use_orig_params), then the module's clip."""
    import os

    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy

    from pretrain.config import MaskingConfig, OptimConfig
    from pretrain.module import MaskedLMModule, sparse_mlm_loss
    from pretrain.phases import Phase
    from tests.pretrain.conftest import SPECIAL, small_model

    class Step(torch.nn.Module):  # what Lightning's wrapper does: forward is the training step
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, rows):
            return self.module.training_step(rows, 0)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    module = MaskedLMModule(small_model("bert"), MaskingConfig(), OptimConfig(grad_clip=1.0),
                            [Phase(0, 64, 0, 1, 4, 4, 1, 1.0, 0)], SPECIAL, 300, {64: 0.9})
    reference = small_model("bert")  # the same weights, whole
    root = FullyShardedDataParallel(Step(module), device_id=torch.device("cpu"), use_orig_params=True,
                                    sharding_strategy=ShardingStrategy.FULL_SHARD)
    module.trainer = SimpleNamespace(strategy=SimpleNamespace(model=root), precision_plugin=SimpleNamespace())
    ids = torch.randint(5, 300, (4, 64), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)  # the same masks on both ranks and for the reference: the whole gradient is the reference's
    root(ids).backward()
    torch.manual_seed(4)
    batch = module.masker(ids)
    sparse_mlm_loss(reference, batch.input_ids, batch.positions, batch.targets)[0].backward()
    module.configure_gradient_clipping(torch.optim.SGD(module.parameters(), lr=0.1))
    true = torch.nn.utils.get_total_norm([p.grad for p in reference.parameters() if p.grad is not None])
    Path(out, f"rank{rank}").write_text(f"{module.window['grad_norm'].item()} {true.item()}")
    dist.destroy_process_group()


def test_fsdp_clips_by_the_norm_of_the_whole_model(tmp_path):
    """Under FSDP each rank holds a shard of the gradients; the clip and the logged norm use the whole
    model's norm on every rank (per-shard norms clipped each shard by its own factor)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_clip_under_fsdp, args=(port, str(tmp_path)), nprocs=2)
    norms = [tuple(map(float, (tmp_path / f"rank{r}").read_text().split())) for r in range(2)]
    assert norms[0][1] > 1.0  # the clip bites
    assert all(ours == pytest.approx(true, rel=1e-4) for ours, true in norms)


@pytest.fixture
def fake_clock(monkeypatch):
    """time.monotonic and time.sleep of a clock that each sleep moves on at once: an hour's wait takes no time.
    `at[s]` is called once the clock passes s seconds."""
    clock = SimpleNamespace(now=0.0, at={})

    def sleep(seconds):
        clock.now += seconds
        for due in sorted(s for s in clock.at if s <= clock.now):
            clock.at.pop(due)()
        if clock.now > 10_000:
            raise AssertionError(f"still waiting at {clock.now:.0f} s")

    monkeypatch.setattr(time, "monotonic", lambda: clock.now)
    monkeypatch.setattr(time, "sleep", sleep)
    return clock


def test_other_ranks_wait_for_rank_0_as_long_as_it_holds_the_stage_lock(tmp_path, fake_clock, monkeypatch):
    """Rank 0 exports for 40 minutes (a large model, a full FSDP checkpoint to gather): the other ranks wait
    for its folder however long that takes, not a fixed limit after which they would end the launch."""
    monkeypatch.setattr(stage_folder, "BUILDER_GRACE_S", 5.0)
    out = StageOutput(tmp_path / "work", "pretrain", {"model": "large"}, {})
    with contextlib.ExitStack() as rank_0:
        rank_0.enter_context(out.build(resumable=True, keep_on_error=True))  # holds the lock, as in train_stage
        fake_clock.at[2400.0] = rank_0.close  # publishes the folder and lets go of the lock
        wait_for_stage(out.folder)
    assert is_complete(out.folder)
    assert 2400 <= fake_clock.now < 2410


def test_other_ranks_stop_with_stage_busy_once_no_process_holds_the_lock(tmp_path, fake_clock, monkeypatch):
    """Rank 0 died after 1000 s without publishing: the others give up `BUILDER_GRACE_S` later with an error
    the CLI reports (naming the folder), not a traceback."""
    monkeypatch.setattr(stage_folder, "BUILDER_GRACE_S", 60.0)
    out = StageOutput(tmp_path / "work", "pretrain", {"model": "large"}, {})
    rank_0 = contextlib.ExitStack()
    rank_0.enter_context(out.build(resumable=True, keep_on_error=True))
    died = RuntimeError("rank 0 died")
    fake_clock.at[1000.0] = lambda: rank_0.__exit__(RuntimeError, died, None)  # the lock goes with its process
    with pytest.raises(StageBusy, match=re.escape(out.folder.name)):
        wait_for_stage(out.folder)
    assert 1060 <= fake_clock.now < 1070
    assert not is_complete(out.folder)
