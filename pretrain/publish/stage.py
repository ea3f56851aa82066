"""The publish stage: an HF folder (weights, config, tokenizer) with a model card and the experiment's config;
then, with `publish.push_to_hub`, the push of that finished folder to a hub (`push_publish`)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from bertforge.common.stage_folder import StageOutput, read_manifest
from corpora.config import FiltersConfig, SourceConfig, TokenizerConfig
from corpora.documents import iter_documents
from omegaconf import OmegaConf

from pretrain.config import MaskingConfig, OptimConfig, PublishConfig, TrainingConfig
from pretrain.publish.card import (CONFIG_FILE, CardInputs, ModelCardFacts, for_hub, model_card, reproducible_config,
                                   widget_sentences)
from pretrain.publish.hub import first_process, push_published

log = logging.getLogger("bertforge.publish")


def build_publish(publish: PublishConfig, *, run_name: str, source: SourceConfig, filters: FiltersConfig,
                  tokenizer: TokenizerConfig, masking: MaskingConfig, optim: OptimConfig, training: TrainingConfig,
                  experiment: dict, upstream: dict[str, Path], out: StageOutput) -> None:
    """Copy the pretrain stage's HF export into `out`/model with a model card made from every upstream
    stage's manifest (`upstream`: corpus, vocab, shards, pretrain, evaluate and, when it ran, downstream
    folders) and `bertforge_config.yaml` (`experiment`, as plain data, made portable)."""
    from transformers import AutoTokenizer

    hf = upstream["pretrain"] / "hf"
    heldout = (doc["text"] for doc in iter_documents(upstream["corpus"], "heldout",
                                                      experiment["shards"]["heldout_percent"]))
    downstream = upstream.get("downstream")
    found = CardInputs(
        manifests={name: read_manifest(path) for name, path in upstream.items()},
        corpus_report=json.loads((upstream["corpus"] / "report.json").read_text(encoding="utf-8")),
        architecture=json.loads((hf / "config.json").read_text(encoding="utf-8")),
        widgets=widget_sentences(heldout, AutoTokenizer.from_pretrained(str(hf)), publish.widget_examples),
        downstream=json.loads((downstream / "metrics.json").read_text(encoding="utf-8")) if downstream else None)
    card = model_card(ModelCardFacts(publish, run_name, source, filters, tokenizer, masking, optim, training), found)
    with out.build() as build:
        shutil.copytree(hf, build.tmp / "model")
        (build.tmp / "model" / "README.md").write_text(card, encoding="utf-8")
        (build.tmp / "model" / CONFIG_FILE).write_text(
            OmegaConf.to_yaml(OmegaConf.create(reproducible_config(experiment))), encoding="utf-8")
    log.info("publish: %s", out.folder / "model")


def push_publish(publish: PublishConfig, run_name: str, folder: Path) -> str | None:
    """Push the finished publish folder (built now or reused) when `publish.push_to_hub` or
    `publish.dry_run` asks; the card pushed lists the repo's step revisions. Returns the commit URL."""
    if not (publish.push_to_hub or publish.dry_run) or not first_process():
        return None
    model_dir = folder / "model"
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    message = f"bertforge {run_name}: publish stage {read_manifest(folder)['hash']}"
    name = publish.model_name or run_name
    return push_published(publish, model_dir, message, lambda branches: for_hub(card, name, publish.repo_id, branches))
