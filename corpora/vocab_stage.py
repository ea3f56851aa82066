"""The vocab stage: cleaned documents -> `tokenizer.json` (HF fast format) + intrinsic metrics."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from corpora.corpus_stage import run_corpus
from corpora.documents import iter_documents
from corpora.errors import CorpusInputError
from corpora.stagedir import build_stage, read_manifest, stage_folder, reuse, write_json_atomic
from corpora.tokenizer_build import SPECIAL_TOKENS, add_bert_post_processor, build_untrained

log = logging.getLogger("bertforge.vocab")


def run_vocab(cfg) -> Path:
    """Build (or reuse) the vocabulary folder for `cfg`; runs the corpus stage first if needed."""
    from pretrain.config import section

    corpus_dir = run_corpus(cfg)
    payload = section(cfg, "tokenizer") | {"heldout_percent": cfg.shards.heldout_percent}
    inputs = {"corpus": read_manifest(corpus_dir)["hash"]}
    folder = stage_folder(cfg.paths.work_dir, "vocab", payload, inputs)
    if reuse(folder, log):
        return folder
    tokenizer, trainer = build_untrained(cfg.tokenizer)
    with build_stage(cfg.paths.work_dir, "vocab", payload, inputs) as build:
        texts = _training_texts(corpus_dir, cfg)
        tokenizer.train_from_iterator(texts, trainer=trainer)
        if texts.count == 0:
            raise CorpusInputError(str(corpus_dir), "has no training documents",
                                   "Loosen the filters or add text to the corpus.")
        add_bert_post_processor(tokenizer)
        save_hf_tokenizer(tokenizer, build.tmp)
        heldout = [d["text"] for d in iter_documents(corpus_dir, "heldout", cfg.shards.heldout_percent)]
        metrics = intrinsic_metrics(tokenizer, heldout) | {"training_documents": texts.count}
        write_json_atomic(build.tmp / "metrics.json", metrics)
        build.manifest["counts"] = metrics
    log.info("vocab: %d tokens, fertility %.3f -> %s", metrics["vocab_size"], metrics["fertility"], folder)
    return folder


class _CountingTexts:
    """Streams training texts (never the whole corpus in memory) and counts what it yielded."""

    def __init__(self, corpus_dir: Path, heldout_percent: float, limit: int):
        self.corpus_dir, self.heldout_percent, self.limit, self.count = corpus_dir, heldout_percent, limit, 0

    def __iter__(self):
        for doc in iter_documents(self.corpus_dir, "train", self.heldout_percent):
            if self.limit and self.count >= self.limit:
                return
            self.count += 1
            yield doc["text"]


def _training_texts(corpus_dir: Path, cfg) -> _CountingTexts:
    return _CountingTexts(corpus_dir, cfg.shards.heldout_percent, cfg.tokenizer.max_training_docs)


def save_hf_tokenizer(tokenizer, folder: Path) -> PreTrainedTokenizerFast:
    """Save `tokenizer.json` plus the transformers files that name the special tokens."""
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
    )
    hf.save_pretrained(str(folder))
    return hf


def intrinsic_metrics(tokenizer, texts: list[str]) -> dict:
    """Fertility (subwords per whitespace word), continued-word share, UNK rate, chars per token."""
    unk = tokenizer.token_to_id("[UNK]")
    words = subwords = continued = unks = chars = 0
    used: set[int] = set()
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        per_word: dict[int, int] = {}
        for word_id in encoding.word_ids:
            if word_id is not None:
                per_word[word_id] = per_word.get(word_id, 0) + 1
        words += len(per_word)
        continued += sum(1 for n in per_word.values() if n > 1)
        subwords += len(encoding.ids)
        unks += sum(1 for i in encoding.ids if i == unk)
        used.update(encoding.ids)
    chars = sum(len(t) for t in texts)
    vocab_size = tokenizer.get_vocab_size()
    return {
        "vocab_size": vocab_size,
        "heldout_documents": len(texts),
        "heldout_words": words,
        "fertility": subwords / max(words, 1),
        "continued_word_share": continued / max(words, 1),
        "unk_rate": unks / max(subwords, 1),
        "chars_per_token": chars / max(subwords, 1),
        "vocab_used_share": len(used) / max(vocab_size - len(SPECIAL_TOKENS), 1),
    }
