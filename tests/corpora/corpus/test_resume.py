"""Reruns of an unfinished corpus stage: a rerun split another way starts over and loses nothing, a task
that died leaves the finished ones for the rerun, and an interrupted report is built again."""

import errno
import json
import logging
import os

import pytest

from bertforge.common.errors import TasksFailed
from bertforge.stages import run_stage
from corpora.corpus import stage as corpus_stage
from corpora.corpus import whole_corpus
from corpora.documents import iter_documents
from tests.conftest import estonian_jsonl
from tests.corpora.corpus.test_duplicate_index import legal_texts_with_plants, removed_by_index, stage_cfg


def killed_after(steps_done: int, monkeypatch):
    """Make the corpus stage's chain stop, as a killed process would, after its first `steps_done` steps."""
    real_chain = corpus_stage.run_chain

    def killed(executor, steps, logging_dir):
        real_chain(executor, steps[:steps_done], logging_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_stage, "run_chain", killed)
    return real_chain


def report_of(folder):
    return json.loads((folder / "report.json").read_text())


def test_rerun_with_other_task_count_starts_over_and_loses_no_document(make_cfg, data_dir, tmp_path, monkeypatch,
                                                                       caplog):
    src = estonian_jsonl(data_dir, tmp_path / "in", files=4, docs_per_file=150)

    def cfg(tasks):
        return make_cfg("corpus", ["source=jsonl", f"source.inputs.0.path={src}", "filters=none", f"corpus.tasks={tasks}"],
                        work_dir=tmp_path / "w")

    real_chain = killed_after(1, monkeypatch)  # the filter step's four tasks finish
    with pytest.raises(KeyboardInterrupt):
        run_stage(cfg(4), "corpus")
    monkeypatch.setattr(corpus_stage, "run_chain", real_chain)
    with caplog.at_level(logging.WARNING):
        folder = run_stage(cfg(2), "corpus")
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "corpus.tasks=4" in warning and "corpus.tasks=2" in warning and "discarding its finished tasks" in warning
    ids = [d["id"] for d in iter_documents(folder)]
    assert report_of(folder)["documents_in"] == 600 and len(ids) == len(set(ids)) == 600
    assert len(list((folder / "datatrove" / "filter" / "completions").iterdir())) == 2


@pytest.mark.parametrize("first,then", [(3, 1), (1, 3)])
def test_rerun_with_other_index_task_count_starts_over_and_decides_as_a_fresh_run(make_cfg, data_dir, tmp_path,
                                                                                  monkeypatch, first, then):
    texts = legal_texts_with_plants(data_dir)[-2000:]
    src = tmp_path / "tos.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    real_chain = killed_after(1, monkeypatch)  # signatures and key files written for `first` index tasks
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage_cfg(make_cfg, src, tmp_path / "w", first), "corpus")
    monkeypatch.setattr(corpus_stage, "run_chain", real_chain)
    resumed = run_stage(stage_cfg(make_cfg, src, tmp_path / "w", then), "corpus")  # 1 -> 3 used to miss key files
    fresh = run_stage(stage_cfg(make_cfg, src, tmp_path / "fresh", then), "corpus")
    assert removed_by_index(resumed) == removed_by_index(fresh) and len(removed_by_index(fresh)) > 100


def test_a_task_that_died_leaves_the_finished_tasks_for_the_rerun(make_cfg, data_dir, tmp_path, monkeypatch):
    src = estonian_jsonl(data_dir, tmp_path / "in", files=2, docs_per_file=200)
    cfg = make_cfg("corpus", ["source=jsonl", f"source.inputs.0.path={src}", "filters=none", "corpus.tasks=2"])
    died_once = tmp_path / "died_once"
    real_apply = whole_corpus.DecisionApplier.run

    def dies_first_time(self, data=None, rank=0, world_size=1):
        if rank == 1 and not died_once.exists():
            died_once.write_text("x")
            os._exit(137)  # as the out-of-memory killer ends a task's process
        return real_apply(self, data, rank, world_size)

    monkeypatch.setattr(whole_corpus.DecisionApplier, "run", dies_first_time)
    with pytest.raises(TasksFailed):
        run_stage(cfg, "corpus")
    corpus_dir = tmp_path / "work" / "corpus"
    filtered = {p.name: p.stat().st_mtime_ns for p in corpus_dir.glob(".corpus-*.work/datatrove/filter/completions/*")}
    assert len(filtered) == 2
    folder = run_stage(cfg, "corpus")
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "datatrove" / "filter" / "completions").iterdir()}
    assert after == filtered  # not run again
    assert report_of(folder)["documents_kept"] == len(list(iter_documents(folder))) == 400


