"""Checkpoints: never half-written, a full disk leaves the previous one intact, a corrupt newest one is
passed over for the one before it."""

import errno
import logging

import pytest
import torch

from bertforge.common.errors import DiskFull
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
