"""Sentence-pair examples (training.objective=mlm_nsp|mlm_sop) on the Irish treebank: NSP labels 50/50,
random next segments only from training documents, SOP pairs the same sentences swapped, sentences taken
from the corpus's own boundaries, and a clear error for documents of one sentence."""

import numpy as np
import pytest
from tokenizers import Tokenizer

from bertforge.common.errors import CorpusInputError
from bertforge.common.stage_folder import read_manifest
from corpora.documents import iter_documents
from corpora.shards.pairs import load_pairs
from corpora.shards.sentences import split_sentences
from tests.conftest import stages_to

HELDOUT = 8.0  # the demo's shards.heldout_percent



@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("pairs")


def _examples(folders):
    """(A, B, label) of every example, and each split's documents as one token string per document."""
    fmt = read_manifest(folders["shards"])["format"]
    rows, info = load_pairs(folders["shards"], 64, fmt)
    ids = fmt["special_ids"]
    examples = []
    for row, (len_a, len_b, label) in zip(np.asarray(rows), np.asarray(info)):
        assert row[0] == ids["cls"] and row[len_a + 1] == ids["sep"] == row[len_a + len_b + 2]
        assert (row[len_a + len_b + 3:] == ids["pad"]).all()
        examples.append((row[1:len_a + 1].tolist(), row[len_a + 2:len_a + len_b + 2].tolist(), int(label)))
    tokenizer = Tokenizer.from_file(str(folders["vocab"] / "tokenizer.json"))
    streams = {}
    for split in ("train", "heldout"):
        streams[split] = []
        for doc in iter_documents(folders["corpus"], split, HELDOUT):
            sentences, _ = split_sentences(doc["text"], doc["metadata"])
            tokens = [t for e in tokenizer.encode_batch(sentences, add_special_tokens=False) for t in e.ids]
            streams[split].append("," + ",".join(map(str, tokens)) + ",")
    return examples, streams


def _key(tokens):
    return "," + ",".join(map(str, tokens)) + ","


def _in_order(first, second, streams) -> bool:
    """Both segments in one document, `second` starting at or after the end of `first`."""
    for doc in streams:
        start = doc.find(_key(first))
        if start >= 0 and doc.find(_key(second), start + len(_key(first)) - 1) >= 0:
            return True
    return False


def test_nsp_pairs_are_half_random_and_never_leave_the_training_split(work, data_dir):
    folders = stages_to("shards", data_dir, work, ["experiment=demo_ga", "training.objective=mlm_nsp"])
    pairs = read_manifest(folders["shards"])["format"]["pairs"]
    assert pairs["sentences_from"] == {"corpus": pairs["documents"]["documents"]}  # CoNLL-U sentence boundaries
    examples, streams = _examples(folders)
    random_next = sum(label for *_, label in examples)
    assert len(examples) > 300 and abs(random_next - len(examples) / 2) <= 1
    for a, b, label in examples:
        for segment in (a, b):
            assert any(_key(segment) in doc for doc in streams["train"])
            if len(segment) >= 8:  # long enough to be unique: never held-out text
                assert not any(_key(segment) in doc for doc in streams["heldout"])
        if label == 0:
            assert _in_order(a, b, streams["train"])
    # A random next segment comes from another document: never A's own continuation, nor A's own text
    # before it (an NSP pair is never SOP-swapped). Segments of 8+ tokens are unique in the treebank.
    real_random = [(a, b) for a, b, label in examples if label == 1 and len(a) >= 8 and len(b) >= 8]
    assert len(real_random) > 100
    assert not [(a, b) for a, b in real_random if _in_order(a, b, streams["train"]) or _in_order(b, a, streams["train"])]


def test_sop_pairs_are_the_same_sentences_swapped(work, data_dir):
    folders = stages_to("shards", data_dir, work, ["experiment=demo_ga", "training.objective=mlm_sop"])
    counts = read_manifest(folders["shards"])["format"]["pairs"]["by_seq_len"]["64"]
    examples, streams = _examples(folders)
    swapped = sum(label for *_, label in examples)
    assert len(examples) > 300 and abs(swapped - len(examples) / 2) <= 1
    for a, b, label in examples:
        assert _in_order(b, a, streams["train"]) if label else _in_order(a, b, streams["train"])
    assert counts["random_next"] == 0 and counts["lone_sentences_left_out"] > 0


