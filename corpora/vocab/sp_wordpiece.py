"""gaBERT's vocabulary: sentencepiece BPE trained on pre-tokenised text, converted to WordPiece.

gaBERT (wiki-bert-pipeline + sent2wordpiece) trained sentencepiece BPE on text already split into
words and punctuation, then rewrote its pieces for Google's BERT code: a word-initial piece `▁x`
becomes `x`, any other piece `y` becomes `##y`, sentencepiece's own specials are dropped and BERT's
specials and 100 `[unused]` tokens added. BERT then segments each word greedily, longest match
first, which is not how BPE segments it: `segmentation_agreement` measures how often the two agree.

Differences from gaBERT, on purpose: the special tokens keep this project's ids (`[PAD] [UNK] [CLS]
[SEP] [MASK]` = 0..4, then `[unusedN]`), where sent2wordpiece put the unused block between [PAD] and
[UNK]; the bare `▁` piece (a word start followed by a piece that did not merge with it), which
sent2wordpiece turned into an empty line, is dropped and counted; and every character gets both a
word-initial entry `x` and a continuation entry `##x`, as BERT's vocabularies have. sentencepiece keeps
a character that never merged with `▁` only as a non-initial piece, so the plain rewrite gives it
`##x` alone, and WordPiece then turns every word starting with it into [UNK] as a whole.
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
                                   special_token_list(tok_cfg), tok_cfg.vocab_size)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=STYLES[tok_cfg.style]["unk"],
                                           max_input_chars_per_word=100, continuing_subword_prefix=CONTINUATION))
    tokenizer.normalizer = build_normalizer(tok_cfg)
    tokenizer.pre_tokenizer = word_splitter()
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION)
    return tokenizer, counts


def convert_pieces(pieces: list[str], specials: list[str], vocab_size: int) -> tuple[dict[str, int], dict]:
    """sentencepiece pieces (in id order) -> a WordPiece vocabulary of at most `vocab_size` tokens (when
    the characters fit), with `specials` at ids 0..k-1.

    `▁x` -> `x`, `y` -> `##y`; the pieces keep their learning order after the specials. The bare `▁`
    and any piece whose rewrite is already taken are dropped and counted. Every character of the pieces
    then gets whichever of `x` and `##x` it lacks, at the end; the room they take comes from the
    latest-learnt multi-character pieces (BPE learns its rarest merges last), dropped and counted."""
    tokens: list[str] = []
    taken = set(specials)
    dropped_bare = collisions = 0
    for piece in pieces:
        if piece in specials:
            continue
        token = piece[len(WORD_START):] if piece.startswith(WORD_START) else CONTINUATION + piece
        if not token:
            dropped_bare += 1
        elif token in taken:
            collisions += 1
        else:
            tokens.append(token)
            taken.add(token)
    missing = _missing_character_entries(pieces, set(specials), taken)
    kept = _drop_latest_merges(tokens, len(specials) + len(tokens) + len(missing) - vocab_size)
    vocab = {token: i for i, token in enumerate(specials + kept + missing)}
    return vocab, {"sentencepiece_pieces": len(pieces), "wordpiece_tokens": len(vocab),
                   "dropped_bare_word_start": dropped_bare, "dropped_collisions": collisions,
                   "added_character_entries": len(missing), "dropped_for_characters": len(tokens) - len(kept)}


def _missing_character_entries(pieces: list[str], specials: set[str], taken: set[str]) -> list[str]:
    """`x` and `##x` for every character of the (non-special) pieces that lacks it, characters in the
    order they first occur in the pieces (learning order, so the most frequent first)."""
    alphabet = dict.fromkeys(ch for piece in pieces if piece not in specials for ch in piece if ch != WORD_START)
    return [token for ch in alphabet for token in (ch, CONTINUATION + ch) if token not in taken]


def _drop_latest_merges(tokens: list[str], excess: int) -> list[str]:
    """`tokens` without the last `excess` multi-character ones (a single character is never dropped:
    it is what every word falls back to)."""
    if excess <= 0:
        return tokens
    drop = set()
    for index in range(len(tokens) - 1, -1, -1):
        if len(drop) == excess:
            break
        if len(tokens[index].removeprefix(CONTINUATION)) > 1:
            drop.add(index)
    return [token for index, token in enumerate(tokens) if index not in drop]


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
