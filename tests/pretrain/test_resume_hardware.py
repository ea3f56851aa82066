"""A run resumes on other hardware: another `trainer.micro_batch_size` or number of devices accumulates another
number of micro-batches a step (the global batch is hashed, the split is not), and the resumed run goes on
from the checkpoint's step to the end, every step trained once at its data position."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest

from bertforge.common.stage_folder import read_manifest
from bertforge.stages import run_stage
from tests.conftest import QUICK

RUN = [*QUICK, "training.max_steps=12", "optim.warmup_steps=2", "logger.log_every_n_steps=1", "logger.progress_bar=false",
       "checkpoint.every_n_steps=3", "logger.log_data_positions=true"]
BATCH = 32  # demo_ga's global batch


def trained_steps(folder) -> list[int]:
    with open(folder / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (4, 2)])
def test_a_run_resumes_with_another_number_of_micro_batches_a_step(make_cfg, monkeypatch, shards_work, before, after):
    import pretrain.module as module

    real, calls = module.sparse_mlm_loss, []

    def dies_in_step_5(*args):
        calls.append(None)
        if len(calls) == 4 * before + 1:  # the first micro-batch of step 5: the last checkpoint is step 3's
            raise RuntimeError("the process dies")
        return real(*args)

    monkeypatch.setattr(module, "sparse_mlm_loss", dies_in_step_5)
    with pytest.raises(RuntimeError, match="the process dies"):
        run_stage(make_cfg("pretrain", [*RUN, f"trainer.micro_batch_size={BATCH // before}"], work_dir=shards_work),
                  "pretrain")
    monkeypatch.setattr(module, "sparse_mlm_loss", real)
    folder = run_stage(make_cfg("pretrain", [*RUN, f"trainer.micro_batch_size={BATCH // after}"],
                                work_dir=shards_work), "pretrain")
    assert trained_steps(folder) == list(range(1, 13))
    manifest = read_manifest(folder)  # the folder's time is both attempts' (the model card says so)
    assert len(manifest["attempt_seconds"]) == 2 and manifest["seconds"] == pytest.approx(sum(manifest["attempt_seconds"]))
    # Each step's rows, read once, at its place: steps 1-3 by the first run's micro-batches, 4-12 by the second's.
    rows = [line.split("\t") for line in (folder / "data_positions" / "rank0.tsv").read_text().splitlines()]
    # The rerun is attempt 1 (no SLURM here); it trained step 3 (0-based) again, which the first had trained
    # after its last checkpoint.
    attempts = {int(attempt) for attempt, step, *_ in rows if int(step) == 3}
    assert attempts == {0, 1} and {int(attempt) for attempt, step, *_ in rows if int(step) > 4} == {1}
    latest = {}
    for attempt, step, slot, start, stop in rows:
        latest.setdefault(int(step), {}).setdefault(int(attempt), {})[int(slot)] = (int(start), int(stop))
    latest = {step: by_attempt[max(by_attempt)] for step, by_attempt in latest.items()}
    assert sorted(latest) == list(range(12))
    for step, slots in latest.items():
        split = before if step < 3 else after
        size = BATCH // split
        assert slots == {k: (step * BATCH + k * size, step * BATCH + (k + 1) * size) for k in range(split)}, step


def test_lightning_counts_the_resumed_phase_in_this_runs_micro_batches():
    """Saved at step 3 with one micro-batch a step, resumed with two: Lightning's restored count (3) becomes 6,
    so it steps the optimiser after every second micro-batch and ends the phase where the sampler does."""
    from lightning.pytorch.loops.progress import _BatchProgress as Progress

    from pretrain.rank_sampler import MicroBatchSeeding

    sampler = SimpleNamespace(layout=SimpleNamespace(accumulation=2), start_step=3, first_step=0, rank=0)
    seeding = MicroBatchSeeding(lambda: sampler, seed=0)
    seeding.load_state_dict({"accumulation": 1})
    progress = Progress()
    for tracker in (progress.current, progress.total):
        tracker.ready = tracker.started = tracker.processed = tracker.completed = 3
    progress.total.completed = progress.total.ready = progress.total.started = progress.total.processed = 5
    trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
                              global_step=3, global_rank=0)
    seeding.on_train_start(trainer, None)
    assert (progress.current.ready, progress.current.completed) == (6, 6)
    assert (progress.total.ready, progress.total.completed) == (8, 8)  # moved by as much
    assert seeding.state_dict() == {"accumulation": 2}


def test_the_attempt_follows_the_last_one_in_the_ledger_even_when_a_kill_cut_it(tmp_path):
    from pretrain.rank_sampler import _last_attempt

    ledger = tmp_path / "rank0.tsv"
    assert _last_attempt(ledger) == -1
    ledger.write_text("".join(f"{a}\t{s}\t0\t{s * 8}\t{s * 8 + 8}\n" for a, s in [(0, 0), (0, 1), (1, 1)] * 400)
                      + "2\t7\t0\t56")  # a line cut by a kill: its attempt is still read
    assert _last_attempt(ledger) == 2
    ledger.write_text("0\t0\t0\t0\t8\n")
    assert _last_attempt(ledger) == 0
