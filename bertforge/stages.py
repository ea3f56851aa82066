"""The stage graph, declared once: each stage, the stages it needs, the config it hashes, its builder.

    raw text -> corpus -> vocab -> shards -> pretrain -> evaluate -> publish
                                                        -> downstream -^ (when downstream.tasks)

A command names a target stage; `run_stages` resolves the graph once, then runs or reuses each
stage it needs exactly once, in order, handing every builder its upstream folders. No stage calls
another stage and nothing changes the config. A new stage is one row of `STAGES`.

A stage folder is named by a hash of the config values in `Stage.hashes` (dotted paths into the
experiment), of the values `Stage.derived` computes (file fingerprints, lengths), and of its
upstream folders' hashes. Sections no row hashes (`trainer`, `impl`, `logger`, `checkpoint`,
`corpus`, `paths`) can change without touching any artefact.

The name also hashes the stage's `version`: a change to the code that makes a stage write something
else for the same config (a fixed label, a changed normalisation) bumps that row's version, so a work
folder built by the older code is rebuilt, not reused, and every stage after it follows through the
chained hashes. Changes that write the same bytes (speed, messages) leave it alone.

The builders import their stage module when called, so `bertforge --help` and a reused stage do
not pay for importing every library.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

from bertforge.common.errors import ConfigError, FinishedMeanwhile
from bertforge.common.checkpoints import Checkpoint, resolve_checkpoint
from bertforge.common.ranks import first_process
from bertforge.common.stage_folder import StageOutput, is_complete, wait_for_builder
from bertforge.experiment import ExperimentConfig, unused_settings, used

log = logging.getLogger("bertforge")

Upstream = dict[str, Path]


@dataclass(frozen=True)
class Stage:
    name: str
    needs: Callable[[ExperimentConfig], tuple[str, ...]]
    """Upstream stages whose folders the builder reads (a function: `evaluate.checkpoint` drops one)."""
    hashes: tuple[str, ...]
    """Dotted config paths that name the folder; every other key leaves it as it is."""
    build: Callable[[ExperimentConfig, Upstream, StageOutput], None]
    """Fills the folder (see `StageOutput.build`) from the typed sections it picks out of the experiment."""
    help: str
    derived: Callable[[ExperimentConfig], dict] | None = None
    """Hashed values that are not config keys: input files' sizes and times, row lengths, a file's hash.
    Also where a stage checks its inputs exist, before any stage runs."""
    checks: tuple[Callable[[ExperimentConfig], None], ...] = ()
    """Checks of settings the stage uses but does not hash (hardware, launcher, executor, can we reach the
    hub): run by `run_stages` before any stage runs or is reused, each once, so a config error fails the
    same in a fresh and in a finished work folder."""
    then: Callable[[ExperimentConfig, Path], None] | None = None
    """Work after the folder is complete, whether built now or reused (e.g. push it to a hub); hashes nothing."""
    version: int = 1
    """Bumped when the code changes what the stage writes for the same config (see the module docstring)."""
    every_rank: bool = False
    """Every process of a multi-process launch takes part (pretrain). The other ranks stop after the last
    such stage of a plan: the stages after it run once, in the first process (see `run_stages`)."""


# Builders: each picks the typed sections its stage function takes. The imports are deferred (see above).

def _corpus_inputs(cfg: ExperimentConfig) -> dict:
    from corpora.corpus.stage import checked_inputs
    from corpora.corpus.rules.chain import check_stopwords
    from corpora.corpus.rules.settings import check_filter_settings
    from corpora.corpus.whole_corpus import check_near_dedup

    check_near_dedup(cfg.filters.near_dedup)  # while planning: a sweep's bad point fails before any job
    check_filter_settings(cfg.filters)
    check_stopwords(cfg.filters)
    return {"files": checked_inputs(cfg.source).fingerprint}


def _check_executor(cfg: ExperimentConfig) -> None:
    from corpora.executors import check_executor

    check_executor(cfg.corpus.executor)


def _check_corpus_work(cfg: ExperimentConfig) -> None:
    from corpora.corpus.stage import check_work_split

    check_work_split(cfg.corpus)


def _check_shard_work(cfg: ExperimentConfig) -> None:
    """How the shards stage splits its work (not hashed): checked before any stage runs."""
    if cfg.shards.tasks < 0:
        raise ConfigError(f"shards.tasks={cfg.shards.tasks}: give 0 (one tokenise task per corpus file) or more")
    if cfg.shards.encode_batch_docs < 1:
        raise ConfigError(f"shards.encode_batch_docs={cfg.shards.encode_batch_docs}: give at least 1 (e.g. 1000)")


def _build_corpus(cfg: ExperimentConfig, up: Upstream, out: StageOutput) -> None:
    from corpora.corpus.stage import build_corpus

    build_corpus(cfg.source, cfg.filters, cfg.corpus, out)


def _start(cfg: ExperimentConfig) -> Checkpoint | None:
    """The continued-pretraining checkpoint (`model.init_from`), or None for a model from scratch."""
    return _checkpoint(cfg.model.init_from) if cfg.model.init_from else None


@functools.lru_cache(maxsize=None)
def _checkpoint(value: str, key: str = "model.init_from") -> Checkpoint:
    # Resolving hashes the checkpoint's weights; rows ask when planned and when built, so a command does
    # it once per checkpoint (a failure is not cached: it raises).
    return resolve_checkpoint(value, key)


def _start_folder(cfg: ExperimentConfig) -> Path | None:
    start = _start(cfg)
    return start.folder if start else None


def _vocab_inputs(cfg: ExperimentConfig) -> dict:
    from corpora.vocab.stage import checked_vocab_inputs

    return checked_vocab_inputs(cfg.tokenizer, cfg.source, _start_folder(cfg), cfg.model.vocab_mode,
                                cfg.shards.heldout_percent)


def _build_vocab(cfg: ExperimentConfig, up: Upstream, out: StageOutput) -> None:
    from corpora.vocab.stage import build_vocab

    build_vocab(cfg.tokenizer, cfg.source, cfg.shards.heldout_percent, up["corpus"], out,
                start=_start_folder(cfg), vocab_mode=cfg.model.vocab_mode)


def _shard_lengths(cfg: ExperimentConfig) -> dict:
    from corpora.shards.stage import shard_seq_lens

    lengths = {"seq_lens": shard_seq_lens(cfg.shards, [phase.seq_len for phase in cfg.training.phases
                                                       if phase.seq_len])}
    _check_dropout_copies(cfg)
    static, pairs = _static_masking(cfg), _pairs(cfg)
    return lengths | ({"static_masks": static.payload()} if static else {}) | \
        ({"pairs": pairs.payload()} if pairs else {})


def _check_dropout_copies(cfg: ExperimentConfig) -> None:
    """shards.dropout_copies (BPE-dropout in training) needs a dropout tokenizer and packed, dynamically masked rows."""
    copies = cfg.shards.dropout_copies
    if copies < 0:
        raise ConfigError(f"shards.dropout_copies={copies} must be 0 (no BPE-dropout in training) or more")
    if copies and not cfg.tokenizer.bpe_dropout:
        raise ConfigError(f"shards.dropout_copies={copies} tokenises with BPE-dropout: set tokenizer.bpe_dropout "
                          "(e.g. 0.1, with tokenizer=bpe), or shards.dropout_copies=0")
    if copies and (cfg.masking.static or cfg.training.objective != "mlm"):
        raise ConfigError(f"shards.dropout_copies={copies} works with dynamic masking of packed rows only: set "
                          "masking.static=false and training.objective=mlm, or shards.dropout_copies=0")


def _pairs(cfg: ExperimentConfig):
    """The sentence pairs the shards build for `training.objective` mlm_nsp / mlm_sop, checked; None for mlm."""
    if cfg.training.objective == "mlm":
        return None
    from corpora.shards.pairs import PairSettings

    if cfg.model.arch != "bert" and not cfg.model.init_from:
        raise ConfigError(f"training.objective={cfg.training.objective} trains BERT's pair head: it needs "
                          f"model.arch=bert (not {cfg.model.arch!r}), or training.objective=mlm")
    if cfg.trainer.strategy == "fsdp":
        raise ConfigError(f"training.objective={cfg.training.objective} is not supported with trainer.strategy=fsdp "
                          "(its final gather rebuilds a masked-LM model without the pair head): use ddp")
    pairs = PairSettings(cfg.training.objective, cfg.shards.short_seq_prob, cfg.shards.max_single_sentence_doc_share,
                         cfg.training.seed)
    pairs.check()
    return pairs


def _static_masking(cfg: ExperimentConfig):
    """The static masking the shards store (`masking.static=true`), checked; None for dynamic masking."""
    if not cfg.masking.static:
        return None
    from corpora.shards.static_masks import StaticMasking
    from pretrain.masking import check_masking_config

    m = cfg.masking
    check_masking_config(m)  # the shards draw the masks: its ratios are checked before they are built
    if m.span_mean_len > 1.0:
        raise ConfigError(f"masking.static=true draws single tokens or whole words, not spans "
                          f"(masking.span_mean_len={m.span_mean_len}): set masking.span_mean_len=1")
    static = StaticMasking(m.ratio, m.replace_with_mask, m.replace_with_random, m.whole_word, m.dupe_factor,
                           m.max_predictions_per_seq, cfg.training.seed)
    static.check()
    return static


def _build_shards(cfg: ExperimentConfig, up: Upstream, out: StageOutput) -> None:
    from corpora.shards.stage import build_shards

    # seq_lens (and static_masks) from _shard_lengths
    build_shards(cfg.shards, out.payload["seq_lens"], up["corpus"], up["vocab"], out, _static_masking(cfg),
                 _pairs(cfg), executor=cfg.corpus.executor)


def _pretrain_start(cfg: ExperimentConfig) -> dict:
    start = _start(cfg)
    if start is None:
        return {}
    from pretrain.init_from import check_start

    check_start(start, cfg.model.vocab_mode, cfg.model.vocab_transfer)
    return {"init_from": start.identity}


def _check_pretrain_settings(cfg: ExperimentConfig) -> None:
    from pretrain.model import attn_implementation
    from pretrain.settings_check import check_impl_config, check_logger_config, check_pretrain_settings

    check_pretrain_settings(cfg.trainer, cfg.training, cfg.optim, cfg.checkpoint, cfg.shards.seq_len, cfg.model,
                            cfg.masking)
    check_impl_config(cfg.impl)
    check_logger_config(cfg.logger)
    attn_implementation(cfg.impl.attention)


def _build_pretrain(cfg: ExperimentConfig, up: Upstream, out: StageOutput) -> None:
    from pretrain.train_stage import build_pretrain

    from pretrain.publish.hub import pushing

    hub = cfg.publish if pushing(cfg.publish) and cfg.publish.push_every_n_steps else None
    build_pretrain(model_cfg=cfg.model, masking=cfg.masking, optim=cfg.optim, training=cfg.training,
                   trainer=cfg.trainer, impl=cfg.impl, logger=cfg.logger, checkpoint=cfg.checkpoint,
                   run_name=cfg.name, shards_dir=up["shards"], vocab_dir=up["vocab"], out=out, start=_start(cfg),
                   hub=hub)


def _evaluate_needs(cfg: ExperimentConfig) -> tuple[str, ...]:
    return ("shards",) if cfg.evaluate.checkpoint else ("shards", "pretrain")


def _evaluate_checkpoint(cfg: ExperimentConfig) -> dict:
    """With `evaluate.checkpoint`: the model's identity (a hash of its weights, not its path: new weights in
    the same folder are scored again) and the seed its untrained twin is drawn from (for the experiment's
    own model, the pretrain stage's hash holds both)."""
    if not cfg.evaluate.checkpoint:
        return {}
    return {"checkpoint": _checkpoint(cfg.evaluate.checkpoint, "evaluate.checkpoint").identity,
            "seed": cfg.training.seed}


def _build_evaluate(cfg: ExperimentConfig, up: Upstream, out: StageOutput) -> None:
    from pretrain.evaluate.stage import build_evaluate

    checkpoint = _checkpoint(cfg.evaluate.checkpoint, "evaluate.checkpoint").folder if cfg.evaluate.checkpoint \
        else up["pretrain"] / "hf"
    build_evaluate(cfg.evaluate, cfg.masking, cfg.training.seed, checkpoint,
                   own_model="pretrain" in up, shards_dir=up["shards"], out=out)


def _downstream_needs(cfg: ExperimentConfig) -> tuple[str, ...]:
    return () if cfg.downstream.checkpoint else ("pretrain",)


def _downstream_inputs(cfg: ExperimentConfig) -> dict:
    from pretrain.downstream.stage import check_downstream

    d = cfg.downstream
    references = {name: _checkpoint(path, f"downstream.references.{name}") for name, path in d.references.items()}
    checkpoint = _checkpoint(d.checkpoint, "downstream.checkpoint") if d.checkpoint else None
    # Every encoder fine-tuned, so downstream.max_length is checked against each one's positions: the
    # experiment's own model is built from model.* or, continued, is model.init_from's architecture.
    start = None if checkpoint else _start(cfg)
    encoders = {f"downstream.references.{name}": ref.folder for name, ref in references.items()}
    if checkpoint:
        encoders["downstream.checkpoint"] = checkpoint.folder
    elif start:
        encoders["model.init_from"] = start.folder
    own_positions = None if checkpoint or start else cfg.model.max_position_embeddings
    return {"data": check_downstream(d, own_positions, encoders),
            "references": {name: ref.identity for name, ref in references.items()},
            **({"checkpoint": checkpoint.identity} if checkpoint else {})}


def _downstream_plan(cfg: ExperimentConfig) -> dict:
    _warn_test_text_in_corpus(cfg)
    return _downstream_inputs(cfg)


_WARNED_TEST_FILES: set[Path] = set()  # a command plans more than once (and a sweep once per point): warn once


def _warn_test_text_in_corpus(cfg: ExperimentConfig) -> None:
    """Warn, before any stage runs, when a task's test file is one the pretraining corpus reads: the model
    scored has seen those texts (not their labels) in pretraining, which flatters it against its random-init
    twin and any reference. Only for the experiment's own model (not `downstream.checkpoint`)."""
    from corpora.corpus.stage import checked_inputs
    from pretrain.downstream.readers import text_files

    if cfg.downstream.checkpoint or not cfg.downstream.tasks:
        return
    read = {Path(path).resolve() for path, _, _ in checked_inputs(cfg.source).fingerprint}
    scored_on: dict[tuple[Path, ...], list[str]] = {}  # the test files the corpus reads -> the tasks scored on them
    for index, task in enumerate(cfg.downstream.tasks):
        # the reader says which files a test split's texts come from: a conllu/iob file, the jsonl file that
        # holds every split, or the ToS documents (sentences/<doc>.txt) a fold list names
        leaked = tuple(sorted(file for file in text_files(task, "test") if file in read))
        if leaked:
            scored_on.setdefault(leaked, []).append(f"{task.name} (downstream.tasks.{index})")
    for files, tasks in scored_on.items():
        if not set(files) <= _WARNED_TEST_FILES:
            _WARNED_TEST_FILES.update(files)
            named = str(files[0]) if len(files) == 1 else \
                f"{len(files)} files in {files[0].parent} ({', '.join(file.name for file in files[:3])}" \
                f"{', ...' if len(files) > 3 else ''})"
            log.warning("downstream: %s score%s on %s, which the pretraining corpus (source=%s) also reads: the model "
                        "has seen these test texts in pretraining, so its scores against random_init and references "
                        "are flattered. For a clean comparison, leave the file%s out of the corpus (e.g. "
                        "source.inputs.N.glob)", ", ".join(tasks), "" if len(tasks) > 1 else "s", named,
                        cfg.source.name, "" if len(files) == 1 else "s")


def _build_downstream(cfg: ExperimentConfig, up: Upstream, out: StageOutput) -> None:
    from pretrain.downstream.stage import build_downstream

    d = cfg.downstream
    checkpoint = _checkpoint(d.checkpoint, "downstream.checkpoint").folder if d.checkpoint else up["pretrain"] / "hf"
    references = {name: _checkpoint(path, f"downstream.references.{name}").folder for name, path in d.references.items()}
    build_downstream(d, checkpoint, references, out)


def _publish_needs(cfg: ExperimentConfig) -> tuple[str, ...]:
    # Downstream scores go into the model card when the experiment names tasks.
    return ("corpus", "vocab", "shards", "pretrain", "evaluate") + (("downstream",) if cfg.downstream.tasks else ())


def _card_name(cfg: ExperimentConfig) -> dict:
    # The card, its usage snippet and its reproduce config name the experiment: another name, another card.
    return {"name": cfg.name}


def _check_evaluate_settings(cfg: ExperimentConfig) -> None:
    from pretrain.evaluate.stage import check_evaluate_config

    check_evaluate_config(cfg.evaluate)


def _build_publish(cfg: ExperimentConfig, up: Upstream, out: StageOutput) -> None:
    from pretrain.publish.stage import build_publish

    build_publish(cfg.publish, run_name=cfg.name, source=cfg.source, filters=cfg.filters,
                  masking=cfg.masking, optim=cfg.optim, training=cfg.training,
                  # every key, not `_plain`'s hashed ones: the card's reproduce config needs model.init_from too
                  experiment=OmegaConf.to_container(OmegaConf.structured(cfg)), upstream=up, out=out)


def _check_hub(cfg: ExperimentConfig) -> None:
    from pretrain.publish.hub import check_hub

    if cfg.publish.push_every_n_steps and cfg.trainer.strategy == "fsdp":
        raise ConfigError("publish.push_every_n_steps with trainer.strategy=fsdp: the intermediate pushes need the "
                          "whole model on one rank; push the final model only (publish.push_every_n_steps=0)")
    check_hub(cfg.publish)


def _check_card_scores(cfg: ExperimentConfig) -> None:
    """The card states the scores of the model it publishes: this experiment's own."""
    for key, value in (("evaluate.checkpoint", cfg.evaluate.checkpoint),
                       ("downstream.checkpoint", cfg.downstream.checkpoint if cfg.downstream.tasks else "")):
        if value:
            raise ConfigError(f"{key}={value!r} scores another model, and publish would write its scores into this "
                              f"model's card: drop {key} to publish, or run `bertforge {key.split('.')[0]} "
                              f"{key}=...` on its own")


def _push_publish(cfg: ExperimentConfig, folder: Path) -> None:
    from pretrain.publish.stage import push_publish

    push_publish(cfg.publish, cfg.name, folder)


# Only what the card says names the publish folder: the push keys (push_to_hub, repo_id, revision, endpoint,
# push_every_n_steps, dry_run, private) upload a finished folder and must reuse it.
PUBLISH_CARD_KEYS = ("publish.model_name", "publish.language", "publish.license", "publish.datasets", "publish.tags",
                     "publish.widget_examples")


def _always(*names: str) -> Callable[[ExperimentConfig], tuple[str, ...]]:
    return lambda cfg: names


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    # version 2: stop words per input without langid; sentence/bullet/'#' rules and c4 as their sources
    # version 3: a near duplicate is removed only when close to a kept document (no chains); records without
    # text are listed with the skipped ones
    # 4: BOM stripped, null JSON text listed, bad txt paragraphs skipped whole, c4 end marks, blocklist/URL fixes
    Stage("corpus", _always(), ("source", "filters"), _build_corpus,
          "clean and deduplicate raw text", derived=_corpus_inputs, checks=(_check_executor, _check_corpus_work),
          version=4),
    # version 2: bpe/unigram (Metaspace) tokenizers treat a line break as a space, not a word character;
    # 3: extending a BPE or Unigram vocabulary adds in-context words ("Ġword", "▁word") as vocabulary entries
    # 4: sp_wordpiece gives every character both x and ##x; bpe/unigram masks take the space before them (lstrip);
    # an extension's fertility_before is the base's, not tokenizer.reference's
    Stage("vocab", _always("corpus"), ("tokenizer", "shards.heldout_percent"), _build_vocab,
          "train a subword vocabulary", derived=_vocab_inputs, version=4),
    Stage("shards", _always("corpus", "vocab"), ("shards",), _build_shards,
          "tokenise and pack into memory-mapped rows", derived=_shard_lengths, checks=(_check_executor, _check_shard_work)),
    # version 2: the exported tokenizer's model_max_length is the model's positions, not 512;
    # 3: mlm_nsp/mlm_sop: MLM loss per row, not per micro-batch; init_from keeps the pooler and pair head;
    # 4: init_from replace: special-token ids (and RoBERTa's positions) follow the new tokenizer, rows are matched
    # by word form; the exported tokenizer_config names PreTrainedTokenizerFast (transformers 4.x loads it); val/* masks
    # do not depend on the micro-batch; pair rows count [CLS] and both [SEP] in their mask count, as Google's code
    Stage("pretrain", _always("shards", "vocab"), ("model", "masking", "optim", "training"), _build_pretrain,
          "masked-language-model pretraining (from scratch or model.init_from)", derived=_pretrain_start,
          checks=(_check_pretrain_settings, _check_hub), every_rank=True, version=4),
    # version 2: the masks are drawn 4096 rows at a time from their own seeds, never by evaluate.batch_size's cut
    Stage("evaluate", _evaluate_needs, ("evaluate", "masking"),
          _build_evaluate, "held-out masked-token loss and accuracy", derived=_evaluate_checkpoint,
          checks=(_check_evaluate_settings,), version=2),
    # version 2: words encoded as running text ("Ġ" kept); macro F1 counts every train label
    Stage("downstream", _downstream_needs, ("downstream",), _build_downstream,
          "fine-tune and score on tagging, parsing, NER, classification", derived=_downstream_plan, version=2),
    # version 2: the card says how many held-out rows and test examples were scored
    # 3: the reproduce config keeps model.init_from (a local one read from $BERTFORGE_INIT_FROM), the
    # card describes the published tokenizer itself, and published files name a local start by its folder's name
    Stage("publish", _publish_needs, PUBLISH_CARD_KEYS, _build_publish,
          "an HF folder with a model card, pushed to a hub with publish.push_to_hub", derived=_card_name,
          checks=(_check_hub, _check_card_scores), then=_push_publish, version=3),
)}


