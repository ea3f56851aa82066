"""Continued pretraining: a checkpoint loaded as a masked LM, its embeddings carried over to the vocabulary
the run trains with (`model.vocab_mode`, `model.vocab_transfer`).

- keep: the checkpoint's own vocabulary; nothing moves.
- extend: the checkpoint's vocabulary plus new tokens at the end; old ids keep their rows, each new token
  starts from the mean of the rows of the pieces the old tokenizer splits it into.
- replace: a new vocabulary. A token both vocabularies hold (the same special role, or the same text in the
  same place: at a word start or inside a word, however each vocabulary marks that) is copied; with `mean`
  another token starts from the mean of its old pieces (FVT, Gee et al. 2022), and with `copy` (or a token
  no old piece covers) from the old embeddings' distribution; `random` draws every row afresh from that
  distribution. The config's special-token ids and the padding index then name the new tokenizer's tokens.

A checkpoint without an MLM head (a sentence-embedding BERT) gets a new one; transformers ties its
decoder to the input embeddings where the architecture does. What was loaded, new and dropped is
reported, as are the rows that took each route. A sentence-pair objective (NSP/SOP) keeps the checkpoint's
pooler and pair head (`carry_pair_head`), which the masked-LM class drops.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForMaskedLM, BertForPreTraining
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.utils import logging as transformers_logging

from bertforge.common.checkpoints import Checkpoint
from bertforge.common.errors import ConfigError
from corpora.vocab.metrics import load_reference
from corpora.vocab.special_tokens import special_token_ids, special_tokens
from corpora.vocab.word_starts import BYTE_LEVEL_SPACE, word_markers
from pretrain.model import ARCHS, padded_vocab_size

log = logging.getLogger("bertforge.pretrain")

VOCAB_TRANSFERS = ("copy", "mean", "random")
SUPPORTED = tuple(ARCHS) + ("xlm-roberta",)
PAIR_HEAD = ("bert.pooler.", "cls.seq_relationship.")  # BertForPreTraining's weights that a masked LM lacks
# Config key -> the role whose id it holds. bos/eos are cls/sep, as pretrain.model.hf_config sets them from scratch.
SPECIAL_ID_KEYS = {"pad_token_id": "pad", "bos_token_id": "cls", "eos_token_id": "sep", "cls_token_id": "cls",
                   "sep_token_id": "sep"}
BYTE_OF_SYMBOL = {symbol: byte for byte, symbol in bytes_to_unicode().items()}  # ByteLevel's "Ġ" -> 32


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
    if vocab_mode == "replace":  # keep and extend hold every old token at its old id, the special ones too
        _use_special_ids(model, _role_ids(vocab_dir, new_tok))
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
    old_vocab = OldVocabulary(old_tok) if transfer != "random" else None
    old_ids = _old_ids_by_token(old_vocab, new_tok) if transfer != "random" else {}
    new_forms = _word_forms(new_tok) if transfer == "mean" else {}
    counts = {"copied": 0, "mean": 0, "random": 0}
    rows = []
    for new_id in range(new_size):
        row = None
        if new_id in old_ids:
            row, route = old_rows[old_ids[new_id]], "copied"
        elif transfer == "mean":
            row, route = _mean_row(old_rows, old_vocab.pieces(*new_forms[new_id])), "mean"
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


def _old_ids_by_token(old_vocab: OldVocabulary, new_tok: Tokenizer) -> dict[int, int]:
    """new id -> old id for tokens both hold: the same word form (`_word_forms`: "▁agus" is BERT's "agus",
    BPE's word-internal "ach" is BERT's "##ach"), or the same special role ([CLS] <-> <s>)."""
    pairs = {new_id: old_vocab.entry(*form) for new_id, form in _word_forms(new_tok).items()}
    pairs = {new_id: old_id for new_id, old_id in pairs.items() if old_id is not None}
    try:
        old_special, new_special = special_token_ids(old_vocab.tokenizer), special_token_ids(new_tok)
    except ValueError:  # a vocabulary whose roles cannot be told: word forms only
        return pairs
    for role, new_id in new_special.items():
        if new_id is not None and old_special.get(role) is not None:
            pairs[new_id] = old_special[role]
    return pairs


def _word_forms(tokenizer: Tokenizer) -> dict[int, tuple[bool, str]]:
    """id -> (starts a word, text) for every entry: a form in which vocabularies that mark words differently
    compare. WordPiece: "x" starts a word, "##y" continues one; Metaspace: "▁x" starts, "y" continues;
    ByteLevel: "Ġx" starts, "y" continues, its byte symbols decoded ("ĠsÃ©" -> (True, "sé")). A marked-word
    tokenizer also leaves a text's first word unmarked unless it adds a prefix space; the entry itself cannot
    say so, and inside a word is where an unmarked piece mostly stands. Added tokens (the special ones) are
    their own text. A vocabulary with neither convention (WordLevel) is all word starts."""
    spec = json.loads(tokenizer.to_str())
    prefix, marker = word_markers(spec)
    added = {entry["id"]: entry["content"] for entry in spec.get("added_tokens", [])}
    return {index: (True, added[index]) if index in added else _word_form(token, prefix, marker)
            for token, index in tokenizer.get_vocab(with_added_tokens=True).items()}


def _word_form(token: str, prefix: str | None, marker: str | None) -> tuple[bool, str]:
    """(starts a word, text) of one model entry under a continuation `prefix` or a word-start `marker`."""
    if prefix:
        continues = token.startswith(prefix) and len(token) > len(prefix)  # "##" alone is the text "##"
        return (False, token[len(prefix):]) if continues else (True, token)
    if marker == BYTE_LEVEL_SPACE:
        token, marker = _byte_level_text(token), " "
    if marker and token.startswith(marker):
        return True, token[len(marker):]
    return marker is None, token


def _byte_level_text(token: str) -> str:
    """The text of a ByteLevel entry ("ĠsÃ©" -> " sé"). A piece of a character (one byte of "é") keeps its
    bytes as surrogates (`_is_text` is False): it then matches only the same bytes of another byte-level
    vocabulary, and has no text to split."""
    if any(symbol not in BYTE_OF_SYMBOL for symbol in token):
        return token  # not the byte alphabet: an entry added as plain text
    return bytes(BYTE_OF_SYMBOL[symbol] for symbol in token).decode("utf-8", errors="surrogateescape")


def _is_text(text: str) -> bool:
    """Whether `text` is whole characters (no byte-level fragment kept as a surrogate)."""
    return not any("\ud800" <= ch <= "\udfff" for ch in text)


def _ids_by_form(forms: dict[int, tuple[bool, str]]) -> dict[tuple[bool, str], int]:
    """word form -> id; where two entries share a form (an added token that is also a model entry) the lower
    id, so the match does not depend on the vocabulary's hash order."""
    by_form: dict[tuple[bool, str], int] = {}
    for index in sorted(forms):
        by_form.setdefault(forms[index], index)
    return by_form


