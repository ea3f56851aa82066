"""The pretrain stage: shards -> Lightning checkpoints + an HF-format export + logs and a loss curve."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
from pathlib import Path

import lightning as L
import torch
from transformers import AutoModelForMaskedLM
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from bertforge.common.checkpoints import Checkpoint, usable_positions
from bertforge.common.errors import ConfigError, Preempted, TrainingDiverged
from bertforge.common.stage_folder import StageOutput, read_manifest, write_json_atomic
from corpora.shards.rows import file_sha256, load_rows
from corpora.shards.dropout_copies import load_dropout_copies
from corpora.shards.pairs import load_pairs
from corpora.shards.static_masks import load_static_masks
from pretrain.config import (CheckpointConfig, ImplConfig, LoggerConfig, MaskingConfig, ModelConfig, OptimConfig,
                             PublishConfig, TrainerConfig, TrainingConfig)
from pretrain.data import PackedRows, PhasedData
from pretrain.distributed import (checkpoint_step, last_checkpoint, merge_metrics, plan_launch,
                                  requeue_command, set_aside_metrics,
                                  trainer_arguments, unsharded_copy, wait_for_stage)
from pretrain.flops import flops_per_token
from pretrain.checkpoints import (PinnedCheckpoints, UntimedCheckpoint, newest_checkpoint_up_to,
                                  newest_valid_checkpoint, remove_partial_saves, set_aside_after)
from pretrain.heldout import row_batches
from pretrain.hub_push import HubCheckpointPush
from pretrain.publish.hub import stage_mark
from pretrain.init_from import carry_pair_head, load_start_model
from pretrain.model import attn_implementation, build_model, check_model_config, use_bf16_layer_norms
from pretrain.module import MaskedLMModule
from pretrain.objectives import as_pretraining_model
from pretrain.phases import plan_phases
from pretrain.preemption import StopOnPreemption
from pretrain.rank_sampler import MicroBatchSeeding, PhaseAccumulation
from pretrain.signal_flag import flag_on_signal
from pretrain.step_metrics import StepMetricsLogger
from pretrain.validation import HeldoutValidation
from pretrain.word_starts import load_word_start_table

log = logging.getLogger("bertforge.pretrain")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build_pretrain(*, model_cfg: ModelConfig, masking: MaskingConfig, optim: OptimConfig, training: TrainingConfig,
                   trainer: TrainerConfig, impl: ImplConfig, logger: LoggerConfig, checkpoint: CheckpointConfig,
                   run_name: str, shards_dir: Path, vocab_dir: Path, out: StageOutput,
                   start: Checkpoint | None = None, hub: PublishConfig | None = None) -> None:
    """Train the model on the shards folder's rows into `out`: checkpoints, logs, an HF export (`hf/`).

    `model_cfg`, `masking`, `optim` and `training` decide the model; `trainer`, `impl`, `logger` and
    `checkpoint` only where, how fast and how visibly it is trained (the global batch, data order and
    masks are the same on any world size). `start`: continue this checkpoint (`model.init_from`) instead
    of building `model_cfg` from scratch. `hub`: push the HF export every `hub.push_every_n_steps` to a
    branch of `hub.repo_id` (checked with the server before any stage ran).
    """
    # Devices, strategy and cluster variables before anything heavy: a wrong launch fails at once, before
    # any process group starts.
    launch = plan_launch(trainer)
    # From here on the cluster's warning signal only raises a flag (a resumable run stops at a step boundary).
    with flag_on_signal() as preemption:
        fmt = read_manifest(shards_dir)["format"]
        plan = check_start_up(model_cfg, optim, training, trainer, shards_dir, vocab_dir, fmt, launch.world_size,
                              from_scratch=start is None)
        torch.set_float32_matmul_precision(impl.matmul_precision)
        if impl.cpu_threads:
            torch.set_num_threads(impl.cpu_threads)
        L.seed_everything(training.seed, workers=True, verbose=False)
        special = fmt["special_ids"]
        attention = attn_implementation(impl.attention)
        longest = max(p.seq_len for p in plan)
        started_from = None
        if start is None:
            model = build_model(model_cfg, fmt["vocab_size"], special["pad"], longest, special,
                                attention=impl.attention)
        else:
            model, started_from = load_start_model(start, vocab_dir, model_cfg.vocab_mode, model_cfg.vocab_transfer,
                                                   model_cfg.pad_vocab_to_multiple_of, attention, training.seed)
            check_positions(model.config, longest)
        if training.objective != "mlm":  # + the NSP/SOP head: a BertForPreTraining, exported as such
            model = as_pretraining_model(model, attention)
            if start is not None:  # a Google or bertforge NSP checkpoint has a trained pooler and pair head
                carry_pair_head(model, started_from)
        if impl.bf16_layer_norm:
            use_bf16_layer_norms(model)
        word_starts = torch.from_numpy(load_word_start_table(vocab_dir / "tokenizer.json", model.config.vocab_size)) \
            if masking.whole_word else None
        pairs = fmt.get("pairs")  # sentence-pair rows are what training masks when the objective has pairs
        maskable = {int(length): share for length, share in (pairs or fmt)["maskable_share"].items()}
        module = MaskedLMModule(model, masking, optim, plan, special, fmt["vocab_size"], maskable, word_starts,
                                compile_backend=impl.compile_backend if impl.compile else "",
                                embedding_warmup_steps=training.embedding_warmup_steps)
        rows = {p.seq_len: training_rows(shards_dir, fmt, p.seq_len, training.seed, module.masker) for p in plan}
        data = PhasedData(plan, rows, impl.num_workers, pin_memory=torch.cuda.is_available(),
                          rank=launch.rank, world_size=launch.world_size)
        step_metrics = StepMetricsLogger(
            plan, [flops_per_token(model.config, p.seq_len, masked_per_row=module.masker.per_row(p.seq_len))
                   for p in plan],
            logger.log_every_n_steps, trainer.peak_tflops, launch.world_size, logger.progress_bar)
        validation = HeldoutValidation(
            heldout_batches(shards_dir, plan[0].micro_batch_size, logger.val_batches * plan[0].batch_size),
            logger.val_every_n_steps,
            masking.eval_ratio, training.seed, step_metrics=step_metrics)
        # Every rank writes into one working folder named by the stage hash: a rerun of the same command (a
        # requeued SLURM job, a restarted torchrun, a plain rerun) finds its checkpoints there and resumes
        # at the same step and data position.
        with out.build(resumable=True, publish=launch.is_global_zero, fresh=not checkpoint.resume,
                       keep_on_error=True) as build:
            # checkpoint.resume=false: every rank starts over. Only the first clears the old working folder,
            # so another rank looking there before it does would resume the old run alone.
            resume = newest_valid_checkpoint(build.tmp / "checkpoints") if checkpoint.resume else None
            data.start_step = checkpoint_step(resume) if resume else 0
            if resume:
                log.info("resuming from %s at step %d", resume, data.start_step)
            if launch.is_global_zero:  # also at step 0, in a kept folder whose checkpoints are all unreadable
                set_aside_metrics(build.tmp / "logs", data.start_step)  # the CSV logger would delete them
                remove_partial_saves(build.tmp / "checkpoints")
            mark = stage_mark(out.digest)

            def export_step(trained, folder: Path) -> None:  # on the training thread: its time is not training's
                with step_metrics.untimed(module.device):
                    export_hf(trained, vocab_dir, folder)

            pusher = [HubCheckpointPush(hub, export_step, f"bertforge {run_name}: {mark}", mark)] if hub else []

            def new_trainer() -> tuple[L.Trainer, list]:
                """A Trainer with its own callbacks: one per attempt (a rollback starts another)."""
                stopper = [StopOnPreemption(preemption, last_checkpoint(build.tmp), requeue_command(launch))
                           ] if preemption else []
                return L.Trainer(
                    max_steps=training.max_steps, precision=trainer.precision,
                    **trainer_arguments(trainer, launch, model),
                    logger=_loggers(logger, run_name, build.tmp, out.payload),
                    default_root_dir=str(build.tmp),
                    log_every_n_steps=logger.log_every_n_steps,  # StepMetricsLogger logs; this only quiets a warning
                    reload_dataloaders_every_n_epochs=1,  # one epoch per phase: see PhasedData
                    limit_val_batches=0, num_sanity_val_steps=0,  # held-out scoring runs in HeldoutValidation
                    callbacks=[
                        UntimedCheckpoint(step_metrics.untimed, build.record_attempt,
                                          dirpath=str(build.tmp / "checkpoints"), filename="step{step}", every_n_train_steps=checkpoint.every_n_steps,
                                          save_last=True, monitor="step", mode="max",
                                          save_top_k=max(1, checkpoint.keep_last), auto_insert_metric_name=False),
                        PhaseAccumulation(plan),
                        PinnedCheckpoints(checkpoint.pin_steps, build.tmp / "checkpoints", step_metrics.untimed),
                        step_metrics,
                        validation,
                        MicroBatchSeeding(lambda: data.sampler, training.seed,
                                          build.tmp / "data_positions" if logger.log_data_positions else None),
                        *stopper,
                        *pusher,
                    ],
                    enable_progress_bar=False, enable_model_summary=False,
                ), stopper
            try:
                while True:
                    lightning_trainer, stopper = new_trainer()
                    try:
                        lightning_trainer.fit(module, datamodule=data, ckpt_path=resume)
                        break
                    except TrainingDiverged as diverged:  # optim.on_divergence=rollback: back, slower, once more
                        resume = rollback_checkpoint(diverged, module, optim, build.tmp / "checkpoints")
                        data.start_step = checkpoint_step(resume)
                        module.roll_back(diverged.step, data.start_step, optim.rollback_lr_factor)
                        log.warning("pretrain: %d bad steps in a row up to step %d: rolling back to %s (step %d) with "
                                    "the learning rate x%.3g (rollback %d of at most %d)", diverged.bad_steps,
                                    diverged.step, resume, data.start_step, module.lr_scale, len(module.rollbacks),
                                    optim.max_rollbacks)
                        if launch.is_global_zero:
                            set_aside_metrics(build.tmp / "logs", data.start_step)  # the diverged rows go
                            set_aside_after(build.tmp / "checkpoints", data.start_step,
                                            f"abandoned-rollback{len(module.rollbacks)}")
            finally:
                for push in pusher:  # the last step's upload ends before the final model goes to main
                    push.finish()
            if stopper and stopper[0].stopped_at is not None:  # leaves build.tmp for the next attempt
                raise Preempted(preempted_message(stopper[0]))
            if trainer.strategy == "fsdp":  # gather the shards into one full checkpoint (every rank takes part)
                lightning_trainer.save_checkpoint(build.tmp / "checkpoints" / "final.ckpt")
            if not launch.is_global_zero:  # rank 0 exports and publishes; the others wait for its folder
                wait_for_stage(out.folder)
                return
            trained = module.model if trainer.strategy != "fsdp" else unsharded_copy(
                build.tmp / "checkpoints" / "final.ckpt",
                lambda: AutoModelForMaskedLM.from_config(model.config, attn_implementation=attention))
            _finish_loggers(lightning_trainer)
            merge_metrics(build.tmp / "logs")
            export_hf(trained, vocab_dir, build.tmp / "hf")
            if started_from is not None:  # the exported model names where it started
                write_json_atomic(build.tmp / "hf" / "init_from.json", started_from.as_dict())
            curve = read_loss_curve(build.tmp)
            plot_loss_curve(curve, build.tmp / "loss_curve.png", run_name)
            build.manifest["hardware"] = {  # recorded, not hashed
                "accelerator": launch.accelerator, "devices": launch.devices, "num_nodes": launch.num_nodes,
                "strategy": trainer.strategy, "precision": trainer.precision, "cluster": launch.cluster}
            if pusher:
                build.manifest["hub_revisions"] = pusher[0].summary()  # recorded, not hashed
            if started_from is not None:
                build.manifest["init_from"] = started_from.as_dict()
            if module.rollbacks:
                build.manifest["rollbacks"] = module.rollbacks  # at_step, to_step, lr_scale of each
            build.manifest["counts"] = {
                "steps": lightning_trainer.global_step,
                "tokens_trained": sum(p.steps * p.tokens_per_step for p in plan),
                "first_loss": curve[0][1] if curve else None,
                "last_loss": curve[-1][1] if curve else None,
                "parameters": sum(p.numel() for p in model.parameters()),
                "phases": [{"seq_len": p.seq_len, "steps": p.steps, "batch_size": p.batch_size,
                            "accumulation": p.accumulation, "lr_scale": p.lr_scale} for p in plan],
                "throughput": throughput_summary(step_metrics.history),
            }


def rollback_checkpoint(diverged: TrainingDiverged, module: MaskedLMModule, optim: OptimConfig,
                        folder: Path) -> Path:
    """The checkpoint optim.on_divergence=rollback goes back to: the newest one from before the run of bad
    steps, so their batches are trained again at the lower rate; else (keep_last deleted those) the newest
    one, whose weights the skipped steps did not touch. Raises `diverged` itself with on_divergence=stop,
    and a TrainingDiverged saying why when the rollbacks are used up or there is no checkpoint at all."""
    if optim.on_divergence != "rollback":
        raise diverged
    first_bad = diverged.step - diverged.bad_steps + 1
    if len(module.rollbacks) >= optim.max_rollbacks:
        raise TrainingDiverged(
            f"{diverged.bad_steps} optimiser steps in a row up to step {diverged.step} had a non-finite loss or "
            f"gradient after {len(module.rollbacks)} rollbacks (optim.max_rollbacks={optim.max_rollbacks}; the "
            f"learning rate was x{module.lr_scale:.3g}): stopped. Lower optim.lr or raise optim.warmup_steps, then "
            "rerun the same command (checkpoint.resume=false to start over)", diverged.step, diverged.bad_steps)
    found = newest_checkpoint_up_to(folder, first_bad - 1) or newest_checkpoint_up_to(folder, diverged.step)
    if found is None:
        raise TrainingDiverged(
            f"{diverged.bad_steps} optimiser steps in a row up to step {diverged.step} had a non-finite loss or "
            f"gradient and there is no checkpoint in {folder} to roll back to: stopped. Save more often "
            "(checkpoint.every_n_steps) or lower optim.lr, then rerun", diverged.step, diverged.bad_steps)
    return found


def preempted_message(stopper: StopOnPreemption) -> str:
    how = ("SLURM requeues the job (same job id) and it resumes there" if stopper.requeue else
           "start the same command again to resume there")
    return f"stopped on the preemption signal at step {stopper.stopped_at}; saved {stopper.checkpoint}: {how}"


def check_start_up(model_cfg: ModelConfig, optim: OptimConfig, training: TrainingConfig, trainer: TrainerConfig,
                   shards_dir: Path, vocab_dir: Path, fmt: dict, world_size: int, from_scratch: bool = True) -> list:
    """Every check that can fail before training, each naming the file or key: returns the phase plan
    (`world_size`: devices taking part in one optimiser step, from the launch plan)."""
    tokenizer = vocab_dir / "tokenizer.json"
    if fmt["tokenizer_sha256"] != file_sha256(tokenizer):
        raise ConfigError(f"{shards_dir} was built with another tokenizer than {tokenizer} (the model's "
                          "vocabulary): rebuild the shards with it (delete the shards folder or change shards.*)")
    plan = plan_phases(training, trainer.micro_batch_size, optim, fmt["seq_len"], world_size)
    for phase in plan:
        if from_scratch:  # a continued model's size is its checkpoint's (check_positions)
            check_model_config(model_cfg, phase.seq_len)
        if phase.seq_len not in fmt["seq_lens"]:
            raise ConfigError(f"training.phases[{phase.index}].seq_len={phase.seq_len}: {shards_dir} has rows "
                              f"of {fmt['seq_lens']} only; rebuild the shards")
    return plan


def training_rows(shards_dir: Path, fmt: dict, seq_len: int, seed: int, masker) -> PackedRows:
    """The training rows of `seq_len`: packed rows (or their BPE-dropout copies), or the sentence pairs when
    the shards hold them, with their static masks when the shards hold those."""
    pairs, copies = load_pairs(shards_dir, seq_len, fmt), load_dropout_copies(shards_dir, seq_len, fmt)
    rows, info = pairs if pairs is not None else (copies[0] if copies else load_rows(shards_dir, "train", seq_len), None)
    return PackedRows(rows, seed=seed, static_masks=static_masks(shards_dir, fmt, seq_len, masker), pair_info=info,
                      copies=copies)


def static_masks(shards_dir: Path, fmt: dict, seq_len: int, masker) -> tuple | None:
    """The shards' static maskings of rows of `seq_len` (masking.static=true), checked against the masker."""
    masks = load_static_masks(shards_dir, seq_len, fmt)
    if masks is not None and masks[0].shape[-1] != masker.per_row(seq_len):
        raise ConfigError(f"{shards_dir} holds {masks[0].shape[-1]} static masks per row of {seq_len} but masking.* "
                          f"asks for {masker.per_row(seq_len)}: rebuild the shards")
    return masks