def resolve(cfg: ExperimentConfig, target: str) -> list[Stage]:
    """The stages `target` needs, itself last, each once, every stage after all it needs."""
    if target not in STAGES:
        raise ConfigError(f"unknown stage {target!r}: one of {', '.join(STAGES)}")
    order: list[Stage] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise ConfigError(f"the stage graph has a cycle: {' -> '.join((*path, name))}")
        if any(stage.name == name for stage in order):
            return
        for upstream in STAGES[name].needs(cfg):
            visit(upstream, (*path, name))
        order.append(STAGES[name])

    visit(target, ())
    return order


def stage_payload(cfg: ExperimentConfig, stage: Stage) -> dict:
    """The config values (and derived values) that name `stage`'s folder, as plain JSON data."""
    payload = {path: _plain(_lookup(cfg, path)) for path in stage.hashes}
    return payload | (stage.derived(cfg) if stage.derived else {}) | {"stage_version": stage.version}


@dataclass(frozen=True)
class PlannedStage:
    stage: Stage
    output: StageOutput
    upstream: dict[str, Path]


def plan(cfg: ExperimentConfig, target: str) -> list[PlannedStage]:
    """Every stage `target` needs, in order, with the folder each will have, before anything runs.

    Folder names chain: a stage's name hashes its upstream folders' hashes, so the whole plan is
    known from the config (and the input files `Stage.derived` looks at) alone. Every input check in
    `Stage.derived` runs here, so a missing file fails at once, not after hours of upstream work.
    """
    work_dir = Path(cfg.paths.work_dir)
    planned: dict[str, PlannedStage] = {}
    for stage in resolve(cfg, target):
        upstream = {name: planned[name].output.folder for name in stage.needs(cfg)}
        inputs = {name: planned[name].output.digest for name in upstream}
        planned[stage.name] = PlannedStage(stage, StageOutput(work_dir, stage.name, stage_payload(cfg, stage), inputs),
                                           upstream)
    return list(planned.values())


