"""Building a BERT-style `tokenizers.Tokenizer` for a subword model, ready to train."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from corpora.errors import ConfigError

# Order fixes the ids: [PAD]=0 matches BertConfig's default pad_token_id.
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_wordpiece(tok_cfg) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained WordPiece tokenizer with BERT's normaliser (accents kept unless asked) and trainer."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True,
        strip_accents=tok_cfg.strip_accents,  # BertNormalizer strips accents by default; we never assume
        lowercase=tok_cfg.lowercase,
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=tok_cfg.vocab_size, min_frequency=tok_cfg.min_frequency,
        limit_alphabet=tok_cfg.limit_alphabet, special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##", show_progress=False,
    )
    return tokenizer, trainer


BUILDERS = {"wordpiece": build_wordpiece}


def build_untrained(tok_cfg) -> tuple[Tokenizer, trainers.Trainer]:
    if tok_cfg.model not in BUILDERS:
        raise ConfigError(f"tokenizer.model={tok_cfg.model!r} is not one of {sorted(BUILDERS)}")
    if tok_cfg.vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"tokenizer.vocab_size={tok_cfg.vocab_size} leaves no room beyond the "
                          f"{len(SPECIAL_TOKENS)} special tokens")
    return BUILDERS[tok_cfg.model](tok_cfg)


def add_bert_post_processor(tokenizer: Tokenizer) -> None:
    """[CLS] A [SEP] (B [SEP]) with token types, as BertTokenizerFast produces."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
