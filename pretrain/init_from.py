"""Continued pretraining: a checkpoint loaded as a masked LM, its embeddings carried over to the vocabulary
the run trains with (`model.vocab_mode`, `model.vocab_transfer`).

- keep: the checkpoint's own vocabulary; nothing moves.
- extend: the checkpoint's vocabulary plus new tokens at the end; old ids keep their rows, each new token
  starts from the mean of the rows of the pieces the old tokenizer splits it into.
- replace: a new vocabulary. A token both vocabularies hold (same string, or the same special role) is
  copied; with `mean` another token starts from the mean of its old pieces (FVT, Gee et al. 2022), and
  with `copy` (or a token no old piece covers) from the old embeddings' distribution; `random` draws
  every row afresh from that distribution.

A checkpoint without an MLM head (a sentence-embedding BERT) gets a new one; transformers ties its
decoder to the input embeddings where the architecture does. What was loaded, new and dropped is
reported, as are the rows that took each route. A sentence-pair objective (NSP/SOP) keeps the checkpoint's
pooler and pair head (`carry_pair_head`), which the masked-LM class drops.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForMaskedLM, BertForPreTraining
from transformers.utils import logging as transformers_logging

from bertforge.common.checkpoints import Checkpoint
from bertforge.common.errors import ConfigError
from corpora.vocab.metrics import load_reference
from corpora.vocab.special_tokens import special_token_ids
from pretrain.model import ARCHS, padded_vocab_size

log = logging.getLogger("bertforge.pretrain")

VOCAB_TRANSFERS = ("copy", "mean", "random")
SUPPORTED = tuple(ARCHS) + ("xlm-roberta",)
PAIR_HEAD = ("bert.pooler.", "cls.seq_relationship.")  # BertForPreTraining's weights that a masked LM lacks


@dataclass
class StartReport:
    """What continuing from a checkpoint did, for the log, the manifest and the model card."""

    checkpoint: str
    identity: dict
    model_type: str
    vocab_mode: str
    vocab_transfer: str
    rows: dict[str, int] = field(default_factory=dict)
    """Embedding rows by route: kept, copied, mean, random (padding rows not counted)."""
    weights: dict[str, list[str]] = field(default_factory=dict)
    """loaded (count only), new and dropped parameter names."""
    folder: str = ""
    """The folder the weights were read from (not in `as_dict`: `checkpoint` and `identity` name it)."""

    def as_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, **self.identity, "model_type": self.model_type,
                "vocab_mode": self.vocab_mode, "vocab_transfer": self.vocab_transfer, "rows": self.rows,
                "weights": self.weights}


def check_start(checkpoint: Checkpoint, vocab_mode: str, vocab_transfer: str) -> None:
    """Errors that need no weights loaded: an architecture we cannot train, a mode or transfer we do not know."""
    if vocab_transfer not in VOCAB_TRANSFERS:
        raise ConfigError(f"model.vocab_transfer={vocab_transfer!r}: choose one of {', '.join(VOCAB_TRANSFERS)}")
    model_type = AutoConfig.from_pretrained(str(checkpoint.folder)).model_type
    if model_type not in SUPPORTED:
        raise ConfigError(f"model.init_from={checkpoint.requested!r} is a {model_type!r} model: bertforge continues "
                          f"{', '.join(SUPPORTED)} checkpoints (encoders with a masked-LM head)")
    if vocab_mode in ("keep", "extend") and not checkpoint.has_tokenizer:
        raise ConfigError(f"model.vocab_mode={vocab_mode} uses the checkpoint's tokenizer, but "
                          f"{checkpoint.folder} has none (no tokenizer.json or vocab.txt): use "
                          "model.vocab_mode=replace, which trains a new one")


def load_start_model(checkpoint: Checkpoint, vocab_dir: Path, vocab_mode: str, vocab_transfer: str,
                     pad_to_multiple_of: int, attention: str, seed: int) -> tuple[torch.nn.Module, StartReport]:
    """The checkpoint as a `*ForMaskedLM` whose embeddings fit `vocab_dir`'s tokenizer (see the module doc)."""
    check_start(checkpoint, vocab_mode, vocab_transfer)
    with _quiet_loading():
        # fp32 master weights whatever dtype the checkpoint was saved in (transformers keeps a bf16 file's
        # dtype): trainer.precision decides what the run computes in, and AdamW's state follows the weights
        model, info = AutoModelForMaskedLM.from_pretrained(str(checkpoint.folder), output_loading_info=True,
                                                           attn_implementation=attention, dtype=torch.float32)
    report = StartReport(checkpoint.requested, checkpoint.identity, model.config.model_type, vocab_mode,
                         vocab_transfer, folder=str(checkpoint.folder))
    loaded = len(model.state_dict()) - len(info["missing_keys"])
    report.weights = {"loaded": [str(loaded)], "new": sorted(info["missing_keys"]),
                      "dropped": sorted(info["unexpected_keys"])}
    new_tok = load_reference(str(vocab_dir), "the vocab stage's tokenizer")
    old_tok = load_reference(str(checkpoint.folder), "model.init_from", convert=True) if checkpoint.has_tokenizer \
        else None
    old_rows = model.get_input_embeddings().weight.detach().float()  # (old vocab, hidden)
    generator = torch.Generator().manual_seed(seed)
    draw = RowDraw(old_rows, generator)
    rows, sources, report.rows = _new_rows(old_rows, old_tok, new_tok, vocab_mode, vocab_transfer, draw)
    _install_rows(model, rows, sources, padded_vocab_size(len(rows), pad_to_multiple_of), old_rows, draw)
    log.info("init_from %s (%s): %d weights loaded, new: %s, dropped: %s; vocabulary %s, rows %s",
             checkpoint.requested, report.model_type, loaded, ", ".join(report.weights["new"]) or "none",
             ", ".join(report.weights["dropped"]) or "none", vocab_mode, report.rows)
    return model, report