def check_settings(cfg: ExperimentConfig, target: str) -> None:
    """Every `Stage.checks` of the stages `target` needs: the settings no folder name holds (hardware,
    launcher, executor, hub) fail here, before any input is looked at or any stage is run or reused, so
    the same command fails the same way in a fresh work folder and in a finished one. (`plan` leaves
    them out: it also names the folders of runs meant for other machines.) Keys of those stages that
    their own choice never reads are named in a warning: they change nothing."""
    stages = resolve(cfg, target)
    for check in dict.fromkeys(check for stage in stages for check in stage.checks):
        check(cfg)  # each once, though several stages share one (the hub check)
    unused = unused_settings(cfg, {path.split(".")[0] for stage in stages for path in stage.hashes})
    if unused:
        log.warning("%s: %s changes nothing: %s", target, "this setting" if len(unused) == 1 else "these settings",
                    "; ".join(unused))


def run_stages(cfg: ExperimentConfig, target: str) -> dict[str, Path]:
    """Run or reuse every stage `target` needs and `target` itself, each once; stage name -> folder.

    Every rank of a multi-process launch runs this with the same command. Only the first builds the
    single-process stages: another rank waits for those before the plan's last `every_rank` stage
    (pretrain) to be built (`wait_for_builder`), takes part in that one, and returns (none: at once).
    Building corpus or evaluate beside the first process would find its folder busy and end the launch.
    """
    check_settings(cfg, target)
    steps = plan(cfg, target)
    first = first_process()
    if not first:
        shared = [i for i, step in enumerate(steps) if step.stage.every_rank]
        steps = steps[:shared[-1] + 1] if shared else []
    folders: dict[str, Path] = {}
    for step in steps:
        folder = step.output.folder
        if not (first or step.stage.every_rank or is_complete(folder)):
            # corpus, vocab, shards under a launcher that starts every rank at once (submitit, srun): the
            # first process builds them; beside it, this rank would find the folder busy and end the launch
            log.info("%s: waiting for the first process to build %s", step.stage.name, folder)
            wait_for_builder(step.output.work_dir, folder)
        if is_complete(folder):
            log.info("%s: reusing %s%s", step.stage.name, folder, _headline(step.stage.name, folder))
        else:
            try:
                step.stage.build(cfg, step.upstream, step.output)
            except FinishedMeanwhile:  # another run held the lock and finished it after the check above
                log.info("%s: reusing %s, finished by another run meanwhile%s", step.stage.name, folder,
                         _headline(step.stage.name, folder))
        if step.stage.then:
            step.stage.then(cfg, folder)
        folders[step.stage.name] = folder
    return folders


