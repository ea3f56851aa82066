"""Stage folders appear only when finished; a failure or a kill leaves nothing that looks finished."""

import pytest

from bertforge.common.errors import FinishedMeanwhile
from bertforge.common.stage_folder import StageOutput, build_stage, config_hash, is_complete, read_manifest
from tests.conftest import FakeClock


def test_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_finished_stage_has_manifest_and_marker(tmp_path):
    with build_stage(tmp_path, "corpus", {"x": 1}, {}) as build:
        (build.tmp / "data.txt").write_text("hi")
        build.manifest["counts"] = {"documents": 1}
    folder = StageOutput(tmp_path, "corpus", {"x": 1}, {}).folder
    assert is_complete(folder) and (folder / "data.txt").read_text() == "hi"
    assert read_manifest(folder)["counts"] == {"documents": 1}


def test_failure_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with build_stage(tmp_path, "corpus", {"x": 1}, {}) as build:
            (build.tmp / "half.txt").write_text("half")
            raise RuntimeError("killed")
    assert list((tmp_path / "corpus").iterdir()) == []


def test_half_written_folder_is_not_reused(tmp_path):
    folder = StageOutput(tmp_path, "vocab", {"v": 1}, {"corpus": "abc"}).folder
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")  # no completion marker: a crashed copy
    assert not is_complete(folder)
    with pytest.raises(FileNotFoundError, match="not a finished"):
        read_manifest(folder)


def test_stale_tmp_from_killed_run_is_cleaned(tmp_path):
    folder = StageOutput(tmp_path, "corpus", {"x": 1}, {}).folder
    stale = folder.parent / f".{folder.name}.tmp-99999"
    stale.mkdir(parents=True)
    with build_stage(tmp_path, "corpus", {"x": 1}, {}):
        pass
    assert not stale.exists() and is_complete(folder)


def test_a_folder_finished_before_the_lock_was_taken_is_not_built_again(tmp_path):
    with build_stage(tmp_path, "vocab", {"v": 1}, {}) as build:
        (build.tmp / "vocab.json").write_text("first")
    folder = StageOutput(tmp_path, "vocab", {"v": 1}, {}).folder
    for _ in range(2):  # and the lock is let go: the next try is told the same, not that the folder is busy
        with pytest.raises(FinishedMeanwhile, match="finished by another run meanwhile"):
            with build_stage(tmp_path, "vocab", {"v": 1}, {}) as build:
                (build.tmp / "vocab.json").write_text("second")
    assert (folder / "vocab.json").read_text() == "first"
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no working folder left beside it


def test_a_resumed_build_counts_every_attempts_time(tmp_path, monkeypatch):
    """A resumable folder's `seconds` are what every attempt spent on it: an interrupted attempt's whole time, a
    killed one's up to its last `record_attempt` (a checkpoint), and the one that finished."""
    import bertforge.common.stage_folder as stage_folder

    clock = FakeClock(1000.0)
    monkeypatch.setattr(stage_folder.time, "time", clock)

    def attempt():
        return build_stage(tmp_path, "pretrain", {"x": 1}, {}, resumable=True, keep_on_error=True)

    with pytest.raises(KeyboardInterrupt):  # a Ctrl-C (or SIGTERM) after 30 s
        with attempt():
            clock.now += 30
            raise KeyboardInterrupt
    killed = attempt()  # a SIGKILL: checkpoints at 50 s, then runs no more code of its own (its lock dies with it)
    build = killed.__enter__()
    clock.now += 50
    build.record_attempt()
    clock.now += 7
    build.records_attempts = False
    assert killed.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None) is False
    with attempt() as build:
        assert build.earlier_seconds == [30.0, 50.0]
        clock.now += 20
    manifest = read_manifest(build.final)
    assert manifest["seconds"] == 100.0 and manifest["attempt_seconds"] == [30.0, 50.0, 20.0]
    assert not (build.final / stage_folder.ATTEMPTS).exists()
    with build_stage(tmp_path, "pretrain", {"x": 2}, {}, resumable=True) as build:  # one attempt: its time alone
        clock.now += 5
    assert "attempt_seconds" not in read_manifest(build.final) and read_manifest(build.final)["seconds"] == 5.0