class OldVocabulary:
    """The checkpoint's tokenizer, asked about a new token's text in the new token's place in a word: its
    entry of that form (copy), and its pieces of that text (mean: FVT's split)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.forms = _word_forms(tokenizer)
        self.by_form = _ids_by_form(self.forms)
        prefix, _ = word_markers(json.loads(tokenizer.to_str()))
        self.prefixes_continuations = prefix is not None

    def entry(self, starts_word: bool, text: str) -> int | None:
        """The old id of `text` as a word start or inside a word (None: the old vocabulary has no such entry)."""
        return self.by_form.get((self._starts_word(starts_word, text), text))

    def pieces(self, starts_word: bool, text: str) -> list[int]:
        """Old ids of the pieces of `text` as a word start or inside a word; [] where there is no text."""
        if not text.strip() or not _is_text(text):
            return []
        starts_word = self._starts_word(starts_word, text)
        ids = self._encode(text)
        if starts_word and ids and not self.forms[ids[0]][0]:
            # A marked-word tokenizer that leaves a text's first word unmarked (ByteLevel without
            # add_prefix_space): a space before it gives the word-start pieces ("Ġse", not "se").
            ids = self._encode(" " + text)
        if not starts_word and ids and self.forms[ids[0]][0]:
            # A tokenizer cannot be asked to split a text as the inside of a word: it starts the text's first
            # word. Its first piece is taken as the continuing entry of the same text where the old vocabulary
            # holds one ("ach" -> "##ach", not the word "ach").
            ids[0] = self.by_form.get((False, self.forms[ids[0]][1]), ids[0])
        return ids

    def _starts_word(self, starts_word: bool, text: str) -> bool:
        """Whether the old tokenizer starts a word at `text`. A piece inside a new token's word can start one in
        the old tokenizer: BERT's pre-tokenizer cuts punctuation off into words of its own, so byte-level
        BPE's unmarked ":" (after a word) is BERT's word ":", never the "##:" BERT does not use. A marked-word
        tokenizer leaves such a piece unmarked as well: the form stands."""
        if starts_word or not self.prefixes_continuations or self.tokenizer.pre_tokenizer is None \
                or not _is_text(text):
            return starts_word
        glued = "a" + text  # the text straight after a letter, as inside a word
        if self.tokenizer.normalizer is not None:
            glued = self.tokenizer.normalizer.normalize_str(glued)
        return len(self.tokenizer.pre_tokenizer.pre_tokenize_str(glued)) > 1

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids


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


def _role_ids(vocab_dir: Path, tokenizer: Tokenizer) -> dict[str, int]:
    """Role (cls, sep, pad, unk, mask) -> id in the vocab stage's tokenizer, as its transformers files name them."""
    try:
        ids = special_token_ids(tokenizer, special_tokens(vocab_dir))
    except ValueError as err:
        raise ConfigError(f"model.vocab_mode=replace: {vocab_dir} does not say which token is pad, cls and sep "
                          f"({err}): rebuild the vocab stage") from None
    missing = [role for role, index in ids.items() if index is None]
    if missing:
        raise ConfigError(f"model.vocab_mode=replace: {vocab_dir}'s tokenizer lacks its {', '.join(missing)} "
                          "token(s): rebuild the vocab stage")
    return ids


