"""The pretrain stage: shards -> Lightning checkpoints + an HF-format export + logs and a loss curve."""

from __future__ import annotations

import csv
import logging
import os
import shutil
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from torch.utils.data import DataLoader

from corpora.shards_stage import file_sha256, load_rows, run_shards
from corpora.stagedir import build_stage, read_manifest, stage_folder, reuse
from corpora.vocab_stage import run_vocab
from pretrain.data import PackedRows
from pretrain.model import build_model
from pretrain.module import MaskedLMModule

log = logging.getLogger("bertforge.pretrain")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def run_pretrain(cfg) -> Path:
    """Train (or reuse) the model for `cfg`; upstream stages run first when they are missing."""
    from pretrain.config import section

    shards_dir, vocab_dir = run_shards(cfg), run_vocab(cfg)
    # impl and logger are left out of the hash: they change speed and bookkeeping, not the model.
    payload = section(cfg, "model", "masking", "optim", "trainer")
    inputs = {"shards": read_manifest(shards_dir)["hash"], "vocab": read_manifest(vocab_dir)["hash"]}
    folder = stage_folder(cfg.paths.work_dir, "pretrain", payload, inputs)
    if reuse(folder, log):
        return folder
    fmt = read_manifest(shards_dir)["format"]
    if fmt["tokenizer_sha256"] != file_sha256(vocab_dir / "tokenizer.json"):
        raise ValueError(f"{shards_dir} was built with another tokenizer than {vocab_dir}: rebuild the shards")
    torch.set_float32_matmul_precision(cfg.impl.matmul_precision)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    special = fmt["special_ids"]
    model = build_model(cfg.model, fmt["vocab_size"], special["[PAD]"], fmt["seq_len"])
    module = MaskedLMModule(model, cfg.masking, cfg.optim, cfg.trainer.max_steps, special["[MASK]"],
                            fmt["vocab_size"], sorted(special.values()))
    rows = PackedRows(load_rows(shards_dir, "train"), seed=cfg.trainer.seed)
    loader = DataLoader(rows, batch_size=cfg.trainer.batch_size, shuffle=False, drop_last=True,
                        num_workers=cfg.impl.num_workers, pin_memory=torch.cuda.is_available())
    with build_stage(cfg.paths.work_dir, "pretrain", payload, inputs) as build:
        trainer = L.Trainer(
            max_steps=cfg.trainer.max_steps, accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices, precision=cfg.trainer.precision,
            gradient_clip_val=cfg.optim.grad_clip or None, log_every_n_steps=cfg.trainer.log_every_n_steps,
            logger=_loggers(cfg, build.tmp, payload), default_root_dir=str(build.tmp),
            callbacks=[
                ModelCheckpoint(dirpath=str(build.tmp / "checkpoints"), filename="step{step}",
                                every_n_train_steps=cfg.trainer.checkpoint_every_n_steps, save_last=True,
                                save_top_k=1, auto_insert_metric_name=False),
                LearningRateMonitor(logging_interval="step"),
            ],
            enable_progress_bar=False, enable_model_summary=False,
        )
        trainer.fit(module, loader)
        _finish_loggers(trainer)
        export_hf(module.model, vocab_dir, build.tmp / "hf")
        curve = read_loss_curve(build.tmp)
        plot_loss_curve(curve, build.tmp / "loss_curve.png", cfg.name)
        build.manifest["counts"] = {
            "steps": trainer.global_step,
            "tokens_trained": trainer.global_step * cfg.trainer.batch_size * fmt["seq_len"],
            "first_loss": curve[0][1] if curve else None,
            "last_loss": curve[-1][1] if curve else None,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    return folder


def _loggers(cfg, out: Path, payload: dict) -> list:
    loggers = [CSVLogger(str(out), name="logs", version=0)]
    if cfg.logger.wandb:
        # Offline unless the user has a key: runs sync later with `wandb sync`. The key itself is
        # read by wandb from the environment and never passed through our config.
        offline = not os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "offline"
        loggers.append(WandbLogger(project=cfg.logger.project, name=cfg.name, save_dir=str(out),
                                   offline=offline, config=payload))
    return loggers


def _finish_loggers(trainer) -> None:
    """Close the wandb run before the stage folder is renamed into place."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def export_hf(model, vocab_dir: Path, out: Path) -> None:
    """Save weights (safetensors) and config, plus the tokenizer files, as one loadable HF folder."""
    model.save_pretrained(str(out), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (vocab_dir / name).exists():
            shutil.copy2(vocab_dir / name, out / name)


def read_loss_curve(stage_dir: Path) -> list[tuple[int, float]]:
    """(step, train/loss) pairs from the CSV log."""
    path = Path(stage_dir) / "logs" / "version_0" / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(handle) if r.get("train/loss")]


def plot_loss_curve(curve: list[tuple[int, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([s for s, _ in curve], [v for _, v in curve])
    ax.set_xlabel("step")
    ax.set_ylabel("train/loss (masked tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
