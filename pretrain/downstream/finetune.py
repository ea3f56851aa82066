"""One fine-tuning run: an encoder plus a task head, trained with Lightning (bf16 on a GPU, fp32 on a
CPU), early-stopped on the dev score where a dev split exists, then scored on the test split.

The encoder is any `AutoModel` folder; `untrained=True` builds the same architecture from its config
with fresh weights (the random-init twin), keeping the tokenizer.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModel, get_linear_schedule_with_warmup

from pretrain.config import DownstreamConfig, DownstreamTaskConfig
from pretrain.downstream.batches import Encoded, collate, encode_text, encode_words
from pretrain.downstream.heads import make_head
from pretrain.downstream.readers import TaskData
from pretrain.downstream.scoring import MAIN_METRIC, accuracy, attachment, entity_f1, label_f1

log = logging.getLogger("bertforge.downstream")



class FineTuner(L.LightningModule):
    def __init__(self, encoder, head, recipe: DownstreamConfig, total_steps: int):
        super().__init__()
        self.encoder, self.head, self.recipe, self.total_steps = encoder, head, recipe, total_steps

    def forward(self, batch: dict):
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return self.head(hidden, batch)

    def training_step(self, batch: dict, _index: int):
        loss, _ = self(batch)
        self.log("loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def predict_step(self, batch: dict, _index: int) -> dict:
        _, predicted = self(batch)
        return {k: v.cpu() for k, v in predicted.items()}

    def configure_optimizers(self):
        r = self.recipe
        decay = [p for n, p in self.encoder.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.encoder.named_parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW([
            {"params": decay, "lr": r.lr, "weight_decay": r.weight_decay},
            {"params": no_decay, "lr": r.lr, "weight_decay": 0.0},
            {"params": list(self.head.parameters()), "lr": r.head_lr, "weight_decay": r.weight_decay},
        ])
        schedule = get_linear_schedule_with_warmup(optimizer, int(r.warmup_share * self.total_steps), self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class _KeepBest(L.Callback):
    """After every epoch: score dev, keep the best weights in memory, stop after `patience` worse epochs."""

    def __init__(self, score_dev, patience: int):
        self.score_dev, self.patience = score_dev, patience
        self.best, self.best_state, self.bad_epochs, self.history = -math.inf, None, 0, []

    def on_train_epoch_end(self, trainer, module):
        score = self.score_dev(trainer, module)
        self.history.append(round(score, 4))
        if score > self.best:
            self.best, self.bad_epochs = score, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in module.state_dict().items()})
        else:
            self.bad_epochs += 1
            trainer.should_stop = self.bad_epochs >= self.patience


def fine_tune(data: TaskData, model_dir: str, tokenizer, untrained: bool, seed: int, recipe: DownstreamConfig
              ) -> dict:
    """Train on data.train, pick the epoch on data.dev (if any), score data.test: the task's metrics, plus
    the epochs run, the dev history and the test words that could not be reached."""
    task = data.task
    label_ids = {label: i for i, label in enumerate(data.labels)}
    encode = (lambda ex: encode_text(tokenizer, ex, label_ids, recipe.max_length, task.multi_label)) \
        if task.type == "classify" else (lambda ex: encode_words(tokenizer, ex, label_ids, recipe.max_length))
    train, dev, test = ([encode(ex) for ex in split] for split in (data.train, data.dev, data.test))

    L.seed_everything(seed, workers=False, verbose=False)
    if untrained:
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(model_dir))
    else:
        with _quiet_loading():
            encoder = AutoModel.from_pretrained(model_dir)
    head = make_head(task.type, encoder.config.hidden_size, len(data.labels), task.multi_label)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def loader(items: list[Encoded], shuffle: bool) -> DataLoader:
        return DataLoader(items, batch_size=recipe.batch_size, shuffle=shuffle,
                          collate_fn=lambda batch: collate(batch, pad_id, recipe.pooling),
                          generator=torch.Generator().manual_seed(seed) if shuffle else None)

    steps = math.ceil(len(train) / recipe.batch_size) * recipe.epochs
    module = FineTuner(encoder, head, recipe, steps)
    module.train()  # from_pretrained leaves the encoder in eval mode (no dropout)
    gpu = torch.cuda.is_available()
    trainer_args = dict(
        max_epochs=recipe.epochs, accelerator="gpu" if gpu else "cpu", devices=1,
        precision="bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true",
        logger=False, enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)
    keep_best = None
    callbacks = []
    if dev:
        def score_dev(trainer, module_) -> float:
            was_training = module_.training
            outputs = _predict(module_, loader(dev, False), trainer.precision)
            module_.train(was_training)
            return score(task, data.dev, dev, outputs, data.labels)[MAIN_METRIC[task.type]]
        keep_best = _KeepBest(score_dev, recipe.patience)
        callbacks.append(keep_best)
    with _quiet_lightning():
        trainer = L.Trainer(callbacks=callbacks, enable_progress_bar=True, **trainer_args)
        trainer.fit(module, loader(train, True))
    if keep_best is not None and keep_best.best_state is not None:
        module.load_state_dict(keep_best.best_state)
    # Lightning moves the module to the CPU when fit ends: the test split is scored where dev was.
    module.to(trainer.strategy.root_device)
    outputs = _predict(module, loader(test, False), trainer.precision)
    metrics = score(task, data.test, test, outputs, data.labels)
    metrics["epochs"] = trainer.current_epoch
    if keep_best is not None:
        metrics["dev_history"] = keep_best.history
    if task.type != "classify":
        metrics["unreached_words"] = sum(it.n_words - it.reached for it in test)
    return metrics


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's info lines (devices found, why fit stopped) say nothing new on the twelfth fine-tune, and
    its hint to prepend `srun` (wherever srun is installed) does not apply: a fine-tune is one process."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = rank_zero.level
    rank_zero.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The `srun` command is available")
            yield
    finally:
        rank_zero.setLevel(level)


@contextlib.contextmanager
def _quiet_loading():
    """An MLM checkpoint loaded as an encoder always drops its MLM head (and may lack a pooler): the load
    report and progress bar would say so at every fine-tune."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _predict(module: FineTuner, batches: DataLoader, precision: str) -> list[dict]:
    module.eval()
    device = next(module.parameters()).device
    outputs = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16")):
        for batch in batches:
            outputs.append(module.predict_step({k: v.to(device) for k, v in batch.items()}, 0))
    return outputs


