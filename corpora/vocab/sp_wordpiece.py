"""gaBERT's vocabulary: sentencepiece BPE trained on pre-tokenised text, converted to WordPiece.

gaBERT (wiki-bert-pipeline + sent2wordpiece) trained sentencepiece BPE on text already split into
words and punctuation, then rewrote its pieces for Google's BERT code: a word-initial piece `▁x`
becomes `x`, any other piece `y` becomes `##y`, sentencepiece's own specials are dropped and BERT's
specials and 100 `[unused]` tokens added. BERT then segments each word greedily, longest match
first, which is not how BPE segments it: `segmentation_agreement` measures how often the two agree.

Differences from gaBERT, on purpose: the special tokens keep this project's ids (`[PAD] [UNK] [CLS]
[SEP] [MASK]` = 0..4, then `[unusedN]`), where sent2wordpiece put the unused block between [PAD] and
[UNK]; the bare `▁` piece (a word start followed by a piece that did not merge with it), which
sent2wordpiece turned into an empty line, is dropped and counted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from corpora.config import TokenizerConfig
from corpora.vocab.build import build_normalizer, special_token_list
from corpora.vocab.special_tokens import STYLES

WORD_START = "▁"  # sentencepiece's word-boundary marker (U+2581)
CONTINUATION = "##"


def word_splitter() -> pre_tokenizers.PreTokenizer:
    """BERT's basic split (whitespace, then every punctuation character alone): what gaBERT's
    sentencepiece saw and what the converted WordPiece tokenizer applies before its lookup."""
    return pre_tokenizers.BertPreTokenizer()


def pre_tokenised(texts: Iterable[str], normalizer) -> Iterator[str]:
    """`texts` normalised and split into words, joined by single spaces, line by line (lines stay lines,
    so sentencepiece's per-line sentences are the corpus's own)."""
    split = word_splitter()
    for text in texts:
        text = normalizer.normalize_str(text) if normalizer else text
        yield "\n".join(" ".join(w for w, _ in split.pre_tokenize_str(line)) for line in text.splitlines())


def train_sp_wordpiece(texts: Iterable[str], tok_cfg: TokenizerConfig, workdir: Path) -> tuple[Tokenizer, dict]:
    """Train sentencepiece BPE on the pre-tokenised `texts` and convert it; returns the WordPiece
    tokenizer (normaliser and BERT pre-tokenizer set, specials not yet registered: see `build.finish`)
    and counts of the conversion. spm.model stays in `workdir` for `segmentation_agreement`."""
    from corpora.vocab.sentencepiece_train import train_processor

    bpe_cfg = dataclasses.replace(tok_cfg, model="bpe")
    # Normalised once here; sentencepiece's own pass applies the same (idempotent) normaliser again.
    processor = train_processor(pre_tokenised(texts, build_normalizer(tok_cfg)), bpe_cfg, workdir)
    vocab, counts = convert_pieces([processor.id_to_piece(i) for i in range(processor.get_piece_size())],
                                   special_token_list(tok_cfg))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=STYLES[tok_cfg.style]["unk"],
                                           max_input_chars_per_word=100, continuing_subword_prefix=CONTINUATION))
    tokenizer.normalizer = build_normalizer(tok_cfg)
    tokenizer.pre_tokenizer = word_splitter()
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION)
    return tokenizer, counts


def convert_pieces(pieces: list[str], specials: list[str]) -> tuple[dict[str, int], dict]:
    """sentencepiece pieces (in id order) -> a WordPiece vocabulary with `specials` at ids 0..k-1.

    `▁x` -> `x`, `y` -> `##y`; the pieces keep their learning order after the specials. The bare `▁`
    and any piece whose rewrite is already taken are dropped and counted."""
    vocab = {token: i for i, token in enumerate(specials)}
    dropped_bare = collisions = 0
    for piece in pieces:
        if piece in specials:
            continue
        token = piece[len(WORD_START):] if piece.startswith(WORD_START) else CONTINUATION + piece
        if not token:
            dropped_bare += 1
        elif token in vocab:
            collisions += 1
        else:
            vocab[token] = len(vocab)
    return vocab, {"sentencepiece_pieces": len(pieces), "wordpiece_tokens": len(vocab),
                   "dropped_bare_word_start": dropped_bare, "dropped_collisions": collisions}


def as_wordpiece(pieces: list[str]) -> list[str]:
    """One word's sentencepiece pieces written as WordPiece tokens (the rewrite of `convert_pieces`)."""
    return [p[len(WORD_START):] if i == 0 and p.startswith(WORD_START) else CONTINUATION + p
            for i, p in enumerate(pieces)]


def segmentation_agreement(spm_model: Path, tokenizer: Tokenizer, texts: Iterable[str]) -> dict:
    """Share of the words of `texts` (BERT-split, after the tokenizer's normaliser) that the converted
    WordPiece `tokenizer` cuts into exactly the pieces sentencepiece cuts them into; over word
    occurrences (`share`) and over distinct words (`type_share`)."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(spm_model))
    same: dict[str, bool] = {}
    occurrences = identical = 0
    for text in pre_tokenised(texts, tokenizer.normalizer):
        for word in text.split():
            if word not in same:
                ours = tokenizer.model.tokenize(word)
                same[word] = [t.value for t in ours] == as_wordpiece(processor.encode(word, out_type=str))
            occurrences += 1
            identical += same[word]
    return {"words": occurrences, "identical": identical, "share": identical / max(occurrences, 1),
            "types": len(same), "identical_types": sum(same.values()),
            "type_share": sum(same.values()) / max(len(same), 1)}