def test_a_task_that_raised_leaves_the_finished_tasks_for_the_rerun(make_cfg, data_dir, tmp_path, monkeypatch):
    """A full disk or a MemoryError inside a task is not bad input: the work folder stays, and the rerun
    runs only the task that did not complete."""
    src = estonian_jsonl(data_dir, tmp_path / "in", files=2, docs_per_file=200)
    cfg = make_cfg("corpus", ["source=jsonl", f"source.inputs.0.path={src}", "filters=none", "corpus.tasks=2"])
    real_apply = whole_corpus.DecisionApplier.run
    full = {"disk": True}

    def disk_full_once(self, data=None, rank=0, world_size=1):
        if rank == 1 and full["disk"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_apply(self, data, rank, world_size)

    monkeypatch.setattr(whole_corpus.DecisionApplier, "run", disk_full_once)
    with pytest.raises(TasksFailed, match=r"corpus: step apply: .*ranks .*1\).*a task ended with: OSError: "
                                          r"\[Errno 28\] No space left on device"):
        run_stage(cfg, "corpus")
    corpus_dir = tmp_path / "work" / "corpus"
    filtered = {p.name: p.stat().st_mtime_ns for p in corpus_dir.glob(".corpus-*.work/datatrove/filter/completions/*")}
    assert len(filtered) == 2
    full["disk"] = False
    folder = run_stage(cfg, "corpus")
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "datatrove" / "filter" / "completions").iterdir()}
    assert after == filtered  # not run again
    assert report_of(folder)["documents_kept"] == len(list(iter_documents(folder))) == 400


def test_run_interrupted_after_every_step_builds_its_report_on_rerun(make_cfg, data_dir, tmp_path, monkeypatch):
    texts = legal_texts_with_plants(data_dir)[-1000:]
    src = tmp_path / "tos.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    real_report = corpus_stage.corpus_report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_stage, "corpus_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage_cfg(make_cfg, src, tmp_path / "w", 2), "corpus")
    monkeypatch.setattr(corpus_stage, "corpus_report", real_report)
    resumed = run_stage(stage_cfg(make_cfg, src, tmp_path / "w", 2), "corpus")
    fresh = run_stage(stage_cfg(make_cfg, src, tmp_path / "fresh", 2), "corpus")
    assert not (resumed / "work").exists()
    ours, theirs = ({k: v for k, v in report_of(f).items() if k != "timing_s"} for f in (resumed, fresh))
    assert ours == theirs and ours["duplicate_clusters"]


def test_apply_refuses_a_filtered_file_shorter_than_its_decisions(make_cfg, data_dir, tmp_path, monkeypatch):
    texts = legal_texts_with_plants(data_dir)[-500:]
    src = tmp_path / "tos.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    cfg = stage_cfg(make_cfg, src, tmp_path / "w", 1)
    real_chain = killed_after(3, monkeypatch)  # decisions made, not applied
    with pytest.raises(KeyboardInterrupt):
        run_stage(cfg, "corpus")
    monkeypatch.setattr(corpus_stage, "run_chain", real_chain)
    [filtered] = list((tmp_path / "w" / "corpus").glob(".corpus-*.work/work/filtered/00000.jsonl"))
    lines = filtered.read_bytes().splitlines(keepends=True)
    filtered.write_bytes(b"".join(lines[:-1]))  # a document lost between the steps
    with pytest.raises(RuntimeError, match=f"hold {len(lines)} documents but .* holds only {len(lines) - 1}"):
        run_stage(cfg, "corpus")
