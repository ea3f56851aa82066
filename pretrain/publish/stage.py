"""The publish stage: an HF folder (weights, config, tokenizer) with a model card. Upload comes later."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from corpora.corpus.stage import run_corpus
from corpora.shards.stage import run_shards
from bertforge.common.stage_folder import build_stage, read_manifest, stage_folder, reuse
from corpora.vocab.stage import run_vocab
from pretrain.evaluate.stage import run_evaluate
from pretrain.train_stage import run_pretrain

log = logging.getLogger("bertforge.publish")


def run_publish(cfg) -> Path:
    """Export (or reuse) the publishable model folder `<stage>/model` for `cfg`."""
    from pretrain.config import section

    folders = {name: fn(cfg) for name, fn in (("corpus", run_corpus), ("vocab", run_vocab),
                                               ("shards", run_shards), ("pretrain", run_pretrain),
                                               ("evaluate", run_evaluate))}
    manifests = {name: read_manifest(path) for name, path in folders.items()}
    payload = section(cfg, "publish")
    inputs = {name: m["hash"] for name, m in manifests.items()}
    folder = stage_folder(cfg.paths.work_dir, "publish", payload, inputs)
    if reuse(folder, log):
        return folder
    with build_stage(cfg.paths.work_dir, "publish", payload, inputs) as build:
        shutil.copytree(folders["pretrain"] / "hf", build.tmp / "model")
        card = model_card(cfg, manifests, json.loads((folders["corpus"] / "report.json").read_text()))
        (build.tmp / "model" / "README.md").write_text(card, encoding="utf-8")
    log.info("publish: %s", folder / "model")
    return folder


def model_card(cfg, manifests: dict, corpus_report: dict) -> str:
    """A Hugging Face model card: what data, which vocabulary, how it was trained, how it scores."""
    vocab, shards = manifests["vocab"]["counts"], manifests["shards"]
    train, scores = manifests["pretrain"]["counts"], manifests["evaluate"]["counts"]
    name = cfg.publish.model_name or cfg.name
    m, t, o = cfg.model, cfg.trainer, cfg.optim
    removed = ", ".join(f"{rule}: {s['documents']}" for rule, s in sorted(corpus_report["removed_by_rule"].items()))
    lines = [
        "---",
        f"language: {cfg.publish.language}" if cfg.publish.language else "language: []",
        f"license: {cfg.publish.license}",
        "library_name: transformers",
        "pipeline_tag: fill-mask",
        "tags: [bertforge, masked-lm]",
        "---", "",
        f"# {name}", "",
        f"A {m.arch.upper()} masked-language model ({m.num_layers} layers, hidden size {m.hidden_size}, "
        f"{m.num_heads} heads, {train['parameters']:,} parameters) pretrained from scratch with bertforge.", "",
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
        f"- {train['steps']} steps x {t.batch_size} sequences x {shards['format']['seq_len']} tokens "
        f"= {train['tokens_trained']:,} tokens; precision {t.precision}",
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
