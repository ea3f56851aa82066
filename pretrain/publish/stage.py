"""The publish stage: an HF folder (weights, config, tokenizer) with a model card. Upload comes later."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from bertforge.common.checkpoints import is_hub_id
from bertforge.common.stage_folder import StageOutput, read_manifest
from corpora.config import FiltersConfig, SourceConfig, TokenizerConfig
from pretrain.config import MaskingConfig, OptimConfig, PublishConfig, TrainingConfig

log = logging.getLogger("bertforge.publish")


def build_publish(publish: PublishConfig, *, run_name: str, source: SourceConfig, filters: FiltersConfig,
                  tokenizer: TokenizerConfig, masking: MaskingConfig, optim: OptimConfig, training: TrainingConfig,
                  upstream: dict[str, Path], out: StageOutput) -> None:
    """Copy the pretrain stage's HF export into `out`/model with a model card made from every upstream
    stage's manifest (`upstream`: corpus, vocab, shards, pretrain and evaluate folders)."""
    manifests = {name: read_manifest(path) for name, path in upstream.items()}
    corpus_report = json.loads((upstream["corpus"] / "report.json").read_text(encoding="utf-8"))
    architecture = json.loads((upstream["pretrain"] / "hf" / "config.json").read_text(encoding="utf-8"))
    card = model_card(ModelCardFacts(publish, run_name, source, filters, tokenizer, masking, optim, training),
                      manifests, corpus_report, architecture)
    with out.build() as build:
        shutil.copytree(upstream["pretrain"] / "hf", build.tmp / "model")
        (build.tmp / "model" / "README.md").write_text(card, encoding="utf-8")
    log.info("publish: %s", out.folder / "model")


@dataclass(frozen=True)
class ModelCardFacts:
    """The config sections a model card quotes (the architecture comes from the exported config.json)."""

    publish: PublishConfig
    run_name: str
    source: SourceConfig
    filters: FiltersConfig
    tokenizer: TokenizerConfig
    masking: MaskingConfig
    optim: OptimConfig
    training: TrainingConfig


def model_card(cfg: ModelCardFacts, manifests: dict, corpus_report: dict, architecture: dict) -> str:
    """A Hugging Face model card: what data, which vocabulary, how it was trained (from scratch, or from
    which checkpoint), how it scores. `architecture` is the exported model's config.json."""
    vocab, shards = manifests["vocab"]["counts"], manifests["shards"]
    train, scores = manifests["pretrain"]["counts"], manifests["evaluate"]["counts"]
    name = cfg.publish.model_name or cfg.run_name
    o, a = cfg.optim, architecture
    hardware = manifests["pretrain"]["hardware"]
    start = manifests["pretrain"].get("init_from")
    removed = ", ".join(f"{rule}: {s['documents']}" for rule, s in sorted(corpus_report["removed_by_rule"].items()))
    lines = [
        "---",
        f"language: {cfg.publish.language}" if cfg.publish.language else "language: []",
        f"license: {cfg.publish.license}",
        "library_name: transformers",
        "pipeline_tag: fill-mask",
        "tags: [bertforge, masked-lm]",
        *([f"base_model: {start['checkpoint']}"] if start and is_hub_id(start["checkpoint"]) else []),
        "---", "",
        f"# {name}", "",
        f"A {a['model_type'].upper()} masked-language model ({a['num_hidden_layers']} layers, hidden size "
        f"{a['hidden_size']}, {a['num_attention_heads']} heads, {train['parameters']:,} parameters) "
        + (_continued_from(start) if start else "pretrained from scratch with bertforge."), "",
        "## Data", "",
        f"- Source: `{cfg.source.name}` ({', '.join(i.format for i in cfg.source.inputs)})",
        f"- Documents: {corpus_report['documents_kept']} kept of {corpus_report['documents_in']} "
        f"({corpus_report['kept']['words']:,} words); removed by rule: {removed or 'none'}",
        f"- Filters preset: `{cfg.filters.name}`; exact deduplication: {cfg.filters.exact_dedup}", "",
        "## Vocabulary", "",
        f"- {cfg.tokenizer.model}, {vocab['vocab_size']} tokens, lowercase={cfg.tokenizer.lowercase}, "
        f"strip_accents={cfg.tokenizer.strip_accents}",
        f"- Held-out fertility {vocab['fertility']:.3f} subwords/word, UNK rate {vocab['unk_rate']:.4f}, "
        f"{vocab['chars_per_token']:.2f} characters/token", "",
        "## Training", "",
        f"- {train['steps']} steps x {cfg.training.batch_size} sequences x {shards['format']['seq_len']} tokens "
        f"= {train['tokens_trained']:,} tokens; precision {hardware['precision']} on "
        f"{hardware['devices'] * hardware['num_nodes']} {hardware['accelerator'].upper()} device(s)",
        f"- Masking: {cfg.masking.ratio:.0%} of tokens ({cfg.masking.replace_with_mask:.0%} [MASK], "
        f"{cfg.masking.replace_with_random:.0%} random)",
        f"- {o.name} lr {o.lr}, weight decay {o.weight_decay}, {o.warmup_steps} warmup steps, {o.schedule} schedule",
        f"- Train loss {train['first_loss']:.3f} -> {train['last_loss']:.3f}", "",
        "## Evaluation (held-out masked tokens)", "",
        "| model | loss | accuracy |", "|---|---:|---:|",
        f"| this model | {scores['trained']['loss']:.3f} | {scores['trained']['accuracy']:.3f} |",
        f"| same architecture, untrained | {scores['untrained']['loss']:.3f} | "
        f"{scores['untrained']['accuracy']:.3f} |", "",
        "## Use", "",
        "```python",
        "from transformers import pipeline",
        f'fill = pipeline("fill-mask", model="path/or/hub-id/of/{name}")',
        "```", "",
    ]
    return "\n".join(lines)


def _continued_from(start: dict) -> str:
    rows = ", ".join(f"{route} {count:,}" for route, count in start["rows"].items() if count)
    return (f"continued with bertforge from `{start['checkpoint']}` (sha256 {start['sha256']}"
            + (f", bertforge {start['stage']} stage {start['stage_hash']}" if "stage" in start else "")
            + f"); vocabulary mode {start['vocab_mode']}, embedding rows: {rows} "
            f"(transfer {start['vocab_transfer']}); new weights: {', '.join(start['weights']['new']) or 'none'}.")