@torch.no_grad()
def _use_special_ids(model, ids: dict[str, int]) -> None:
    """Point the config's special-token ids (pad always; bos, eos, cls, sep where the checkpoint's config has
    them) and the embedding's padding index at the new tokenizer's tokens: left as they were, they name
    whatever the new vocabulary put at the checkpoint's ids, and the exported config contradicts its tokenizer."""
    config = model.config
    for key, role in SPECIAL_ID_KEYS.items():
        if key == "pad_token_id" or getattr(config, key, None) is not None:
            setattr(config, key, ids[role])
    model.get_input_embeddings().padding_idx = ids["pad"]
    if config.model_type in ("roberta", "xlm-roberta"):
        _move_positions(model.base_model.embeddings, ids["pad"], config)


@torch.no_grad()
def _move_positions(embeddings, pad: int, config) -> None:
    """RoBERTa numbers a row's tokens from padding_idx + 1 (position ids are the cumulative count of non-pad
    tokens plus padding_idx; padding itself sits at padding_idx), so a new pad id alone would move every
    token onto another learnt position, and keeping the old padding_idx would treat whatever token now has
    the old pad id as padding. The table moves with the pad id instead: the i-th token reads the row it read
    before (old pad + i is now pad + i), the padding row stays the padding row, and the usable length stays
    the same. Rows below padding_idx are never read."""
    old_pad = embeddings.padding_idx
    if old_pad == pad:
        return
    table = embeddings.position_embeddings.weight  # (old_pad + 1 + usable positions, hidden)
    moved = torch.cat([table.new_zeros(pad, table.shape[1]), table[old_pad:]])  # (pad + 1 + usable, hidden)
    embeddings.position_embeddings = torch.nn.Embedding.from_pretrained(moved, freeze=False, padding_idx=pad)
    embeddings.padding_idx = pad
    config.max_position_embeddings = len(moved)
    # Non-persistent buffers sized by max_position_embeddings (rebuilt from the config when the export loads)
    embeddings.position_ids = torch.arange(len(moved), device=table.device).expand((1, -1))
    if getattr(embeddings, "token_type_ids", None) is not None:
        embeddings.token_type_ids = torch.zeros((1, len(moved)), dtype=torch.long, device=table.device)
    log.info("init_from: pad token id %d -> %d; RoBERTa position table moved with it (%d rows)", old_pad, pad,
             len(moved))
