"""Building an untrained `tokenizers.Tokenizer` (WordPiece, BPE, byte-level BPE, Unigram) and finishing a trained one.

Every option is checked by `check_options` before any data is read, so a bad combination fails in
a second with the config key at fault, not after an hour of training.
"""

from __future__ import annotations

import logging

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from bertforge.common.errors import ConfigError
from corpora.vocab.special_tokens import STYLES, style_tokens
from corpora.config import TokenizerConfig

SPECIAL_TOKENS = style_tokens("bert")  # the default style's tokens, in id order
MODELS = ("wordpiece", "bpe", "unigram")
TRAINERS = ("tokenizers", "sentencepiece")
NORMALIZERS = ("nfc", "nfkc", "none", "bert")
BYTE_LEVEL_ALPHABET = len(pre_tokenizers.ByteLevel.alphabet())  # 256: every byte has a symbol

log = logging.getLogger("bertforge.vocab")


def check_options(tok_cfg: TokenizerConfig) -> None:
    """Raise ConfigError, naming the key, for any option or combination that cannot work in training a
    vocabulary (extending or keeping one is checked by `corpora.vocab.stage.vocab_plan`)."""
    if tok_cfg.model not in MODELS:
        raise ConfigError(f"tokenizer.model={tok_cfg.model!r} is not one of {list(MODELS)}")
    if tok_cfg.trainer not in TRAINERS:
        raise ConfigError(f"tokenizer.trainer={tok_cfg.trainer!r} is not one of {list(TRAINERS)}")
    if tok_cfg.style not in STYLES:
        raise ConfigError(f"tokenizer.style={tok_cfg.style!r} is not one of {sorted(STYLES)}")
    if tok_cfg.normalizer not in NORMALIZERS:
        raise ConfigError(f"tokenizer.normalizer={tok_cfg.normalizer!r} is not one of {list(NORMALIZERS)}")
    if tok_cfg.byte_level and tok_cfg.model != "bpe":
        raise ConfigError(f"tokenizer.byte_level=true needs tokenizer.model=bpe (got {tok_cfg.model!r})")
    if tok_cfg.trainer == "sentencepiece" and tok_cfg.byte_level:
        raise ConfigError("tokenizer.trainer=sentencepiece trains character-level bpe or unigram (and wordpiece "
                          "converted from its bpe): use tokenizer.trainer=tokenizers for byte-level BPE")
    if not 0 < tok_cfg.character_coverage <= 1:  # also refuses NaN
        raise ConfigError(f"tokenizer.character_coverage={tok_cfg.character_coverage}: give a share above 0 and at "
                          "most 1 (1.0: every character; 0.9999: gaBERT's)")
    if tok_cfg.limit_alphabet < 1:  # tokenizers would keep no character at all: every word [UNK]
        raise ConfigError(f"tokenizer.limit_alphabet={tok_cfg.limit_alphabet} keeps no character: give at least 1 "
                          "(the default 1000 keeps the most frequent 1000)")
    if tok_cfg.unused_tokens < 0:
        raise ConfigError(f"tokenizer.unused_tokens={tok_cfg.unused_tokens} must be 0 or more")
    if not 0.0 <= tok_cfg.bpe_dropout < 1.0:
        raise ConfigError(f"tokenizer.bpe_dropout={tok_cfg.bpe_dropout} must be in [0, 1)")
    if tok_cfg.bpe_dropout and tok_cfg.model != "bpe":
        raise ConfigError(f"tokenizer.bpe_dropout applies to bpe only (tokenizer.model={tok_cfg.model!r})")
    if tok_cfg.extend_tokens:
        raise ConfigError("tokenizer.extend_tokens needs a tokenizer to extend: tokenizer.extend_from, or "
                          "model.init_from with model.vocab_mode=extend")
    specials = len(special_token_list(tok_cfg))
    if tok_cfg.vocab_size <= specials:
        raise ConfigError(f"tokenizer.vocab_size={tok_cfg.vocab_size} leaves no room beyond the "
                          f"{specials} special tokens")


def check_alphabet(tok_cfg: TokenizerConfig, distinct_chars: int) -> None:
    """Fail before training when vocab_size cannot even hold the alphabet plus the special tokens.
    `distinct_chars`: the training sample's distinct characters after the tokenizer's normaliser. Below full
    character coverage sentencepiece itself chooses the characters it keeps (and says when they do not fit)."""
    if tok_cfg.trainer == "sentencepiece" and tok_cfg.character_coverage < 1:
        return
    alphabet, why = starting_alphabet(tok_cfg, distinct_chars)
    needed = alphabet + len(special_token_list(tok_cfg))
    if tok_cfg.vocab_size < needed:
        raise ConfigError(f"tokenizer.vocab_size={tok_cfg.vocab_size} is below the alphabet size plus special "
                          f"tokens ({needed}: {why}): raise tokenizer.vocab_size to well above {needed}"
                          + smaller_alphabet_advice(tok_cfg))
    if tok_cfg.model == "wordpiece" and tok_cfg.trainer == "tokenizers" and tok_cfg.vocab_size < needed + alphabet:
        # Which characters continue a word is known only once the trainer has split the words.
        log.warning("vocab: tokenizer.vocab_size=%d may be too small for WordPiece: besides the %d special tokens "
                    "and %d characters it adds a ##x copy of each character that continues a word (up to %d tokens "
                    "in all); a larger trained vocabulary stops the stage", tok_cfg.vocab_size, needed - alphabet,
                    alphabet, needed + alphabet)