@contextmanager
def _quiet_loading():
    """transformers without its table of missing and unexpected keys: the StartReport says the same once."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


@torch.no_grad()
def carry_pair_head(model: BertForPreTraining, report: StartReport) -> None:
    """Copy the pooler and pair head of `report`'s checkpoint into `model` (the masked-LM class it was first
    loaded as drops them) and record it in `report`: those weights move from dropped to loaded, and any the
    checkpoint lacks (a masked LM has neither, a sentence-embedding BERT no pair head) are listed as new."""
    with _quiet_loading():
        # Read as transformers maps it (prefixes, old LayerNorm names, shards), not from the files by key.
        source, info = BertForPreTraining.from_pretrained(report.folder, output_loading_info=True,
                                                          dtype=torch.float32)
    absent = set(info["missing_keys"])
    carried = {k: v for k, v in source.state_dict().items() if k.startswith(PAIR_HEAD) and k not in absent}
    target = model.state_dict()
    for key, value in carried.items():
        target[key].copy_(value)
    new = [k for k in target if k.startswith(PAIR_HEAD) and k not in carried]
    # The checkpoint names them as it stores them: "pooler.*" in a bare BertModel, "bert.pooler.*" otherwise.
    report.weights["dropped"] = [k for k in report.weights["dropped"]
                                 if k not in carried and f"bert.{k}" not in carried]
    report.weights["loaded"] = [str(int(report.weights["loaded"][0]) + len(carried))]
    report.weights["new"] = sorted(report.weights["new"] + new)
    log.info("init_from %s: pooler and pair head, %d weights carried over, new: %s", report.checkpoint,
             len(carried), ", ".join(sorted(new)) or "none")


def _new_rows(old_rows: torch.Tensor, old_tok: Tokenizer | None, new_tok: Tokenizer, vocab_mode: str,
              transfer: str, draw: RowDraw) -> tuple[torch.Tensor, dict[int, int], dict[str, int]]:
    """(new vocab, hidden) rows for every id of `new_tok`; new id -> old id of the rows kept or copied;
    how many rows took each route."""
    new_size = new_tok.get_vocab_size(with_added_tokens=True)
    if vocab_mode in ("keep", "extend"):
        _check_ids_kept(old_tok, new_tok, vocab_mode)
        old_size = old_tok.get_vocab_size(with_added_tokens=True)
        rows = [old_rows[i] for i in range(old_size)]
        # A new entry is in the old model's own form ("Ġword", "▁word"): its pieces are the old model's split of it,
        # as running text had it, not the split of its bare text.
        added = [_mean_of_model_pieces(old_rows, old_tok, new_tok.id_to_token(i)) for i in range(old_size, new_size)]
        counts = {"kept": old_size, "mean": sum(r is not None for r in added)}
        counts["random"] = len(added) - counts["mean"]
        rows += [r if r is not None else draw() for r in added]
        return torch.stack(rows), {i: i for i in range(old_size)}, counts
    if old_tok is None and transfer != "random":
        raise ConfigError("model.vocab_transfer=copy/mean needs the checkpoint's tokenizer (to know which token "
                          "each old row is): the checkpoint has none; use model.vocab_transfer=random")
    old_ids = _old_ids_by_token(old_tok, new_tok) if transfer != "random" else {}
    counts = {"copied": 0, "mean": 0, "random": 0}
    rows = []
    for new_id in range(new_size):
        token = new_tok.id_to_token(new_id)
        row = None
        if new_id in old_ids:
            row, route = old_rows[old_ids[new_id]], "copied"
        elif transfer == "mean":
            row, route = _mean_of_pieces(old_rows, old_tok, token), "mean"
        if row is None:
            row, route = draw(), "random"
        counts[route] += 1
        rows.append(row)
    return torch.stack(rows), {new: old for new, old in old_ids.items() if new < new_size}, counts


def _check_ids_kept(old_tok: Tokenizer, new_tok: Tokenizer, vocab_mode: str) -> None:
    """keep/extend train with the checkpoint's ids: the vocab stage's tokenizer must hold every old token
    at its old id (keep: and nothing else), or the shards mean other tokens than the embeddings."""
    old_vocab = old_tok.get_vocab(with_added_tokens=True)
    new_vocab = new_tok.get_vocab(with_added_tokens=True)
    moved = [t for t, i in old_vocab.items() if new_vocab.get(t) != i]
    if moved or (vocab_mode == "keep" and len(new_vocab) != len(old_vocab)):
        raise ConfigError(f"model.vocab_mode={vocab_mode}: the vocabulary these shards were built with is not the "
                          f"checkpoint's ({len(moved)} of its {len(old_vocab)} tokens have another id, "
                          f"{len(new_vocab)} vs {len(old_vocab)} tokens): rebuild the vocab and shards stages with "
                          "this model.init_from")


def _old_ids_by_token(old_tok: Tokenizer, new_tok: Tokenizer) -> dict[int, int]:
    """new id -> old id for tokens both hold: the same string, or the same special role ([CLS] <-> <s>)."""
    old_vocab = old_tok.get_vocab(with_added_tokens=True)
    pairs = {new_id: old_vocab[token] for token, new_id in new_tok.get_vocab(with_added_tokens=True).items()
             if token in old_vocab}
    try:
        old_special, new_special = special_token_ids(old_tok), special_token_ids(new_tok)
    except ValueError:  # a vocabulary whose roles cannot be told: strings only
        return pairs
    for role, new_id in new_special.items():
        if new_id is not None and old_special.get(role) is not None:
            pairs[new_id] = old_special[role]
    return pairs


def _surface(token: str) -> str:
    """The text a vocabulary entry stands for, without WordPiece's "##", Metaspace's "▁" or ByteLevel's "Ġ"."""
    for marker in ("##", "▁", "Ġ"):
        if token.startswith(marker) and len(token) > len(marker):
            return token[len(marker):]
    return token