def check_positions(config, seq_len: int) -> None:
    """A continued model must have position embeddings for the longest training row."""
    usable = config.max_position_embeddings
    if config.model_type in ("roberta", "xlm-roberta"):
        usable -= config.pad_token_id + 1  # RoBERTa numbers positions from pad_token_id + 1
    if seq_len > usable:
        raise ConfigError(f"rows of {seq_len} tokens but model.init_from's model has {usable} positions: "
                          "build shorter shards (shards.seq_len, training.phases[].seq_len)")


def heldout_batches(shards_dir: Path, batch_size: int, rows: int) -> list[torch.Tensor]:
    """The first `rows` held-out rows (main length; fewer when the split is smaller), in batches of `batch_size`
    (a device's micro-batch): the same rows at every validation, on any hardware (`rows` comes from the
    experiment's batch, not the device's). The last batch may be short: with fewer held-out rows than one
    micro-batch (the demo: 14 and 32), whole batches only would leave validation with nothing to score."""
    return row_batches(load_rows(shards_dir, "heldout"), batch_size, rows)


def throughput_summary(history: list[dict]) -> dict:
    """Median tokens/s and MFU over the logged intervals, leaving out the first (compile, warm-up)."""
    rows = [h for h in history if "throughput/tokens_per_s" in h]
    rows = rows[1:] or rows
    if not rows:
        return {}
    median = lambda key: sorted(h[key] for h in rows)[len(rows) // 2]  # noqa: E731
    return {"tokens_per_s": median("throughput/tokens_per_s"), "mfu": median("throughput/mfu"),
            "data_wait_share": median("throughput/data_wait_share")}


def _loggers(logger: LoggerConfig, run_name: str, out: Path, payload: dict) -> list:
    # Written out at every logged step (the metrics are already read only every logger.log_every_n_steps),
    # not every 100 steps: a killed run's rows up to its last checkpoint must be on disk for the resumed run.
    loggers = [CSVLogger(str(out), name="logs", version=0, flush_logs_every_n_steps=1)]
    if logger.wandb:
        # Offline unless the user has a key: runs sync later with `wandb sync`. The key itself is
        # read by wandb from the environment and never passed through our config.
        offline = not os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "offline"
        loggers.append(WandbLogger(project=logger.project, name=run_name, save_dir=str(out),
                                   offline=offline, config=payload))
        if offline:  # wandb's own banner is silenced (bertforge.cli.quiet_libraries): say where the run goes
            log.info("wandb: offline run under %s; send it with `wandb sync <that run folder>`", out / "wandb")
    return loggers


def _finish_loggers(trainer) -> None:
    """Close the wandb run before the stage folder is renamed into place."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def export_hf(model, vocab_dir: Path, out: Path) -> None:
    """Save weights (safetensors) and config, plus the tokenizer files, as one loadable HF folder."""
    model.save_pretrained(str(out), safe_serialization=True)
    # safetensors writes through a private temporary file (mode 0600): give the weights the mode every
    # other file got from the user's umask, so whoever may read the folder may load the model.
    mode = (Path(out) / "config.json").stat().st_mode & 0o777
    for written in Path(out).iterdir():
        written.chmod(mode)
    for name in TOKENIZER_FILES:
        if (vocab_dir / name).exists():
            shutil.copy2(vocab_dir / name, out / name)
    settings = Path(out) / "tokenizer_config.json"
    if settings.exists():  # the vocab stage cannot know the model's length: truncation=True cuts to this
        values = json.loads(settings.read_text(encoding="utf-8"))
        values["model_max_length"] = usable_positions(Path(out))
        if values.get("tokenizer_class") == "TokenizersBackend":
            # transformers 5's name for a tokenizer.json-only tokenizer, a class 4.x lacks (AutoTokenizer fails
            # there); both load PreTrainedTokenizerFast from the same tokenizer.json
            values["tokenizer_class"] = "PreTrainedTokenizerFast"
        settings.write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_loss_curve(stage_dir: Path) -> list[tuple[int, float]]:
    """(step, train/loss) pairs from the CSV log; an interval of skipped steps only (loss NaN) is left out."""
    path = Path(stage_dir) / "logs" / "version_0" / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(handle) if r.get("train/loss")]
    return [(step, loss) for step, loss in rows if math.isfinite(loss)]


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
