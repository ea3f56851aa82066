"""The publish stage: an HF folder (weights, config, tokenizer) with a model card and the experiment's config;
then, with `publish.push_to_hub`, the push of that finished folder to a hub (`push_publish`)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from bertforge.common.stage_folder import StageOutput, read_manifest, stage_folder, write_json_atomic
from corpora.config import FiltersConfig, SourceConfig
from corpora.documents import iter_documents
from omegaconf import OmegaConf

from pretrain.config import MaskingConfig, OptimConfig, PublishConfig, TrainingConfig
from pretrain.publish.card import (CONFIG_FILE, CardInputs, ModelCardFacts, for_hub, model_card, public_start,
                                   reproducible_config, tokenizer_facts, widget_sentences)
from bertforge.common.ranks import first_process
from pretrain.publish.hub import hub_endpoint, push_published, step_plan

log = logging.getLogger("bertforge.publish")

MODEL_FILES = "model_files"  # the manifest key: the files the stage wrote into model/


def build_publish(publish: PublishConfig, *, run_name: str, source: SourceConfig, filters: FiltersConfig,
                  masking: MaskingConfig, optim: OptimConfig, training: TrainingConfig,
                  experiment: dict, upstream: dict[str, Path], out: StageOutput) -> None:
    """Copy the pretrain stage's HF export into `out`/model with a model card made from every upstream
    stage's manifest (`upstream`: corpus, vocab, shards, pretrain, evaluate and, when it ran, downstream
    folders) and `bertforge_config.yaml` (`experiment`, as plain data, made portable). The manifest lists
    the model folder's files (`model_files`, paths relative to it): what `push_publish` uploads. A local
    `model.init_from` is named by its folder's last component in the card and `init_from.json` (`public_start`)."""
    from transformers import AutoTokenizer

    hf = upstream["pretrain"] / "hf"
    heldout = (doc["text"] for doc in iter_documents(upstream["corpus"], "heldout",
                                                      experiment["shards"]["heldout_percent"]))
    downstream = upstream.get("downstream")
    published_tokenizer = AutoTokenizer.from_pretrained(str(hf))
    config = reproducible_config(experiment)
    found = CardInputs(
        manifests={name: read_manifest(path) for name, path in upstream.items()},
        corpus_report=json.loads((upstream["corpus"] / "report.json").read_text(encoding="utf-8")),
        architecture=json.loads((hf / "config.json").read_text(encoding="utf-8")),
        widgets=widget_sentences(heldout, published_tokenizer, publish.widget_examples),
        tokenizer=tokenizer_facts(published_tokenizer),
        downstream=json.loads((downstream / "metrics.json").read_text(encoding="utf-8")) if downstream else None,
        reproduce_init_from=config.get("model", {}).get("init_from", ""))
    card = model_card(ModelCardFacts(publish, run_name, source, filters, masking, optim, training), found)
    with out.build() as build:
        model = build.tmp / "model"
        shutil.copytree(hf, model)
        start = model / "init_from.json"
        if start.is_file():  # the pretrain export names the start as the config did: maybe a path on this machine
            write_json_atomic(start, public_start(json.loads(start.read_text(encoding="utf-8"))))
        (model / "README.md").write_text(card, encoding="utf-8")
        (model / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.create(config)), encoding="utf-8")
        # What a push sends: only these, whatever is put into the folder later (`Upload.of`).
        build.manifest[MODEL_FILES] = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file())
    log.info("publish: %s", out.folder / "model")


def push_publish(publish: PublishConfig, run_name: str, folder: Path) -> str | None:
    """Push the finished publish folder (built now or reused) when `publish.push_to_hub` or
    `publish.dry_run` asks; the card pushed lists the step branches that hold this model's steps. With
    `publish.push_every_n_steps`, says (a warning on a real push) when the pretrain stage pushed none to this
    repo (`steps_pushed`). Only the files the stage wrote (its manifest's `model_files`) are pushed.
    Returns the commit URL."""
    if not (publish.push_to_hub or publish.dry_run) or not first_process():
        return None
    model_dir = folder / "model"
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    manifest = read_manifest(folder)
    message = f"bertforge {run_name}: publish stage {manifest['hash']}"
    name = publish.model_name or run_name
    pretrain_hash = manifest["inputs"]["pretrain"]
    steps_note, rollback_steps = "", []
    if publish.push_every_n_steps:  # else the pretrain stage was never asked to push steps
        pretrain = stage_folder(folder.parent.parent, "pretrain", pretrain_hash)  # beside this one's stage folder
        pushed, note = steps_pushed(publish, pretrain)
        if pushed:  # the steps a rollback abandoned are not this model's (`holds_step`)
            rollback_steps = [rollback["to_step"] for rollback in read_manifest(pretrain).get("rollbacks", [])]
        if not pushed and not publish.dry_run:
            log.warning("publish: publish.push_every_n_steps=%d: intermediate checkpoints not pushed: %s",
                        publish.push_every_n_steps, note)
        steps_note = note if pushed else f"none will be pushed: {note}"
    return push_published(publish, model_dir, message,
                          lambda branches: for_hub(card, name, publish.repo_id, branches, publish.revision),
                          pretrain_hash=pretrain_hash, rollback_steps=rollback_steps, steps_note=steps_note,
                          files=manifest.get(MODEL_FILES))  # None: a folder built before the list was kept


def steps_pushed(publish: PublishConfig, pretrain: Path) -> tuple[bool, str]:
    """Whether the run that trained `pretrain` (a finished stage folder) pushed its steps to `publish.repo_id` on
    this hub (`hub_endpoint`) every `publish.push_every_n_steps` (its manifest's `hub_revisions`; one from before
    the endpoint was recorded names no hub, so it does not count), and a line saying what happened.

    Only the run that trains the stage pushes steps: a folder this command found finished (trained by an
    earlier command, or by a dry run, which never pushes) gets none now, and its step exports are not kept."""
    record = read_manifest(pretrain).get("hub_revisions") if (pretrain / "manifest.json").is_file() else None
    n = publish.push_every_n_steps
    endpoint = hub_endpoint(publish)
    if record and (record.get("repo_id"), record.get("endpoint"), record.get("every_n_steps")) == \
            (publish.repo_id, endpoint, n):
        return True, f"{step_plan(publish)}, pushed by the run that trained {pretrain.name} (not pushed again)"
    earlier = (f"pushing every {record['every_n_steps']} steps to {record['repo_id']} on "
               f"{record.get('endpoint') or 'a hub it did not record'}" if record else "without pushing steps")
    return False, (f"the pretrain stage {pretrain} is already finished, trained {earlier}, and only the run that "
                   "trains it pushes steps. Its step exports are not kept (only hf/, the last step, and "
                   "checkpoints/*.ckpt: the newest checkpoint.keep_last and checkpoint.pin_steps); to push them, "
                   "train again: move that folder aside and rerun this command")
