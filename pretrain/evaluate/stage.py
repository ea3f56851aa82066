"""The evaluate stage: held-out masked-token loss and accuracy of an HF checkpoint, and of the
same architecture untrained, so every score comes with its floor."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM

from bertforge.common.errors import ConfigError
from bertforge.common.stage_folder import StageOutput, read_manifest, write_json_atomic
from corpora.shards.rows import file_sha256, load_rows
from pretrain.config import EvaluateConfig, MaskingConfig
from pretrain.heldout import row_batches, score_heldout
from pretrain.masking import Masker
from pretrain.word_starts import load_word_start_table

log = logging.getLogger("bertforge.evaluate")


def build_evaluate(evaluate: EvaluateConfig, masking: MaskingConfig, seed: int, checkpoint: Path, own_model: bool,
                   shards_dir: Path, out: StageOutput) -> None:
    """Score `checkpoint` on the shards folder's held-out rows, beside the same architecture untrained
    (built from the checkpoint's config, initialised from `seed`).

    `own_model`: the checkpoint is this experiment's pretrain export; otherwise (`evaluate.checkpoint`)
    it must use the tokenizer the shards were built with.
    """
    check_evaluate_config(evaluate)
    fmt = read_manifest(shards_dir)["format"]
    if not own_model:
        _check_same_vocabulary(checkpoint, fmt)
    rows = load_rows(shards_dir, "heldout")
    with out.build() as build:
        trained = AutoModelForMaskedLM.from_pretrained(str(checkpoint))
        torch.manual_seed(seed)
        untrained = AutoModelForMaskedLM.from_config(trained.config)
        # The run's masking (whole words, spans, 80/10/10) at evaluate.mask_ratio.
        word_starts = None
        if masking.whole_word:  # the checkpoint folder holds its tokenizer (checked above for a foreign one)
            table = load_word_start_table(checkpoint / "tokenizer.json", trained.config.vocab_size)
            word_starts = torch.from_numpy(table)
        masker = Masker.from_config(masking, fmt["special_ids"], fmt["vocab_size"], fmt["maskable_share"],
                                    word_starts, ratio=evaluate.mask_ratio)
        batches = row_batches(rows, evaluate.batch_size, evaluate.max_rows)
        metrics = {"checkpoint": str(checkpoint), "heldout_rows": len(rows),
                   "trained": score_heldout(trained, batches, masker, evaluate.seed, evaluate.mask_draws),
                   "untrained": score_heldout(untrained, batches, masker, evaluate.seed, evaluate.mask_draws)}
        write_json_atomic(build.tmp / "metrics.json", metrics)
        build.manifest["counts"] = metrics
    log.info("evaluate: held-out accuracy %.3f (untrained %.3f)", metrics["trained"]["accuracy"],
             metrics["untrained"]["accuracy"])


def check_evaluate_config(evaluate: EvaluateConfig) -> None:
    """ConfigError naming the key for an `evaluate` value that scores nothing (a metrics.json of zeros that
    publish would put in the card) or fails mid-scoring: from the config alone, so planning can ask."""
    for key in ("batch_size", "mask_draws"):
        if getattr(evaluate, key) < 1:
            raise ConfigError(f"evaluate.{key}={getattr(evaluate, key)}: give at least 1 "
                              f"(default {getattr(EvaluateConfig, key)})")
    if evaluate.max_rows < 0:
        raise ConfigError(f"evaluate.max_rows={evaluate.max_rows}: give 0 (every held-out row) or a row count")
    if not 0 < evaluate.mask_ratio < 1:  # also refuses NaN
        raise ConfigError(f"evaluate.mask_ratio={evaluate.mask_ratio} must lie strictly between 0 and 1 (BERT: 0.15)")


def _check_same_vocabulary(checkpoint: Path, fmt: dict) -> None:
    tokenizer = checkpoint / "tokenizer.json"
    if not checkpoint.is_dir():
        raise ConfigError(f"evaluate.checkpoint={str(checkpoint)!r} is not a folder: give an HF model folder")
    if not tokenizer.exists() or file_sha256(tokenizer) != fmt["tokenizer_sha256"]:
        raise ConfigError(f"evaluate.checkpoint={str(checkpoint)!r} does not use the tokenizer these shards "
                          "were built with: evaluate it with an experiment that uses its vocabulary")
