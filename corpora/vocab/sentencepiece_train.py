"""sentencepiece as the trainer for BPE and Unigram, converted into a `tokenizers.Tokenizer`.

The sample is normalised with the same normaliser the final tokenizer.json carries and streamed to
a text file; sentencepiece runs with its identity normalisation on it, so the converted tokenizer
and sentencepiece segment text the same way. Special tokens get the style's ids inside
sentencepiece itself (pad/unk/bos/eos ids and control symbols), so no id is shifted afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from bertforge.common.errors import ConfigError
from corpora.vocab.special_tokens import STYLES
from corpora.vocab.build import build_normalizer, smaller_alphabet_advice, special_token_list
from corpora.config import TokenizerConfig

log = logging.getLogger("bertforge.vocab")

# sentencepiece silently skips "sentences" longer than max_sentence_length bytes; we cut documents
# into lines, and long lines at a space, below this.
_MAX_LINE_BYTES = 4000
_SPM_ROLE = {"pad": "pad", "unk": "unk", "cls": "bos", "sep": "eos"}  # our roles -> its reserved ids


def write_training_text(texts: Iterable[str], normalizer, path: Path) -> int:
    """Stream normalised training text to `path`, one line of at most ~4 kB each; returns lines written.

    Texts are cut at their line breaks before normalising, as the tokenizer.json normaliser turns a line
    break into a space and sentencepiece starts each line with a word-start "▁": either way the next line's
    first word starts a word, and training and the converted tokenizer agree."""
    lines = 0
    with open(path, "w", encoding="utf-8") as handle:
        for text in texts:
            for line in text.split("\n"):
                line = normalizer.normalize_str(line) if normalizer else line
                for chunk in _chunks(line.strip()):
                    handle.write(chunk + "\n")
                    lines += 1
    return lines


def _chunks(line: str) -> Iterable[str]:
    while len(line.encode("utf-8")) > _MAX_LINE_BYTES:
        cut = line.rfind(" ", 0, _MAX_LINE_BYTES // 4)  # // 4: a character is at most 4 UTF-8 bytes
        cut = cut if cut > 0 else _MAX_LINE_BYTES // 4
        yield line[:cut]
        line = line[cut:].lstrip()
    if line:
        yield line


def train_sentencepiece(texts: Iterable[str], tok_cfg: TokenizerConfig, workdir: Path) -> Tokenizer:
    """Train a sentencepiece BPE or Unigram model on `texts` and return it as a `tokenizers.Tokenizer`."""
    processor = train_processor(texts, tok_cfg, workdir)
    tokenizer = to_tokenizers(processor, tok_cfg.model, STYLES[tok_cfg.style]["unk"])
    tokenizer.normalizer = build_normalizer(tok_cfg)
    return tokenizer


def train_processor(texts: Iterable[str], tok_cfg: TokenizerConfig, workdir: Path):
    """Train sentencepiece (`tok_cfg.model`: bpe or unigram) on `texts`; returns the loaded processor, whose
    model stays in `workdir` as spm.model / spm.vocab. Special tokens hold the style's ids."""
    import sentencepiece as spm

    normalizer = build_normalizer(tok_cfg)
    text_file, prefix = Path(workdir) / "spm_input.txt", Path(workdir) / "spm"
    if write_training_text(texts, normalizer, text_file) == 0:
        raise ConfigError("the training sample is empty: nothing for sentencepiece to train on")
    specials = special_token_list(tok_cfg)
    roles = STYLES[tok_cfg.style]
    ids = {f"{_SPM_ROLE[role]}_id": specials.index(token) for role, token in roles.items() if role in _SPM_ROLE}
    pieces = {f"{_SPM_ROLE[role]}_piece": token for role, token in roles.items() if role in _SPM_ROLE}
    controls = [t for t in specials if t not in pieces.values()]  # [MASK] and extras: never produced from text
    try:
        spm.SentencePieceTrainer.train(
            input=str(text_file), model_prefix=str(prefix), model_type=tok_cfg.model,
            vocab_size=tok_cfg.vocab_size, character_coverage=tok_cfg.character_coverage,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            input_sentence_size=0,  # the file is already the bounded sample: read it all, no reshuffle
            hard_vocab_limit=False,  # like the tokenizers trainers: stop short when the text has no more pieces
            num_threads=tok_cfg.sentencepiece_threads, max_sentence_length=_MAX_LINE_BYTES * 2,
            control_symbols=controls, minloglevel=2, **ids, **pieces)
    except RuntimeError as err:
        # Its advice names its own flags: say which bertforge keys to change.
        advice = (" In bertforge, raise tokenizer.vocab_size" + smaller_alphabet_advice(tok_cfg)
                  if "required_chars" in str(err) else "")
        raise ConfigError(f"sentencepiece could not train tokenizer.vocab_size={tok_cfg.vocab_size}: {err}{advice}"
                          ) from None
    finally:
        text_file.unlink(missing_ok=True)
    processor = spm.SentencePieceProcessor(model_file=str(prefix.with_suffix(".model")))
    for expected_id, token in enumerate(specials):
        if processor.id_to_piece(expected_id) != token:  # would silently shift every special id
            raise RuntimeError(f"sentencepiece put {token!r} at id {processor.piece_to_id(token)}, not {expected_id}")
    return processor


def to_tokenizers(processor, model_type: str, unk_token: str) -> Tokenizer:
    """The same segmentation as a `tokenizers.Tokenizer` (Metaspace pre-tokenizer, ids unchanged)."""
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    if model_type == "unigram":
        model = models.Unigram(pieces, unk_id=processor.unk_id(), byte_fallback=False)
    else:
        vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
        specials = {i for i in range(len(pieces)) if processor.is_control(i) or processor.is_unknown(i)}
        model = models.BPE(vocab, bpe_merges(vocab, specials), unk_token=unk_token, fuse_unk=True)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="always")
    return tokenizer


def bpe_merges(vocab: dict[str, int], special_ids: set[int]) -> list[tuple[str, str]]:
    """Merge list that rebuilds sentencepiece's BPE pieces in its own priority order.

    sentencepiece stores no merges, only pieces ranked by when they were learnt (their id). Every
    way of cutting a piece into two pieces of the vocabulary is a merge producing it; merges are
    ranked by the produced piece's id, ties broken by the parts' ids, so the earliest-learnt piece
    is always formed first, as sentencepiece forms it.
    """
    ranked = []
    for piece, piece_id in vocab.items():
        if piece_id in special_ids or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if vocab.get(left, -1) >= 0 and vocab.get(right, -1) >= 0 \
                    and vocab[left] not in special_ids and vocab[right] not in special_ids:
                ranked.append((piece_id, vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]