def _headline(stage: str, folder: Path) -> str:
    """ (metric value, ...) of a finished stage: what it found, also when it is only reused."""
    from bertforge.sweep_report import headline_metrics

    shown = list(headline_metrics({stage: str(folder)}).items())[:3]
    text = [f"{name.split('/', 1)[1]} {value:,}" if isinstance(value, int) else f"{name.split('/', 1)[1]} {value:.4g}"
            for name, value in shown]
    return f" ({', '.join(text)})" if text else ""


def run_stage(cfg: ExperimentConfig, target: str) -> Path:
    """`run_stages` for one target, returning only its folder."""
    return run_stages(cfg, target)[target]


def _lookup(cfg: ExperimentConfig, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _plain(value):
    """A config value as JSON data: dataclasses and lists of them become dicts and lists."""
    if hasattr(value, "__dataclass_fields__"):
        return _drop_unset(value, OmegaConf.to_container(OmegaConf.structured(value)))
    return [_plain(v) for v in value] if isinstance(value, list) else value


def _drop_unset(value, plain: dict) -> dict:
    """Leave out fields marked `metadata={"hashed_if_set": True}` while they hold their default (an option
    added later then names no folder unless it is used, so every existing folder keeps its name), fields
    marked `metadata={"hashed": False}` (how the work is split, a label: never the output), and fields their
    section's own choice does not use (`used_when`: a BERT's local_attention_window, a continued run's size)."""
    for f in dataclasses.fields(value):
        child, rule = getattr(value, f.name), f.metadata.get("used_when")
        if f.metadata.get("hashed") is False or (f.metadata.get("hashed_if_set") and child == _field_default(f)) \
                or (rule is not None and not used(rule, getattr(value, rule[0]))):
            plain.pop(f.name, None)
        elif hasattr(child, "__dataclass_fields__") and isinstance(plain.get(f.name), dict):
            _drop_unset(child, plain[f.name])
    return plain


def _field_default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
