"""Checkpoints: never half-written, a full disk leaves the previous one intact, a corrupt newest one is
passed over for the one before it."""

import errno
import logging

import pytest
import torch

from bertforge.common.errors import DiskFull
from tests.conftest import FakeClock
from pretrain.checkpoints import AtomicCheckpointIO, is_readable, newest_valid_checkpoint


def save(folder, name, step):
    AtomicCheckpointIO().save_checkpoint({"global_step": step, "w": torch.arange(1000)}, folder / name)
    return folder / name


def test_the_newest_readable_checkpoint_is_resumed_and_a_corrupt_one_named(tmp_path, caplog):
    assert newest_valid_checkpoint(tmp_path) is None
    save(tmp_path, "step10.ckpt", 10)
    step20 = save(tmp_path, "step20.ckpt", 20)
    last = save(tmp_path, "last.ckpt", 20)
    assert newest_valid_checkpoint(tmp_path) == last
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="bertforge.pretrain"):
        assert newest_valid_checkpoint(tmp_path) == step20
    assert "last.ckpt are truncated or corrupt: resuming from" in caplog.text
    raw = bytearray(step20.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside a stored tensor: its CRC no longer matches
    step20.write_bytes(bytes(raw))
    assert not is_readable(step20) and newest_valid_checkpoint(tmp_path) == tmp_path / "step10.ckpt"
    assert torch.load(tmp_path / "step10.ckpt", weights_only=False)["global_step"] == 10


def test_a_full_disk_leaves_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    last = save(tmp_path, "last.ckpt", 10)
    before = last.read_bytes()

    def full(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")  # what a filling disk leaves behind
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFull, match=r"disk filled while saving .*last.ckpt .*previous checkpoint .*intact"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 20}, last)
    assert last.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_pinned_checkpoints_outlive_keep_last(make_cfg, shards_work):
    """checkpoint.pin_steps: those steps' checkpoints stay whatever keep_last deletes."""
    from bertforge.stages import run_stage
    from tests.conftest import QUICK

    folder = run_stage(make_cfg("pretrain", [*QUICK, "training.max_steps=8", "optim.warmup_steps=2", "checkpoint.every_n_steps=2",
                                             "checkpoint.keep_last=1", "checkpoint.pin_steps=[2,5]",
                                             "logger.progress_bar=false"], work_dir=shards_work), "pretrain")
    kept = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert kept == ["last.ckpt", "pinned-step2.ckpt", "pinned-step5.ckpt", "step8.ckpt"]
    steps = {name: torch.load(folder / "checkpoints" / name, map_location="cpu", weights_only=False)["global_step"]
             for name in kept}
    assert steps == {"last.ckpt": 8, "pinned-step2.ckpt": 2, "pinned-step5.ckpt": 5, "step8.ckpt": 8}


def test_a_pin_outside_the_run_is_refused_before_anything_runs(make_cfg, tmp_path):
    from bertforge.common.errors import ConfigError
    from bertforge.stages import run_stage

    with pytest.raises(ConfigError, match=r"checkpoint.pin_steps=\[0, 600\]: \[0, 600\] not between 1 and "
                                          r"training.max_steps=500"):
        run_stage(make_cfg("pretrain", ["experiment=demo_ga", "checkpoint.pin_steps=[0,600]"]), "pretrain")
    assert not (tmp_path / "work").exists()