def starting_alphabet(tok_cfg: TokenizerConfig, distinct_chars: int) -> tuple[int, str]:
    """(tokens the trainer starts from before any merge, why), by trainer: what `check_alphabet` counts."""
    chars = f"{distinct_chars} distinct characters in the training sample"
    word_start = " and the word-start ▁" if uses_metaspace(tok_cfg) else ""
    if tok_cfg.byte_level:
        return BYTE_LEVEL_ALPHABET, "byte-level BPE starts from all 256 byte symbols"
    if tok_cfg.trainer == "sentencepiece" and tok_cfg.model == "wordpiece":
        return 2 * distinct_chars, f"{chars}, each as a word-initial x and a continuation ##x"
    if tok_cfg.trainer == "sentencepiece" or tok_cfg.model == "unigram":
        return distinct_chars + bool(word_start), chars + word_start
    return (min(distinct_chars + bool(word_start), tok_cfg.limit_alphabet),
            f"{chars}{word_start}, tokenizer.limit_alphabet={tok_cfg.limit_alphabet}")


def smaller_alphabet_advice(tok_cfg: TokenizerConfig) -> str:
    """How to make the trainer start from fewer characters, as the end of a sentence ("" for byte-level)."""
    if tok_cfg.byte_level:
        return ""
    if tok_cfg.trainer == "tokenizers" and tok_cfg.model != "unigram":
        return f" or lower tokenizer.limit_alphabet (now {tok_cfg.limit_alphabet}; rarer characters become [UNK])"
    # the tokenizers Unigram trainer has no cap and keeps every character; sentencepiece keeps the share
    # tokenizer.character_coverage says. tokenizer.limit_alphabet applies to neither.
    folds = [f"tokenizer.{key}=true" for key in ("lowercase", "strip_accents") if not getattr(tok_cfg, key)]
    fold = f" or fold characters together with {' or '.join(folds)}" if folds else ""
    if tok_cfg.trainer == "sentencepiece":
        return (f"{fold} or lower tokenizer.character_coverage (now {tok_cfg.character_coverage}; the rarest "
                "characters become [UNK]; tokenizer.limit_alphabet does not apply to sentencepiece)")
    return f"{fold} (the Unigram trainer keeps every character: tokenizer.limit_alphabet does not apply to it)"


def check_trained_size(tokenizer: Tokenizer, tok_cfg: TokenizerConfig) -> None:
    """Refuse a trained vocabulary larger than tokenizer.vocab_size. The trainers never merge past it, but
    their starting alphabet can exceed it: WordPiece adds a "##x" copy of every character that continues
    a word, which `check_alphabet` cannot count before training."""
    trained = tokenizer.get_vocab_size(with_added_tokens=True)
    if trained <= tok_cfg.vocab_size:
        return
    copies = sum(1 for token in tokenizer.get_vocab() if token.startswith("##") and len(token) == 3)
    why = f", of which {copies} are the ##x copies of characters that continue a word" if copies else ""
    raise ConfigError(f"tokenizer.vocab_size={tok_cfg.vocab_size}: the trained vocabulary has {trained} tokens before "
                      f"any merge (the special tokens and the alphabet{why}): raise tokenizer.vocab_size to well "
                      f"above {trained}" + smaller_alphabet_advice(tok_cfg))


def special_token_list(tok_cfg: TokenizerConfig) -> list[str]:
    """The style's five special tokens (in id order), any extra ones, then `tokenizer.unused_tokens`
    placeholders [unused0]... (BERT's reserve for tokens added after pretraining)."""
    extra = [t for t in tok_cfg.extra_special_tokens if t not in STYLES[tok_cfg.style].values()]
    return style_tokens(tok_cfg.style) + extra + [f"[unused{i}]" for i in range(tok_cfg.unused_tokens)]


def uses_metaspace(tok_cfg: TokenizerConfig) -> bool:
    """Whether the tokenizer marks word starts with Metaspace's "▁" (character-level BPE and Unigram,
    from either trainer); WordPiece and byte-level BPE split at any whitespace themselves."""
    return tok_cfg.model in ("bpe", "unigram") and not tok_cfg.byte_level


def marks_word_starts(tok_cfg: TokenizerConfig) -> bool:
    """Whether the space before a word is part of the word's first token ("▁word" with Metaspace, "Ġword"
    with byte-level BPE): character-level and byte-level BPE and Unigram, not WordPiece."""
    return tok_cfg.model in ("bpe", "unigram")


