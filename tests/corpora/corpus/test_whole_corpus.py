"""MinHash pieces and the whole dedup chain on real sentences with near-duplicates of known Jaccard."""

import gzip
import json
import random

import numpy as np
import pytest

from bertforge.common.errors import ConfigError
from bertforge.stages import run_stage
from corpora.corpus.minhash import shingle_set, signatures
from corpora.corpus.text_batch import TextBatch
from tests.conftest import ud_sentences


def sentences(data_dir):
    return ud_sentences(data_dir, "UD_Estonian-EDT/et_edt-ud-test.conllu")


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def edit_to_jaccard(text: str, target: float, rng: random.Random) -> tuple[str, float]:
    """Replace random words with new ones (at least one) until one more would take the 5-gram
    Jaccard with `text` below `target`."""
    edited = text.split()
    edited[len(edited) // 2] = "muudetud"
    while True:
        i = rng.randrange(len(edited))
        candidate = edited[:i] + [f"uus{rng.randrange(10**6)}"] + edited[i + 1:]
        if jaccard(text, " ".join(candidate)) < target:
            return " ".join(edited), jaccard(text, " ".join(edited))
        edited = candidate


def test_minhash_estimates_jaccard(data_dir):
    rng = random.Random(0)
    sents = sentences(data_dir)
    errors = []
    for target in (0.9, 0.8, 0.7, 0.5) * 10:
        text = " ".join(rng.sample(sents, 12))
        near, true_j = edit_to_jaccard(text, target, rng)
        sig, has_sig = signatures(TextBatch([text, near]), 128, 5, "words", seed=3)
        assert has_sig.all()
        errors.append((sig[0] == sig[1]).mean() - true_j)
    # one-permutation hashing with densification: unbiased, and as tight as 128 permutations (sd ~0.04)
    assert abs(np.mean(errors)) < 0.02 and np.std(errors) < 0.06 and np.max(np.abs(errors)) < 0.15, errors


def test_signatures_do_not_depend_on_the_batch(data_dir):
    """A document's signature is the same alone or among others, wherever it stands in the batch."""
    texts = [" ".join(sentences(data_dir)[i:i + 8]) for i in range(0, 400, 8)] + ["aon dó", "", "一二三"]
    together, has_sig = signatures(TextBatch(texts), 64, 5, "words", seed=1)
    for i in (0, 17, len(texts) - 3, len(texts) - 2, len(texts) - 1):
        alone, alone_has = signatures(TextBatch([texts[i]]), 64, 5, "words", seed=1)
        assert np.array_equal(alone[0], together[i]) and alone_has[0] == has_sig[i]
    assert list(has_sig[-3:]) == [True, False, True]


def test_word_splitter_is_unicode_and_case_blind():
    assert shingle_set("Tá SÉ go breá inniu, a chara") == shingle_set("tá sé go breá inniu a chara")
    assert len(shingle_set("一二三四五六", size=3, unit="chars")) == 4
    assert len(shingle_set("")) == 0 and len(shingle_set("aon dó")) == 1


def test_corpus_removes_planted_near_duplicates_and_keeps_unrelated_documents(make_cfg, data_dir, tmp_path):
    rng = random.Random(7)
    sents = sentences(data_dir)
    originals = [" ".join(rng.sample(sents, 10)) for _ in range(300)]
    rows = [{"text": t, "kind": "original"} for t in originals]
    planted = {}
    for i, target in enumerate([0.9, 0.85, 0.8] * 10):
        near, true_j = edit_to_jaccard(originals[i], target, rng)
        planted[f"n{i}"] = true_j
        rows.append({"text": near, "kind": f"n{i}"})
    rows += [{"text": originals[50 + i].upper(), "kind": "exact"} for i in range(5)]  # exact up to case
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    folder = run_stage(make_cfg("corpus", ["source=jsonl", f"source.inputs.0.path={src}", "filters=none",
                                            "filters.exact_dedup=true", "filters.near_dedup.enabled=true"]), "corpus")
    report = json.loads((folder / "report.json").read_text())
    removed = [json.loads(line) for p in (folder / "removed" / "dedup").glob("*.jsonl.gz") for line in gzip.open(p)]
    near = [d for d in removed if d["metadata"]["filter_reason"] == "near_duplicate"]
    exact = [d for d in removed if d["metadata"]["filter_reason"] == "exact_duplicate"]
    assert len(exact) == 5 and all(d["metadata"]["kind"] == "exact" for d in exact)
    assert {d["metadata"]["kind"] for d in near} == set(planted)  # every plant found, nothing else
    assert report["documents_kept"] == 300
    assert all(d["metadata"]["duplicate_of"].endswith(f"/{int(d['metadata']['kind'][1:]) + 1}") for d in near)
    biggest = report["duplicate_clusters"][0]
    assert biggest["size"] == 2 and biggest["kept_text"] and 0.7 <= biggest["removed"][0]["similarity"] <= 1
    assert "Largest near-duplicate clusters" in (folder / "report.md").read_text()


def test_boilerplate_lines_repeated_across_documents_are_cut_and_written_aside(make_cfg, data_dir, tmp_path):
    rng = random.Random(3)
    sents = sentences(data_dir)
    footer = "Cóipcheart © Nuachtán na Gaeltachta. Gach ceart ar cosaint."
    rows = [" ".join(rng.sample(sents, 6)) + ("\n" + footer if i % 2 == 0 else "") for i in range(60)]
    rows.append(footer)  # a document that is nothing but boilerplate
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in rows), encoding="utf-8")
    folder = run_stage(make_cfg("corpus", ["source=jsonl", f"source.inputs.0.path={src}", "filters=none",
                                            "filters.min_repeated_line_docs=10"]), "corpus")
    report = json.loads((folder / "report.json").read_text())
    texts = [json.loads(line)["text"] for p in (folder / "documents").glob("*.jsonl.gz") for line in gzip.open(p)]
    assert len(texts) == 60 and not any("Cóipcheart" in t for t in texts)
    assert report["removed_by_rule"]["only_boilerplate"]["documents"] == 1
    cut = report["lines_cut_by_rule"]["boilerplate"]
    assert cut["lines"] == 30 and cut["most_frequent"][0] == {"line": footer, "documents": 30}


@pytest.mark.parametrize("override,message", [
    ("shingle_unit=word", "filters.near_dedup.shingle_unit='word' is not one of \\['words', 'chars'\\]"),
    ("threshold=1.5", "filters.near_dedup.threshold=1.5"),
    ("threshold=0", "filters.near_dedup.threshold=0"),
    ("rows=0", "filters.near_dedup.rows=0"),
    ("bands=0", "filters.near_dedup.bands=0"),
    ("shingle_words=0", "filters.near_dedup.shingle_words=0"),
    ("bands=30", "bands\\*rows \\(30\\*5\\) exceeds num_perm \\(128\\)"),
])
def test_near_dedup_values_that_cannot_work_are_refused_before_work(make_cfg, tmp_path, override, message):
    cfg = make_cfg("corpus", ["filters=none", "filters.near_dedup.enabled=true", f"filters.near_dedup.{override}"])
    with pytest.raises(ConfigError, match=message):
        run_stage(cfg, "corpus")
    assert not list((tmp_path / "work").glob("corpus/*"))