def test_partial_saves_a_killed_run_left_are_removed(tmp_path, caplog):
    """A kill while saving leaves `<name>.tmp-<pid>` beside the checkpoints: no reader takes it and keep_last
    never prunes it, so a resumed run removes it (and nothing else)."""
    from pretrain.checkpoints import remove_partial_saves

    for name in ("last.ckpt", "step5.ckpt", "step10.ckpt.tmp-4242"):
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="bertforge.pretrain"):
        remove_partial_saves(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step5.ckpt"]
    assert "step10.ckpt.tmp-4242, a checkpoint a killed run did not finish writing" in caplog.text


def test_checkpoint_saves_count_neither_as_training_time_nor_as_data_wait(tmp_path, monkeypatch):
    """A save's host time is left out of the logging interval and out of the next step's data wait, for the
    regular saves (step and last) and the pinned ones alike, and each interval says how much was left out."""
    import lightning as L

    import pretrain.step_metrics as step_metrics
    from pretrain.checkpoints import PinnedCheckpoints, UntimedCheckpoint
    from pretrain.step_metrics import StepMetricsLogger

    clock = FakeClock()
    monkeypatch.setattr(step_metrics.time, "perf_counter", clock)

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, index):
            clock.now += 0.1  # the loader: 0.1 s a row
            return torch.ones(4)

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            clock.now += 1.0  # the step
            return self.layer(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(Rows(), batch_size=1)

        def pop_window(self):
            return {"train/loss": 1.0, "tokens": 100}

    class SlowSaves(AtomicCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            clock.now += 5.0  # each save: 5 s
            super().save_checkpoint(checkpoint, path, storage_options)

    metrics = StepMetricsLogger([type("Phase", (), {"end_step": 6, "seq_len": 8, "index": 0})()], [1e6],
                                every_n_steps=2, peak_tflops=1.0, progress_bar=False)
    folder = tmp_path / "checkpoints"
    trainer = L.Trainer(
        max_steps=6, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        plugins=[SlowSaves()],
        callbacks=[UntimedCheckpoint(metrics.untimed, dirpath=str(folder), filename="step{step}",
                                     every_n_train_steps=2, save_last=True, monitor="step", mode="max",
                                     save_top_k=10, auto_insert_metric_name=False),
                   PinnedCheckpoints([3], folder, metrics.untimed), metrics])
    trainer.fit(Tiny())
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "pinned-step3.ckpt", "step2.ckpt",
                                                        "step4.ckpt", "step6.ckpt"]
    # Every interval: two steps of 1 s and two rows of 0.1 s from the loader, whatever was saved in it.
    assert [h["step"] for h in metrics.history] == [2, 4, 6]
    assert [h["throughput/tokens_per_s"] for h in metrics.history] == pytest.approx([100 / 2.2] * 3)
    assert [h["time/data_wait_s"] for h in metrics.history] == pytest.approx([0.2] * 3)
    # Logged at step 2 before step 2's saves (Lightning runs ModelCheckpoint after the other callbacks):
    # steps 3-4 leave out step 2's two saves (step2, last) and the pin at step 3.
    assert [h["time/untimed_s"] for h in metrics.history] == pytest.approx([0.0, 15.0, 10.0])


def test_a_run_that_starts_over_in_its_kept_folder_merges_no_earlier_rows(make_cfg, shards_work, monkeypatch):
    """Rows an earlier resume set aside, in a working folder whose every checkpoint then turned out unreadable:
    the next attempt starts at step 0 there, and those rows must not be merged in front of its own (they
    stood for steps 1-3 in the finished metrics.csv)."""
    import csv

    import pretrain.module as module
    from bertforge.stages import run_stage
    from tests.conftest import QUICK

    cfg = make_cfg("pretrain", [*QUICK, "training.max_steps=6", "optim.warmup_steps=2", "logger.log_every_n_steps=1",
                                "checkpoint.every_n_steps=3", "logger.progress_bar=false"], work_dir=shards_work)
    real_loss, calls = module.sparse_mlm_loss, []

    def dies_in_step_5(*args):
        calls.append(None)
        if len(calls) == 5:
            raise RuntimeError("the process dies")
        return real_loss(*args)

    monkeypatch.setattr(module, "sparse_mlm_loss", dies_in_step_5)
    with pytest.raises(RuntimeError, match="the process dies"):
        run_stage(cfg, "pretrain")
    monkeypatch.setattr(module, "sparse_mlm_loss", real_loss)
    [work] = list((shards_work / "pretrain").glob(".pretrain-*.work"))
    # what a resume that died before training left: the rows up to its step, set aside (here marked 999)
    (work / "logs" / "metrics-before-resume.csv").write_text(
        "step,train/loss\n" + "".join(f"{step},999.0\n" for step in (1, 2, 3)))
    for checkpoint in (work / "checkpoints").glob("*.ckpt"):
        checkpoint.write_bytes(b"not a checkpoint")  # a bad disk: nothing to resume from
    folder = run_stage(cfg, "pretrain")
    with open(folder / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        rows = [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert [step for step, _ in rows] == list(range(1, 7)) and all(loss < 100 for _, loss in rows)
