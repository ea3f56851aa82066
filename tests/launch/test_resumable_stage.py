"""Stage folders built by several ranks, and by a SLURM job that dies and is requeued."""

import pytest

from bertforge.common.stage_folder import StageOutput, build_stage, is_complete


def test_an_attempt_that_dies_leaves_its_checkpoints_for_the_next_attempt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with build_stage(tmp_path, "pretrain", {"x": 1}, {}, run_id="slurm-7") as build:
            (build.tmp / "checkpoints").mkdir()
            (build.tmp / "checkpoints" / "last.ckpt").write_text("step 5")
            raise KeyboardInterrupt  # preempted
    folder = StageOutput(tmp_path, "pretrain", {"x": 1}, {}).folder
    assert not folder.exists()
    other = folder.parent / f".{folder.name}.tmp-slurm-3"  # an older job's leftovers
    other.mkdir()
    with build_stage(tmp_path, "pretrain", {"x": 1}, {}, run_id="slurm-7") as build:
        assert (build.tmp / "checkpoints" / "last.ckpt").read_text() == "step 5"
    assert is_complete(folder) and (folder / "checkpoints" / "last.ckpt").exists()
    assert not other.exists() and [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_only_the_publishing_rank_finishes_the_folder(tmp_path):
    folder = StageOutput(tmp_path, "pretrain", {"x": 1}, {}).folder
    with build_stage(tmp_path, "pretrain", {"x": 1}, {}, run_id="local-1", publish=False) as rank1:
        (rank1.tmp / "rank1.txt").write_text("1")
    assert not folder.exists() and rank1.tmp.is_dir()  # rank 1 neither publishes nor cleans up
    with build_stage(tmp_path, "pretrain", {"x": 1}, {}, run_id="local-1") as rank0:
        assert rank0.tmp == rank1.tmp  # one folder for every rank of the run
    assert is_complete(folder) and (folder / "rank1.txt").read_text() == "1"


def test_a_failing_one_process_build_still_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with build_stage(tmp_path, "pretrain", {"x": 1}, {}) as build:
            (build.tmp / "half").write_text("x")
            raise RuntimeError
    assert list((tmp_path / "pretrain").iterdir()) == []