def _mean_of_pieces(old_rows: torch.Tensor, old_tok: Tokenizer, token: str) -> torch.Tensor | None:
    """The mean of the old rows of the pieces the old tokenizer splits `token`'s text into (None: no piece)."""
    return _mean_row(old_rows, old_tok.encode(_surface(token), add_special_tokens=False).ids)


def _mean_of_model_pieces(old_rows: torch.Tensor, old_tok: Tokenizer, token: str) -> torch.Tensor | None:
    """The mean of the old rows of the pieces the old model splits the model-form `token` into (None: no piece)."""
    return _mean_row(old_rows, [piece.id for piece in old_tok.model.tokenize(token)])


def _mean_row(old_rows: torch.Tensor, ids: list[int]) -> torch.Tensor | None:
    """The mean of the old rows `ids` that exist (None: none does)."""
    ids = [i for i in ids if i < len(old_rows)]
    return old_rows[ids].mean(0) if ids else None


class RowDraw:
    """Rows from the old embeddings' distribution (per-dimension mean and standard deviation), measured once:
    the std of a 30k x 384 matrix takes tens of ms, and a new vocabulary draws thousands of rows."""

    def __init__(self, old_rows: torch.Tensor, generator: torch.Generator):
        self.mean, self.std, self.generator = old_rows.mean(0), old_rows.std(0), generator

    def __call__(self) -> torch.Tensor:
        return self.mean + self.std * torch.randn(self.mean.shape[0], generator=self.generator)


@torch.no_grad()
def _install_rows(model, rows: torch.Tensor, sources: dict[int, int], padded: int, old_rows: torch.Tensor,
                  draw: RowDraw) -> None:
    """Resize the model's embeddings to `padded` rows: `rows` first, padding rows drawn (no id uses them);
    the tied decoder follows. An MLM output bias keeps the old value of every kept or copied row
    (`sources`: new id -> old id) and starts at 0 elsewhere."""
    if padded == len(old_rows) and len(rows) == len(old_rows) and torch.equal(rows, old_rows):
        return  # keep, already a multiple: the checkpoint as it is
    bias = getattr(model.get_output_embeddings(), "bias", None)
    old_bias = bias.detach().clone() if bias is not None else None
    model.resize_token_embeddings(padded, mean_resizing=False)
    weight = model.get_input_embeddings().weight
    padding = [draw()[None] for _ in range(padded - len(rows))]
    weight.copy_(torch.cat([rows, *padding]).to(weight.dtype))
    bias = getattr(model.get_output_embeddings(), "bias", None)
    if bias is not None and old_bias is not None and bias.shape[0] == padded:
        bias.zero_()
        new_ids, old_ids = zip(*sources.items()) if sources else ((), ())
        bias[list(new_ids)] = old_bias[list(old_ids)]
    model.tie_weights()
