"""The vocab stage: a tokenizer transformers loads, with its special tokens, and accents kept."""

import json

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from corpora.stagedir import read_manifest
from corpora.vocab_stage import run_vocab


def test_wordpiece_vocab_loads_in_transformers_and_keeps_fadas(make_cfg):
    folder = run_vocab(make_cfg("vocab", ["tokenizer.vocab_size=3000"]))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(str(folder))
    assert auto.mask_token == "[MASK]" and auto.cls_token == "[CLS]" and auto.pad_token_id == 0
    encoded = auto("Tá fáilte romhat go hÉirinn.")
    assert encoded["input_ids"][0] == auto.cls_token_id and encoded["input_ids"][-1] == auto.sep_token_id
    assert auto.decode(encoded["input_ids"], skip_special_tokens=True) == "Tá fáilte romhat go hÉirinn."
    assert 2500 < tok.backend_tokenizer.get_vocab_size() <= 3000
    metrics = json.loads((folder / "metrics.json").read_text())
    assert 1.0 <= metrics["fertility"] < 3.0 and metrics["unk_rate"] < 0.01
    assert read_manifest(folder)["counts"]["training_documents"] > 0


def test_lowercase_option_changes_the_vocabulary(make_cfg):
    folder = run_vocab(make_cfg("vocab", ["tokenizer.vocab_size=3000", "tokenizer.lowercase=true"]))
    auto = AutoTokenizer.from_pretrained(str(folder))
    assert auto.tokenize("GAEILGE") == auto.tokenize("gaeilge")