def test_one_sentence_documents_are_an_error_or_a_counted_fallback(tmp_path, data_dir):
    one = [f"source.inputs=[{{path:{data_dir}/ud/UD_Irish-IDT,format:conllu,sentences_per_doc:1}}]",
           "training.objective=mlm_nsp"]
    with pytest.raises(CorpusInputError, match="single sentence.*max_single_sentence_doc_share"):
        stages_to("shards", data_dir, tmp_path, ["experiment=demo_ga", *one])
    folders = stages_to("shards", data_dir, tmp_path,
                        ["experiment=demo_ga", *one, "shards.max_single_sentence_doc_share=1.0"])
    counts = read_manifest(folders["shards"])["format"]["pairs"]["by_seq_len"]["64"]
    # No real next sentence exists: every example is a random next, and the manifest says so. Only the
    # first coin can ask for a random next (then the labels are uneven, and every later one asks for a real one).
    assert counts["random_next"] == counts["examples"] > 100
    assert counts["examples"] - 1 <= counts["forced_random_next"] <= counts["examples"]


def test_sentences_come_from_the_corpus_then_lines_then_terminal_punctuation():
    assert split_sentences("Tá sé. Bhí sé", {"sentence_chars": [6, 6]}) == (["Tá sé.", "Bhí sé"], "corpus")
    # Boundaries that no longer add up (a filter changed the text) are not trusted.
    assert split_sentences("Tá sé fuar. Bhí", {"sentence_chars": [3, 3]})[1] == "terminals"
    assert split_sentences("Dia duit\nConas atá tú") == (["Dia duit", "Conas atá tú"], "lines")
    assert split_sentences('Tá sé fuar. "Bhí!" An ea?')[0] == ["Tá sé fuar.", '"Bhí!"', "An ea?"]
    assert split_sentences("यह एक वाक्य है। यह दूसरा है।")[0] == ["यह एक वाक्य है।", "यह दूसरा है।"]
    assert split_sentences("第一句。第二句！")[0] == ["第一句。", "第二句！"]


def test_trimming_takes_a_token_at_a_time_from_the_longer_segment_as_googles_code():
    """`_fit` draws its coins in one call; it must trim exactly as the one-token-at-a-time loop of
    create_pretraining_data.py (the longer segment, b on a tie; front or back by a coin per token)."""
    from corpora.shards.pairs import PairBuilder, PairSettings

    settings = PairSettings("mlm_nsp", 0.1, 0.5, seed=0)
    lengths = np.random.default_rng(0)
    for case in range(500):
        seq_len, len_a, len_b = (int(n) for n in (lengths.integers(8, 70), *lengths.integers(1, 120, 2)))
        a, b = np.arange(len_a), np.arange(1000, 1000 + len_b)
        builder = PairBuilder([], seq_len, settings, file_index=case)
        got_a, got_b, _ = builder._fit(a, b, 1)
        coins = np.random.default_rng([0, seq_len, case, 1])  # the builder's own stream, drawn one by one
        span = {"a": [0, len_a], "b": [0, len_b]}
        while (span["a"][1] - span["a"][0]) + (span["b"][1] - span["b"][0]) > seq_len - 3:
            longer = span["a"] if span["a"][1] - span["a"][0] > span["b"][1] - span["b"][0] else span["b"]
            if coins.random() < 0.5:
                longer[0] += 1
            else:
                longer[1] -= 1
        assert got_a.tolist() == a[slice(*span["a"])].tolist() and got_b.tolist() == b[slice(*span["b"])].tolist()
        assert builder.counts["truncated_tokens"] == len_a + len_b - len(got_a) - len(got_b)
        assert builder.rng.random() == coins.random()  # no more draws than the loop's
