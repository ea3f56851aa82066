"""The whole-batch code-point arrays agree with Python's own splitting, folding and hashing."""

import re

import numpy as np

from corpora.corpus.text_batch import TextBatch
from tests.conftest import ud_sentences

TRICKY = ["", "  \n ", "STRASSE straße ẞ", "ǅungla ǄUNGLA", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀 ２０２４ ½ ² x_y __ ١٢٣",
          "tab\there\x1cfile\u00a0nbsp\u3000ideo line\nnext\n\nparagraph", "#hash ... … — «Sin é»", "İstanbul ΣΊΣΥΦΟΣ"]


def texts(data_dir):
    sents = ud_sentences(data_dir, "UD_Irish-IDT/ga_idt-ud-test.conllu")
    return [" ".join(sents[i:i + 7]) for i in range(0, 700, 7)] + TRICKY


def test_words_are_what_python_splits(data_dir):
    docs = texts(data_dir)
    batch = TextBatch(docs)
    starts, ends = batch.space_words
    owner = batch.owner(starts)
    got = [[] for _ in docs]
    for o, s, e in zip(owner.tolist(), starts.tolist(), ends.tolist()):
        got[o].append(e - s)
    assert got == [[len(w) for w in d.split()] for d in docs]
    _, word_owner = batch.unicode_words
    assert np.bincount(word_owner, minlength=len(docs)).tolist() == [len(re.findall(r"\w+", d)) for d in docs]


def test_equal_words_hash_equally_and_case_is_folded():
    batch = TextBatch(["Sin é an SCÉAL", "an scéal é sin", "scéala"])
    hashes, owner = batch.unicode_words
    first, second = hashes[owner == 0], hashes[owner == 1]
    assert set(first.tolist()) == set(second.tolist()) and first[3] == second[1]
    assert len(set(hashes[owner == 2].tolist()) & set(first.tolist())) == 0


def test_exact_hashes_ignore_case_and_spacing_only():
    hashes = TextBatch(["Dia  duit\n a chara", "dia duit a chara", " DIA DUIT A CHARA ", "dia duit, a chara",
                        "diaduit a chara", "a chara dia duit"]).exact_hashes()
    assert hashes[0] == hashes[1] == hashes[2]
    assert len({int(h) for h in hashes[1:]}) == 4  # punctuation, joined words and order all count


def test_a_very_long_word_and_empty_texts():
    batch = TextBatch(["", "x" * 200_000, "", "a b"])
    starts, ends = batch.space_words
    assert (ends - starts).tolist() == [200_000, 1, 1]
    assert batch.owner(starts).tolist() == [1, 3, 3]


def test_huge_inputs_hash_as_small_ones(monkeypatch):
    """Inputs longer than the power tables are hashed in pieces, to the same values."""
    from corpora.corpus import text_batch

    rng = np.random.default_rng(0)
    values = rng.integers(1, 5000, size=3000).astype(np.uint32)
    lengths = np.array([0, 3, 700, 1, 0, 1500, 2, 794])  # two segments longer than the small tables below
    expected = text_batch.segment_hashes(values, lengths)
    monkeypatch.setattr(text_batch, "_MAX_POWERS", 256)
    monkeypatch.setattr(text_batch, "_powers", [np.ones(1, np.uint64), np.ones(1, np.uint64)])
    assert np.array_equal(text_batch.segment_hashes(values, lengths), expected)
    assert len(text_batch._powers[0]) <= 257


def test_a_batch_is_reused_only_for_texts_that_did_not_change():
    from datatrove.data import Document

    from corpora.corpus.text_batch import batches_of

    docs = [Document(text=t, id=str(i)) for i, t in enumerate(["a b", "c d", "e f"])]
    batch = TextBatch([d.text for d in docs])
    batch.attach(docs)
    docs[1].text = "c  d"
    groups = batches_of([docs[2], docs[1], docs[0]])
    assert [(g[0] is batch, g[1].tolist(), g[2]) for g in groups] == [(True, [2, 0], [0, 2]), (False, [0], [1])]
    assert batch.cached("k", lambda b: b.size) == 3 and batch.cached("k", lambda b: -1) == 3