def score(task: DownstreamTaskConfig, examples: list, encoded: list[Encoded], outputs: list[dict],
          labels: list[str]) -> dict:
    """The task's metrics for predictions `outputs` (batches in order) of `examples`."""
    flat: dict[str, list] = {}
    for batch in outputs:
        for key, value in batch.items():
            flat.setdefault(key, []).extend(value.tolist())
    if task.type == "classify":
        if task.multi_label:
            predicted = [[labels[i] for i, on in enumerate(row) if on] for row in flat["labels"]]
        else:
            predicted = [[labels[i]] for i in flat["labels"]]
        return label_f1([ex.labels for ex in examples], predicted, labels)
    # Word tasks: words without a subword (cut off by max_length) get no prediction, so count as wrong.
    unreached = "O" if task.type == "ner" else None
    predicted_tags, predicted_heads = [], []
    for ex, enc, row_labels, row_heads in zip(examples, encoded, flat["labels"], flat.get("heads", flat["labels"]),
                                              strict=True):
        reached = set(enc.word_of_token)
        predicted_tags.append([labels[row_labels[i]] if i in reached else unreached for i in range(len(ex.words))])
        predicted_heads.append([row_heads[i] if i in reached else -1 for i in range(len(ex.words))])
    gold = [ex.tags for ex in examples]
    if task.type == "parse":
        return attachment([ex.heads for ex in examples], gold, predicted_heads, predicted_tags)
    if task.type == "ner":
        return entity_f1(gold, predicted_tags)
    return accuracy(gold, predicted_tags)