def mask_taking_space(mask: str) -> AddedToken:
    """The mask token, taking the spaces before it (lstrip, as roberta-base's <mask>). Where a word's first
    token holds the space before it, masking in training replaces that whole token ("▁ag" -> [MASK]); without
    lstrip a fill-mask prompt "Tá sé [MASK] anseo" gives a lone "▁" before [MASK], a sequence training never
    produced. Text without the mask string encodes exactly as before."""
    return AddedToken(mask, lstrip=True, rstrip=False, single_word=False, normalized=False, special=True)


def build_normalizer(tok_cfg: TokenizerConfig) -> normalizers.Normalizer | None:
    """Unicode form, then accent stripping (only if asked), then lowercasing (only if asked); for Metaspace
    tokenizers, every whitespace run (line breaks included) then becomes one space."""
    if tok_cfg.normalizer == "bert":
        # BertNormalizer strips accents whenever lowercase is on unless told otherwise: say it explicitly.
        steps = [normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                            strip_accents=tok_cfg.strip_accents, lowercase=tok_cfg.lowercase)]
    else:
        steps = {"nfc": [normalizers.NFC()], "nfkc": [normalizers.NFKC()], "none": []}[tok_cfg.normalizer]
        if tok_cfg.strip_accents:
            steps += [normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()]
        if tok_cfg.lowercase:
            steps.append(normalizers.Lowercase())
    if uses_metaspace(tok_cfg):
        # Metaspace splits words at " " only: a line break would be glued into a token ('.\nThe') or become
        # [UNK], and the next word would lose its "▁". Offsets still point into the original text.
        steps.append(normalizers.Replace(Regex(r"\s+"), " "))
    if tok_cfg.normalizer == "bert" and len(steps) == 1:
        return steps[0]  # saved bare, as before: WordPiece tokenizer.json files stay byte-identical
    return normalizers.Sequence(steps) if steps else None


def build_untrained(tok_cfg: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer and its trainer (tokenizers library) for `tok_cfg` (checked first)."""
    check_options(tok_cfg)
    unk = STYLES[tok_cfg.style]["unk"]
    specials, size = special_token_list(tok_cfg), tok_cfg.vocab_size
    if tok_cfg.model == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=unk, max_input_chars_per_word=100))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # whitespace and punctuation
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=size, min_frequency=tok_cfg.min_frequency, limit_alphabet=tok_cfg.limit_alphabet,
            special_tokens=specials, continuing_subword_prefix="##", show_progress=False)
    elif tok_cfg.model == "bpe" and tok_cfg.byte_level:
        tokenizer = Tokenizer(models.BPE())  # no UNK: every byte is in the alphabet
        # No prefix space (as RoBERTa and GPT-2): decoding gives back the text exactly.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=size, min_frequency=tok_cfg.min_frequency, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    elif tok_cfg.model == "bpe":
        # Metaspace (the SentencePiece convention) marks word starts with "▁", so decoding is exact
        # and the tokenizers and sentencepiece trainers produce comparable vocabularies.
        tokenizer = Tokenizer(models.BPE(unk_token=unk, fuse_unk=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(prepend_scheme="always")
        trainer = trainers.BpeTrainer(
            vocab_size=size, min_frequency=tok_cfg.min_frequency, limit_alphabet=tok_cfg.limit_alphabet,
            special_tokens=specials, show_progress=False)
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=size, special_tokens=specials, unk_token=unk,
                                          max_piece_length=16, show_progress=False)
    tokenizer.normalizer = build_normalizer(tok_cfg)
    return tokenizer, trainer


def add_post_processor(tokenizer: Tokenizer, roles: dict[str, str], style: str) -> None:
    """BERT: [CLS] A [SEP] (B [SEP]) with token types; RoBERTa: <s> A </s> (</s> B </s>)."""
    cls, sep = roles["cls"], roles["sep"]
    if style == "roberta":
        single, pair = f"{cls} $A {sep}", f"{cls} $A {sep} {sep} $B {sep}"
    else:
        single, pair = f"{cls}:0 $A:0 {sep}:0", f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair,
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))])


def finish(tokenizer: Tokenizer, tok_cfg: TokenizerConfig) -> dict[str, str]:
    """After training: special tokens registered and the post-processor set; returns the roles.

    The vocabulary is not padded here: the model pads its embedding rows
    (`model.pad_vocab_to_multiple_of`), so a tokenizer holds only tokens that can occur."""
    roles = dict(STYLES[tok_cfg.style])
    specials = special_token_list(tok_cfg)
    if marks_word_starts(tok_cfg):
        specials[specials.index(roles["mask"])] = mask_taking_space(roles["mask"])
    tokenizer.add_special_tokens(specials)  # already in the vocabulary: keeps their ids
    add_post_processor(tokenizer, roles, tok_cfg.style)
    return roles
