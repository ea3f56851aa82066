"""The vocab stage: cleaned documents -> `tokenizer.json` (HF fast format) + intrinsic metrics.

The folder holds tokenizer.json and the transformers files naming the special tokens,
metrics.json (held-out text, gold treebank words, and the same for a reference tokenizer; for
sentencepiece BPE converted to WordPiece, the share of held-out words both segment alike),
tokenizer_dropout.json when BPE dropout is asked for, and new_tokens.json when an existing
vocabulary was extended instead of trained.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from bertforge.common.errors import ConfigError, CorpusInputError
from bertforge.common.stage_folder import StageOutput, write_json_atomic
from corpora.config import SourceConfig, TokenizerConfig
from corpora.documents import corpus_sentences, iter_documents
from corpora.vocab.special_tokens import special_tokens
from corpora.vocab.build import (build_normalizer, build_untrained, check_alphabet, check_options, check_trained_size,
                                 finish)
from corpora.vocab.extend import add_tokens, choose_new_tokens, count_words
from corpora.vocab.metrics import conllu_files, gold_metrics, gold_sentences, load_reference, text_metrics, unk_id
from corpora.vocab.sample import TrainingSample

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger("bertforge.vocab")


VOCAB_MODES = ("keep", "extend", "replace")

# Options that only shape a vocabulary trained here: extending or keeping a tokenizer takes its model,
# normaliser and special tokens as they are. Not listed: vocab_size, which experiment files set for the
# vocabulary they train (an extension's size is tokenizer.extend_tokens), and bpe_dropout, which applies to
# a BPE base (`check_base`).
TRAINING_ONLY = ("model", "trainer", "byte_level", "style", "extra_special_tokens", "unused_tokens", "normalizer",
                 "lowercase", "strip_accents", "min_frequency", "limit_alphabet", "sentencepiece_threads")
# Options of extending that keeping ignores: the sample the new words are counted on, and how many to add.
EXTEND_ONLY = ("max_training_docs", "max_training_chars", "extend_tokens")
# Values the config groups give by default besides the dataclass's: conf/tokenizer/wordpiece.yaml's normaliser.
_GROUP_DEFAULTS = {"normalizer": ("bert",)}


@dataclass(frozen=True)
class VocabPlan:
    """What the vocab stage does: train a new vocabulary, extend a base tokenizer, or keep one as it is."""

    action: str
    """train, extend or keep."""
    base: str = ""
    """The tokenizer extended or kept (a folder with tokenizer.json, or the file itself)."""
    base_key: str = ""
    """The config key that named `base`, for error messages."""


def vocab_plan(tok_cfg: TokenizerConfig, start: Path | None = None, vocab_mode: str = "replace") -> VocabPlan:
    """The vocab stage's action. `start` is the continued-pretraining checkpoint (`model.init_from`) and
    `vocab_mode` what to do with its vocabulary: keep it, extend it with `tokenizer.extend_tokens` domain
    words, or replace it with a newly trained one. Without a start, `tokenizer.extend_from` extends."""
    if vocab_mode not in VOCAB_MODES:
        raise ConfigError(f"model.vocab_mode={vocab_mode!r}: choose one of {', '.join(VOCAB_MODES)}")
    if start is not None and vocab_mode in ("keep", "extend"):
        if tok_cfg.extend_from and Path(tok_cfg.extend_from).resolve() != start.resolve():
            raise ConfigError(f"tokenizer.extend_from={tok_cfg.extend_from!r} and model.init_from name different "
                              f"tokenizers with model.vocab_mode={vocab_mode}: drop tokenizer.extend_from")
        plan = VocabPlan(vocab_mode, str(start), "model.init_from")
    elif tok_cfg.extend_from:
        plan = VocabPlan("extend", tok_cfg.extend_from, "tokenizer.extend_from")
    else:
        return VocabPlan("train")
    if plan.action == "extend" and tok_cfg.extend_tokens <= 0:
        raise ConfigError(f"tokenizer.extend_tokens={tok_cfg.extend_tokens}: extending {plan.base_key}'s "
                          "vocabulary needs a number of new tokens (e.g. tokenizer=extend, 2000)")
    check_unused_options(tok_cfg, plan)
    return plan


def check_unused_options(tok_cfg: TokenizerConfig, plan: VocabPlan) -> None:
    """Raise ConfigError naming every option set away from its default that `plan` (extend or keep) would
    silently ignore: e.g. tokenizer.lowercase=true does not lowercase an extended tokenizer."""
    keys = TRAINING_ONLY + (EXTEND_ONLY if plan.action == "keep" else ())
    defaults = TokenizerConfig()
    unused = [f"tokenizer.{key}={_as_override(getattr(tok_cfg, key))}" for key in keys
              if getattr(tok_cfg, key) != getattr(defaults, key)
              and getattr(tok_cfg, key) not in _GROUP_DEFAULTS.get(key, ())]
    if unused:
        action = "extends" if plan.action == "extend" else "keeps"
        raise ConfigError(f"{', '.join(unused)}: the vocab stage {action} {plan.base_key}'s tokenizer as it is and "
                          f"trains nothing, so {'it does' if len(unused) == 1 else 'they do'} not apply: drop "
                          f"{'it' if len(unused) == 1 else 'them'} (or train a new vocabulary: no tokenizer.extend_from, "
                          "model.vocab_mode=replace)")


def _as_override(value) -> str:
    """A value as written on the command line (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_base(tok_cfg: TokenizerConfig, plan: VocabPlan, base: Tokenizer) -> None:
    """The options that depend on the tokenizer extended or kept: BPE-dropout needs a BPE model."""
    model_type = type(base.model).__name__
    if tok_cfg.bpe_dropout and model_type != "BPE":
        raise ConfigError(f"tokenizer.bpe_dropout={tok_cfg.bpe_dropout} applies to BPE only, and {plan.base_key}="
                          f"{plan.base!r} is a {model_type} tokenizer: drop tokenizer.bpe_dropout")


def check_split_and_metrics(tok_cfg: TokenizerConfig, heldout_percent: float) -> None:
    """Raise ConfigError, naming the key, when the held-out split or the metrics' budget cannot give a score:
    with no held-out documents the metrics would be over 0 words (fertility 0.000, the best in a sweep)."""
    if not 0.0 < heldout_percent < 100.0:
        raise ConfigError(f"shards.heldout_percent={heldout_percent}: give a share between 0 and 100 (exclusive, "
                          "e.g. 5): the vocabulary is scored, and the model evaluated, on the held-out documents")
    if tok_cfg.metrics_max_chars < 0:
        raise ConfigError(f"tokenizer.metrics_max_chars={tok_cfg.metrics_max_chars}: give 0 (no cap) or more "
                          "held-out characters to score")


def checked_vocab_inputs(tok_cfg: TokenizerConfig, source: SourceConfig, start: Path | None = None,
                         vocab_mode: str = "replace", heldout_percent: float | None = None) -> dict:
    """Check the tokenizer options (with `heldout_percent`, the held-out split too), the base or reference
    tokenizer and the gold treebanks before any stage runs; returns what names the vocabulary besides the
    config: the hashes of the tokenizer files it starts from or is compared with (a changed file is a changed
    input)."""
    if heldout_percent is not None:
        check_split_and_metrics(tok_cfg, heldout_percent)
    plan = vocab_plan(tok_cfg, start, vocab_mode)
    if plan.action == "train":
        check_options(tok_cfg)
    if not tok_cfg.gold_conllu:
        _source_treebanks(source)
    else:
        conllu_files(tok_cfg.gold_conllu)
    hashes = {}
    for key, path in ((plan.base_key, plan.base), ("tokenizer.reference", tok_cfg.reference)):
        if path:
            loaded = load_reference(path, key, convert=True)
            if key == plan.base_key:
                check_base(tok_cfg, plan, loaded)
            hashes[key] = _text_hash(loaded.to_str())
    return {"vocab_action": plan.action, "tokenizer_sha256": hashes} if hashes else {}


def build_vocab(tok_cfg: TokenizerConfig, source: SourceConfig, heldout_percent: float, corpus_dir: Path,
                out: StageOutput, start: Path | None = None, vocab_mode: str = "replace") -> None:
    """Train, extend or keep (see `vocab_plan`) the vocabulary for the corpus folder's training documents.

    `source` names the treebanks whose gold words measure fertility when `tokenizer.gold_conllu` is
    empty; `heldout_percent` is the held-out split every later stage shares (never trained on). The
    metrics compare with `tokenizer.reference`, or else with the base tokenizer extended or kept.
    """
    check_split_and_metrics(tok_cfg, heldout_percent)
    plan = vocab_plan(tok_cfg, start, vocab_mode)
    if plan.action == "train":
        check_options(tok_cfg)
    base = load_reference(plan.base, plan.base_key, convert=True) if plan.base else None
    if base is not None:
        check_base(tok_cfg, plan, base)
    reference_path = tok_cfg.reference or plan.base
    # convert=True as `checked_vocab_inputs` loads it: a folder with only a slow tokenizer's files passes both.
    reference = load_reference(tok_cfg.reference, "tokenizer.reference", convert=True) if tok_cfg.reference else base
    gold_files = conllu_files(tok_cfg.gold_conllu) if tok_cfg.gold_conllu else _source_treebanks(source)
    sample = TrainingSample.plan(corpus_dir, heldout_percent, tok_cfg.max_training_docs, tok_cfg.max_training_chars,
                                 build_normalizer(tok_cfg) if plan.action == "train" else None)
    if sample.split_documents == 0:
        raise CorpusInputError(str(corpus_dir), "has no training documents (all filtered out, or all held out)",
                               "Loosen the filters, add text, or lower shards.heldout_percent.")
    if plan.action == "train":
        check_alphabet(tok_cfg, len(sample.alphabet))
    heldout, heldout_sentences = _heldout_texts(corpus_dir, heldout_percent, tok_cfg.metrics_max_chars)
    if not any(text.split() for text in heldout):  # before training: no metric over 0 words is ever reported
        raise CorpusInputError(str(corpus_dir), f"has no held-out words to score the vocabulary on "
                               f"({len(heldout)} held-out documents at shards.heldout_percent={heldout_percent})",
                               "Raise shards.heldout_percent or add documents.")
    with out.build() as build:
        started = time.perf_counter()
        extension = None
        if plan.action == "extend":
            tokenizer, roles, extension = _extend(base, plan.base, tok_cfg.extend_tokens, sample, build.tmp)
        elif plan.action == "keep":
            tokenizer, roles = base, special_tokens(Path(plan.base))
        else:
            tokenizer, roles = train(tok_cfg, sample, build.tmp)
        training_seconds = time.perf_counter() - started
        save_hf_tokenizer(tokenizer, build.tmp, roles)
        if tok_cfg.bpe_dropout:
            tokenizer_with_dropout(tokenizer, tok_cfg.bpe_dropout).save(str(build.tmp / "tokenizer_dropout.json"))
        metrics = measure(tokenizer, roles, tok_cfg, heldout, heldout_sentences, gold_files, _source_paths(source),
                          reference,
                          reference_path)
        metrics |= {"action": plan.action, "base": plan.base, "training_documents": sample.documents,
                    "training_chars": sample.chars, "training_seconds": round(training_seconds, 3),
                    "special_tokens": roles}
        if plan.action == "train" and tok_cfg.trainer == "sentencepiece" and tok_cfg.model == "wordpiece":
            from corpora.vocab.sp_wordpiece import segmentation_agreement

            # How often greedy WordPiece lookup cuts a held-out word as the BPE it was converted from did.
            metrics["sentencepiece_agreement"] = segmentation_agreement(build.tmp / "spm.model", tokenizer, heldout)
        if extension:
            metrics["extension"] = extension | {
                "fertility_before": _base_fertility(base, plan.base, metrics, reference is base, heldout),
                "fertility_after": metrics["fertility"]}
        write_json_atomic(build.tmp / "metrics.json", metrics)
        build.manifest["counts"] = metrics
    log.info("vocab: %s, %d tokens, held-out fertility %.3f%s -> %s", plan.action, metrics["vocab_size"],
             metrics["fertility"],
             f" (reference {metrics['reference']['heldout']['fertility']:.3f})" if reference else "", out.folder)


def _base_fertility(base: Tokenizer, base_path: str, metrics: dict, base_is_reference: bool,
                    heldout: list[str]) -> float:
    """Held-out fertility of the tokenizer extended, before its new tokens: the reference's score when the
    base is the reference, else measured here (a tokenizer.reference is another tokenizer)."""
    if base_is_reference:
        return metrics["reference"]["heldout"]["fertility"]
    return text_metrics(base, heldout, unk_id(base, base_path))["fertility"]


def train(tok_cfg: TokenizerConfig, sample: TrainingSample, workdir: Path) -> tuple[Tokenizer, dict[str, str]]:
    """Train the configured model on the streamed sample; returns the finished tokenizer and its roles."""
    if tok_cfg.trainer == "sentencepiece" and tok_cfg.model == "wordpiece":
        from corpora.vocab.sp_wordpiece import train_sp_wordpiece

        tokenizer, _ = train_sp_wordpiece(sample, tok_cfg, workdir)
    elif tok_cfg.trainer == "sentencepiece":
        from corpora.vocab.sentencepiece_train import train_sentencepiece

        tokenizer = train_sentencepiece(sample, tok_cfg, workdir)
    else:
        tokenizer, trainer = build_untrained(tok_cfg)
        tokenizer.train_from_iterator(sample, trainer=trainer)
    check_trained_size(tokenizer, tok_cfg)
    if sample.documents == 0:
        raise CorpusInputError(str(sample.corpus_dir), "gave an empty training sample",
                               "Raise tokenizer.max_training_chars / max_training_docs (0 means no cap).")
    return tokenizer, finish(tokenizer, tok_cfg)


def _extend(base: Tokenizer, base_path: str, extend_tokens: int, sample: TrainingSample, workdir: Path):
    counts = count_words(base, sample)
    chosen = choose_new_tokens(base, counts, extend_tokens)
    tokenizer = add_tokens(base, [c["token"] for c in chosen])
    write_json_atomic(workdir / "new_tokens.json", chosen)
    extension = {"base": base_path, "base_vocab_size": base.get_vocab_size(with_added_tokens=True),
                 "added_tokens": len(chosen), "domain_words_counted": sum(counts.values())}
    return tokenizer, special_tokens(Path(base_path)), extension


def tokenizer_with_dropout(tokenizer: Tokenizer, dropout: float) -> Tokenizer:
    """A copy of a BPE tokenizer whose merges are each skipped with probability `dropout` (BPE-dropout):
    for tokenising training data only; every call segments rare words differently."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.model.dropout = dropout
    return copy


def measure(tokenizer: Tokenizer, roles: dict[str, str], tok_cfg: TokenizerConfig, heldout: list[str],
            heldout_sentences: set[str], gold_files: list[Path], inside: list[Path], reference: Tokenizer | None,
            reference_path: str) -> dict:
    """Held-out and gold-word metrics of `tokenizer`, and of the reference on the same words.

    `inside` are the corpus's input paths: gold treebanks under them are scored on `heldout_sentences` only
    (the sentences of the held-out documents, so a short training sentence is not taken for a part of one)."""
    ours = text_metrics(tokenizer, heldout, tokenizer.token_to_id(roles["unk"]))
    metrics = {"vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
               "heldout_documents": ours.pop("documents"), "heldout_words": ours.pop("words")} | ours
    # A treebank that is also a corpus input is scored only on sentences of held-out documents.
    only_in = heldout_sentences if any(_is_under(f, inside) for f in gold_files) else None
    sentences = gold_sentences(gold_files, only_in, tok_cfg.metrics_max_chars // 10) if gold_files else []
    if sentences:
        metrics["gold"] = gold_metrics(tokenizer, sentences, tokenizer.token_to_id(roles["unk"])) | {
            "files": [str(f) for f in gold_files], "heldout_sentences_only": only_in is not None}
    if reference is not None:
        ref_unk = unk_id(reference, reference_path)
        metrics["reference"] = {"path": reference_path,
                                "vocab_size": reference.get_vocab_size(with_added_tokens=True),
                                "heldout": text_metrics(reference, heldout, ref_unk)}
        if sentences:
            metrics["reference"]["gold"] = gold_metrics(reference, sentences, ref_unk)
        metrics["fertility_vs_reference"] = metrics["fertility"] / max(metrics["reference"]["heldout"]["fertility"], 1e-9)
    return metrics


def save_hf_tokenizer(tokenizer: Tokenizer, folder: Path, roles: dict[str, str] | None = None) -> PreTrainedTokenizerFast:
    """Save `tokenizer.json` plus the transformers files that name the special tokens."""
    from transformers import PreTrainedTokenizerFast  # deferred: a reused vocab stage (planning) never needs it

    roles = roles or special_tokens(tokenizer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token=roles["unk"], pad_token=roles["pad"], cls_token=roles["cls"],
        sep_token=roles["sep"], mask_token=roles["mask"], model_max_length=512,
    )
    hf.save_pretrained(str(folder))
    return hf


def _heldout_texts(corpus_dir: Path, heldout_percent: float, max_chars: int) -> tuple[list[str], set[str]]:
    """The held-out documents' texts up to about `max_chars`, and the sentences of those whose reader
    recorded sentence boundaries (CoNLL-U)."""
    texts, sentences, chars = [], set(), 0
    for doc in iter_documents(corpus_dir, "heldout", heldout_percent):
        if max_chars and chars >= max_chars:
            break
        texts.append(doc["text"])
        sentences.update(corpus_sentences(doc["text"], doc.get("metadata")) or ())
        chars += len(doc["text"])
    return texts, sentences


def _source_paths(source: SourceConfig) -> list[Path]:
    return [Path(i.path).resolve() for i in source.inputs]


def _source_treebanks(source: SourceConfig) -> list[Path]:
    """Default gold words: the conllu inputs of the source (empty when it has none)."""
    paths = [i.path for i in source.inputs if i.format == "conllu"]
    return conllu_files(paths, "source.inputs (conllu, used as gold words)") if paths else []


def _is_under(path: Path, roots: list[Path]) -> bool:
    path = path.resolve()
    return any(path == root or root in path.parents for root in roots)


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
