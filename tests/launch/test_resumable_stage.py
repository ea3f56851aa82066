"""Stage folders built by several ranks, by runs that die and are rerun, and by two runs at once."""

import logging
import multiprocessing

import pytest

from bertforge.common.errors import FinishedMeanwhile, StageBusy
from bertforge.common.stage_folder import StageOutput, build_stage, is_complete


def test_an_attempt_that_dies_leaves_its_checkpoints_for_the_rerun(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with build_stage(tmp_path, "pretrain", {"x": 1}, {}, resumable=True, keep_on_error=True) as build:
            (build.tmp / "checkpoints").mkdir()
            (build.tmp / "checkpoints" / "last.ckpt").write_text("step 5")
            raise KeyboardInterrupt  # killed, preempted
    folder = StageOutput(tmp_path, "pretrain", {"x": 1}, {}).folder
    assert not folder.exists()
    with build_stage(tmp_path, "pretrain", {"x": 1}, {}, resumable=True) as build:  # the same command again
        assert (build.tmp / "checkpoints" / "last.ckpt").read_text() == "step 5"
    assert is_complete(folder) and (folder / "checkpoints" / "last.ckpt").exists()


def test_starting_over_sets_the_earlier_attempt_aside(tmp_path, caplog):
    with pytest.raises(KeyboardInterrupt):
        with build_stage(tmp_path, "pretrain", {"x": 1}, {}, resumable=True) as build:
            (build.tmp / "last.ckpt").write_text("step 5")
            raise KeyboardInterrupt
    with caplog.at_level(logging.WARNING, logger="bertforge"):
        with build_stage(tmp_path, "pretrain", {"x": 1}, {}, resumable=True, fresh=True) as build:
            assert not (build.tmp / "last.ckpt").exists()
    [aside] = list((tmp_path / "pretrain").glob(".*set-aside-*"))
    assert (aside / "last.ckpt").read_text() == "step 5" and str(aside) in caplog.text


def test_a_killed_builds_leftover_is_removed_with_a_warning(tmp_path, caplog):
    folder = StageOutput(tmp_path, "corpus", {"x": 1}, {}).folder
    stale = folder.parent / f".{folder.name}.tmp-99999"
    stale.mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="bertforge"):
        with build_stage(tmp_path, "corpus", {"x": 1}, {}):
            pass
    assert not stale.exists() and f"removing {stale}" in caplog.text


def test_only_the_publishing_rank_finishes_the_folder(tmp_path):
    folder = StageOutput(tmp_path, "pretrain", {"x": 1}, {}).folder
    with build_stage(tmp_path, "pretrain", {"x": 1}, {}, resumable=True, publish=False) as rank1:
        (rank1.tmp / "rank1.txt").write_text("1")
    assert not folder.exists() and rank1.tmp.is_dir()  # rank 1 neither publishes nor cleans up
    with build_stage(tmp_path, "pretrain", {"x": 1}, {}, resumable=True) as rank0:
        assert rank0.tmp == rank1.tmp  # one folder for every rank of the run
    assert is_complete(folder) and (folder / "rank1.txt").read_text() == "1"


def test_a_failing_one_process_build_still_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with build_stage(tmp_path, "pretrain", {"x": 1}, {}) as build:
            (build.tmp / "half").write_text("x")
            raise RuntimeError
    assert list((tmp_path / "pretrain").iterdir()) == []


def _hold(work_dir, started, release):
    with build_stage(work_dir, "pretrain", {"x": 1}, {}, resumable=True):
        started.set()
        release.wait(30)


def test_a_second_live_run_of_the_stage_is_told_who_builds_it(tmp_path):
    context = multiprocessing.get_context("fork")
    started, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(tmp_path, started, release))
    holder.start()
    try:
        assert started.wait(30)
        with pytest.raises(StageBusy, match=rf"being built by pid {holder.pid} on .* wait for that run"):
            with build_stage(tmp_path, "pretrain", {"x": 1}, {}, resumable=True):
                pass
    finally:
        release.set()
        holder.join(30)
    # The lock went with its holder's build, which finished the folder: the next run is told so, not that it is busy
    with pytest.raises(FinishedMeanwhile):
        with build_stage(tmp_path, "pretrain", {"x": 1}, {}, resumable=True):
            pass
