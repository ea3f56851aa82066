"""The evaluate stage: held-out masked-token loss and accuracy of an HF checkpoint, and of the
same architecture untrained, so every score comes with its floor."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM

from bertforge.common.errors import ConfigError
from bertforge.common.stage_folder import StageOutput, read_manifest, write_json_atomic
from corpora.shards.rows import file_sha256, load_rows
from pretrain.config import EvaluateConfig, MaskingConfig, ModelConfig
from pretrain.masking import mask_fixed_count, masked_per_row
from pretrain.model import build_model

log = logging.getLogger("bertforge.evaluate")


@torch.no_grad()
def evaluate_mlm(model, rows, fmt: dict, eval_cfg) -> dict:
    """Mean masked-token loss and accuracy over held-out rows, each masked `eval_cfg.mask_draws` times
    with masks fixed by `eval_cfg.seed`.

    Masks are drawn as in training (a fixed count per row); the model runs its own full head and the
    masked positions are read from its logits, so any HF masked-LM is scored exactly like ours.
    """
    model.eval()
    special = torch.tensor(sorted(fmt["special_ids"].values()))
    generator = torch.Generator().manual_seed(eval_cfg.seed)
    seq_len = rows.shape[1]
    per_row = masked_per_row(eval_cfg.mask_ratio, seq_len, fmt["maskable_share"].get(str(seq_len), 1.0))
    limit = eval_cfg.max_rows or len(rows)
    loss_sum, correct, count = 0.0, 0, 0
    # Several mask draws per row: a small held-out split still gives a stable estimate.
    starts = range(0, min(limit, len(rows)), eval_cfg.batch_size)
    for start in [s for _ in range(eval_cfg.mask_draws) for s in starts]:
        input_ids = torch.as_tensor(rows[start:min(start + eval_cfg.batch_size, limit)].astype("int64"))
        batch = mask_fixed_count(input_ids, per_row, fmt["special_ids"]["mask"], fmt["vocab_size"], special,
                                 generator=generator)
        logits = model(input_ids=batch.input_ids).logits  # (batch, seq, vocab)
        index = batch.positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])  # (batch, k, vocab)
        picked, targets = logits.gather(1, index).float().flatten(0, 1), batch.targets.flatten()  # (batch*k, ...)
        loss_sum += F.cross_entropy(picked, targets, reduction="sum").item()
        correct += (picked.argmax(-1) == targets).sum().item()
        count += targets.numel()
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "masked_tokens": count}


def build_evaluate(evaluate: EvaluateConfig, masking: MaskingConfig, model_cfg: ModelConfig, seed: int,
                   checkpoint: Path, own_model: bool, shards_dir: Path, out: StageOutput) -> None:
    """Score `checkpoint` on the shards folder's held-out rows, beside the same architecture untrained.

    `own_model`: the checkpoint is this experiment's pretrain export, so its untrained twin is built
    from `model_cfg` (seeded with `seed`); otherwise (`evaluate.checkpoint`) from the checkpoint's config.
    """
    fmt = read_manifest(shards_dir)["format"]
    if not own_model:
        _check_same_vocabulary(checkpoint, fmt)
    rows = load_rows(shards_dir, "heldout")
    with out.build() as build:
        trained = AutoModelForMaskedLM.from_pretrained(str(checkpoint))
        torch.manual_seed(seed)
        untrained = build_model(model_cfg, fmt["vocab_size"], fmt["special_ids"]["pad"], fmt["seq_len"]) \
            if own_model else type(trained)(trained.config)
        metrics = {"checkpoint": str(checkpoint), "heldout_rows": len(rows),
                   "trained": evaluate_mlm(trained, rows, fmt, evaluate),
                   "untrained": evaluate_mlm(untrained, rows, fmt, evaluate)}
        write_json_atomic(build.tmp / "metrics.json", metrics)
        build.manifest["counts"] = metrics
    log.info("evaluate: held-out accuracy %.3f (untrained %.3f)", metrics["trained"]["accuracy"],
             metrics["untrained"]["accuracy"])


def _check_same_vocabulary(checkpoint: Path, fmt: dict) -> None:
    tokenizer = checkpoint / "tokenizer.json"
    if not checkpoint.is_dir():
        raise ConfigError(f"evaluate.checkpoint={str(checkpoint)!r} is not a folder: give an HF model folder")
    if not tokenizer.exists() or file_sha256(tokenizer) != fmt["tokenizer_sha256"]:
        raise ConfigError(f"evaluate.checkpoint={str(checkpoint)!r} does not use the tokenizer these shards "
                          "were built with: evaluate it with an experiment that uses its vocabulary")
