"""The downstream stage: fine-tune a model on real tasks, several seeds, beside its untrained twin and
any reference models, and score each on the task's test split.

Every (task, model, seed) result is written as soon as it exists into the stage's resumable work folder,
so a run that dies goes on from the next one when the command is rerun. The folder ends with
`metrics.json`: per task, per model, per metric the mean, standard deviation and the seeds' values, and
the recipe that produced them.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

from bertforge.common.checkpoints import usable_positions
from bertforge.common.errors import ConfigError
from bertforge.common.stage_folder import StageOutput, write_json_atomic
from pretrain.config import DownstreamConfig, DownstreamTaskConfig
from pretrain.downstream.scoring import MAIN_METRIC
from pretrain.downstream.readers import (SPLITS, TEXT_TASKS, WORD_TASKS, TaskData, label_set, read_split,
                                         unseen_labels)

log = logging.getLogger("bertforge.downstream")

FORMATS = {"conllu": set(WORD_TASKS) - {"ner"}, "iob": {"ner"}, "tos": TEXT_TASKS, "jsonl": TEXT_TASKS}


def check_downstream(cfg: DownstreamConfig, model_positions: int | None, encoders: dict[str, Path]) -> dict:
    """Every task's settings and data, read and checked before any stage runs (a broken line, a label
    set mismatch or a recipe an encoder cannot run fails here, not after pretraining). `model_positions`
    is model.max_position_embeddings of the experiment's own model where it is fine-tuned and built from
    scratch, else None; `encoders` maps the key of every other encoder fine-tuned (downstream.checkpoint
    or model.init_from, downstream.references.<name>) to its HF folder. Returns the input files'
    fingerprints to hash."""
    if not cfg.tasks:
        raise ConfigError("downstream.tasks is empty: choose a task set, e.g. downstream=ud_irish "
                          "(conf/downstream/ lists them), or give downstream.tasks")
    _check_recipe(cfg)
    if model_positions is not None:
        _check_max_length(cfg.max_length, model_positions, f"model.max_position_embeddings={model_positions} "
                          "(the experiment's own model)", "or raise model.max_position_embeddings")
    for key, folder in encoders.items():
        positions = usable_positions(folder)
        if positions is not None:
            _check_max_length(cfg.max_length, positions, f"the {positions} positions of {key} "
                              f"({folder / 'config.json'})",
                              f"or leave out {key}" if key.startswith("downstream.references.") else "")
    names = [task.name for task in cfg.tasks]
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"downstream.tasks: every task needs its own name (got {names})")
    fingerprint = {}
    for task in cfg.tasks:
        if task.format not in FORMATS or task.type not in FORMATS[task.format]:
            allowed = ", ".join(f"{f}: {'/'.join(sorted(t))}" for f, t in FORMATS.items())
            raise ConfigError(f"downstream task {task.name!r}: type={task.type!r} with format={task.format!r} "
                              f"does not go together ({allowed})")
        if task.unseen_labels not in ("error", "score_as_wrong"):
            raise ConfigError(f"downstream task {task.name!r}: unseen_labels={task.unseen_labels!r}: "
                              "error or score_as_wrong")
        load_task(task)
        fingerprint[task.name] = _fingerprint(task)
    return fingerprint


def _check_recipe(cfg: DownstreamConfig) -> None:
    if cfg.pooling not in ("first", "mean"):
        raise ConfigError(f"downstream.pooling={cfg.pooling!r}: first or mean")
    for key in ("seeds", "epochs", "batch_size", "max_length"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"downstream.{key}={getattr(cfg, key)}: it must be at least 1")
    if not 0.0 <= cfg.warmup_share <= 1.0:
        raise ConfigError(f"downstream.warmup_share={cfg.warmup_share}: the share of fine-tuning steps spent "
                          "warming up the learning rate, between 0 and 1")
    # AdamW refuses a negative rate or weight decay only when the first fine-tuning starts (after pretraining)
    if not cfg.lr >= 0:
        raise ConfigError(f"downstream.lr={cfg.lr}: give the encoder's peak fine-tuning rate, e.g. 5e-5 (0 keeps "
                          "the encoder frozen)")
    if not cfg.head_lr > 0:
        raise ConfigError(f"downstream.head_lr={cfg.head_lr}: give a rate above 0, e.g. 1e-3 (the task head starts "
                          "from nothing: at 0 it never learns and every score is chance)")
    if not cfg.weight_decay >= 0:
        raise ConfigError(f"downstream.weight_decay={cfg.weight_decay}: give 0 (none) or more, e.g. 0.01")
    if cfg.patience < 1:  # 0 or below would stop at the first epoch without a better dev score, as 1 does
        raise ConfigError(f"downstream.patience={cfg.patience}: give the epochs without a better dev score before "
                          "stopping, at least 1 (default 3)")
    for key in ("max_train_examples", "max_eval_examples"):
        if getattr(cfg, key) < 0:  # a negative slice would drop the last examples instead of capping
            raise ConfigError(f"downstream.{key}={getattr(cfg, key)}: give 0 (every example) or a cap")


def _check_max_length(max_length: int, positions: int, whose: str, remedy: str) -> None:
    # A longer input has no position embedding: fine-tuning would crash at the first long batch.
    if max_length > positions:
        raise ConfigError(f"downstream.max_length={max_length} exceeds {whose}, the longest input that encoder "
                          f"takes: set downstream.max_length to at most {positions}" + (f", {remedy}" if remedy else ""))


def load_task(task: DownstreamTaskConfig) -> TaskData:
    splits = {split: read_split(task, split) for split in SPLITS}
    labels = label_set(splits["train"])
    for split in ("dev", "test"):
        unseen_labels(labels, splits[split], split, task.name, task.unseen_labels)
    return TaskData(task, splits["train"], splits["dev"], splits["test"], labels)


def _fingerprint(task: DownstreamTaskConfig) -> list:
    root = Path(task.path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if task.format == "tos" else \
        [root] if root.is_file() else [root / getattr(task, split) for split in SPLITS if getattr(task, split)]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def build_downstream(cfg: DownstreamConfig, checkpoint: Path, references: dict[str, Path], out: StageOutput) -> None:
    """Fine-tune and score `checkpoint` (and its untrained twin, and `references`: name -> folder) on every
    task of `cfg`, `cfg.seeds` times each."""
    from transformers import AutoTokenizer

    tasks = [_capped(load_task(task), cfg) for task in cfg.tasks]
    models = {"model": (checkpoint, False)}
    if cfg.random_init:
        models["random_init"] = (checkpoint, True)
    models |= {f"reference:{name}": (folder, False) for name, folder in references.items()}
    tokenizers = {str(folder): _tokenizer(AutoTokenizer, folder) for folder, _ in models.values()}
    with out.build(resumable=True, keep_on_error=True) as build:
        results: dict = {}
        for data in tasks:
            for model, (folder, untrained) in models.items():
                for seed in range(cfg.seeds):
                    results.setdefault(data.task.name, {}).setdefault(model, []).append(
                        _run_once(build.tmp, data, model, folder, tokenizers[str(folder)], untrained, seed, cfg))
        metrics = {"recipe": _recipe(cfg), "tasks": {
            data.task.name: _task_summary(data, results[data.task.name]) for data in tasks}}
        write_json_atomic(build.tmp / "metrics.json", metrics)
        # The headline (sweep tables, "reusing" lines): each task's main score per model, and UAS beside LAS.
        build.manifest["counts"] = {name: {model: {metric: s["mean"] for metric, s in scores.items()
                                                   if metric in (MAIN_METRIC[task["task"]], "uas")}
                                           for model, scores in task["models"].items()}
                                    for name, task in metrics["tasks"].items()}
    for name, task in metrics["tasks"].items():
        log.info("downstream %s: %s", name, scores_line(task))


def scores_line(task: dict) -> str:
    """A task of metrics.json as one line: its main score per model, mean ± sd
    (`model 0.715 ± 0.004, random_init 0.748 ± 0.003`)."""
    metric = MAIN_METRIC[task["task"]]
    return ", ".join(f"{model} {s[metric]['mean']:.3f} ± {s[metric]['sd']:.3f}" for model, s in task["models"].items())


def _run_once(work: Path, data: TaskData, model: str, folder: Path, tokenizer, untrained: bool, seed: int,
              cfg: DownstreamConfig) -> dict:
    done = work / "runs" / data.task.name / model.replace(":", "_") / f"seed{seed}.json"
    if done.exists():  # finished before the run was interrupted
        return json.loads(done.read_text(encoding="utf-8"))
    from pretrain.downstream.finetune import fine_tune  # Lightning: only when there is training to do

    started = time.perf_counter()
    result = fine_tune(data, str(folder), tokenizer, untrained, seed, cfg)
    result["seconds"] = round(time.perf_counter() - started, 1)
    done.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(done, result)
    metric = MAIN_METRIC[data.task.type]
    log.info("downstream %s, %s, seed %d: %s %.3f (%d epochs, %.0f s)", data.task.name, model, seed, metric,
             result[metric], result["epochs"], result["seconds"])
    return result


def _capped(data: TaskData, cfg: DownstreamConfig) -> TaskData:
    def cap(examples: list, limit: int) -> list:
        return examples[:limit] if limit else examples

    return TaskData(data.task, cap(data.train, cfg.max_train_examples), cap(data.dev, cfg.max_eval_examples),
                    cap(data.test, cfg.max_eval_examples), data.labels)


def _tokenizer(auto_tokenizer, folder: Path):
    tokenizer = auto_tokenizer.from_pretrained(str(folder))
    if not tokenizer.is_fast:
        raise ConfigError(f"{folder}: its tokenizer is not a fast tokenizer (no tokenizer.json), which word tasks "
                          "need to map subwords to words (by character offsets: batches.encode_words)")
    return tokenizer


def _task_summary(data: TaskData, runs: dict[str, list[dict]]) -> dict:
    task = data.task
    metrics = [MAIN_METRIC[task.type]] + (["uas"] if task.type == "parse" else []) + \
        (["micro_f1"] if task.type == "classify" else []) + (["precision", "recall"] if task.type == "ner" else [])
    models = {}
    for model, seeds in runs.items():
        models[model] = {m: _mean_sd([run[m] for run in seeds]) for m in metrics}
    return {
        "task": task.type, "format": task.format,
        "dataset": {"path": task.path, "train": task.train, "dev": task.dev or None, "test": task.test},
        "examples": {"train": len(data.train), "dev": len(data.dev), "test": len(data.test)},
        "labels": len(data.labels),
        # scored as wrong, never left out: test labels train never has (unseen_labels=score_as_wrong) and
        # words past max_length subwords, which depend on each model's tokenizer (the same for every seed)
        "unseen_test_labels": unseen_labels(data.labels, data.test, "test", task.name, "score_as_wrong"),
        "unreached_test_words": {model: seeds[0].get("unreached_words", 0) for model, seeds in runs.items()},
        "epochs": {model: [run["epochs"] for run in seeds] for model, seeds in runs.items()},
        "models": models,
    }


def _mean_sd(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "seeds": [round(v, 4) for v in values]}


def _recipe(cfg: DownstreamConfig) -> dict:
    return {"seeds": list(range(cfg.seeds)), "epochs": cfg.epochs, "lr": cfg.lr, "head_lr": cfg.head_lr,
            "batch_size": cfg.batch_size, "max_length": cfg.max_length, "warmup_share": cfg.warmup_share,
            "weight_decay": cfg.weight_decay, "patience": cfg.patience, "pooling": cfg.pooling,
            "early_stopping": "on the dev split's main metric where a dev split exists; else all epochs",
            "parser": "biaffine arcs and labels, greedy heads, universal relations (subtypes not scored)",
            "max_train_examples": cfg.max_train_examples or "all", "max_eval_examples": cfg.max_eval_examples or "all"}
