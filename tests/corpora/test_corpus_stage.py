"""The corpus stage on real Irish text: counts add up, duplicates go, bad input stops cleanly."""

import gzip
import json
import shutil

import pytest

from corpora.corpus_stage import run_corpus
from corpora.documents import iter_documents
from corpora.errors import CorpusInputError
from corpora.stagedir import read_manifest


def jsonl_source(path):
    return ["source=jsonl", f"source.inputs.0.path={path}"]


def test_irish_treebank_corpus(make_cfg, data_dir):
    folder = run_corpus(make_cfg("corpus"))
    report = json.loads((folder / "report.json").read_text())
    assert report["documents_in"] == report["documents_kept"] + report["documents_removed"]
    assert report["documents_kept"] > 80 and report["sources"] == {"ud_irish": report["documents_kept"]}
    docs = list(iter_documents(folder))
    assert len(docs) == report["documents_kept"] and "Gaeilge" in " ".join(d["text"] for d in docs)
    assert "documents kept" in (folder / "report.md").read_text()


def test_rerun_reuses_finished_folder(make_cfg):
    cfg = make_cfg("corpus")
    first = run_corpus(cfg)
    started = read_manifest(first)["started_at"]
    assert run_corpus(cfg) == first and read_manifest(first)["started_at"] == started


def test_exact_duplicates_and_short_docs_are_removed_and_written_aside(make_cfg, data_dir, tmp_path):
    texts = [d["text"] for d in iter_documents(run_corpus(make_cfg("corpus", work_dir=tmp_path / "w0")))][:20]
    rows = texts + [texts[0], "  " + texts[1].upper() + "  ", "Ró-ghearr."]  # 2 duplicates, 1 too short
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in rows), encoding="utf-8")
    folder = run_corpus(make_cfg("corpus", jsonl_source(src)))
    report = json.loads((folder / "report.json").read_text())
    assert report["documents_kept"] == 20 and report["documents_removed"] == 3
    assert report["removed_by_rule"]["exact_duplicate"]["documents"] == 2
    assert report["removed_by_rule"]["too_few_words"]["documents"] == 1
    removed = [json.loads(line) for p in (folder / "removed").glob("*/*.jsonl.gz") for line in gzip.open(p)]
    assert sorted(d["metadata"]["filter_reason"] for d in removed) == \
        ["exact_duplicate", "exact_duplicate", "too_few_words"]


def test_filters_none_keeps_everything(make_cfg, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n{"text": "a"}\n', encoding="utf-8")
    folder = run_corpus(make_cfg("corpus", jsonl_source(src) + ["filters=none"]))
    assert read_manifest(folder)["counts"]["documents_kept"] == 2


@pytest.mark.parametrize("content,message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b'{"text": "ok"}\n\xc3\x28\n', "not valid UTF-8"),
    (b'{"text": "ok"}\n{"title": "x"}\n', "no string field 'text'"),
    (b'{"text": "   "}\n', "no documents with text"),
])
def test_bad_input_fails_before_work_and_leaves_nothing_finished(make_cfg, tmp_path, content, message):
    src = tmp_path / "in.jsonl"
    if content is not None:
        src.write_bytes(content)
    cfg = make_cfg("corpus", jsonl_source(src))
    with pytest.raises(CorpusInputError, match=message):
        run_corpus(cfg)
    corpus_dir = tmp_path / "work" / "corpus"
    assert not corpus_dir.exists() or not any(corpus_dir.iterdir())


def test_missing_data_dir_says_what_to_set(make_cfg, data_dir, tmp_path):
    cfg = make_cfg("corpus")
    cfg.paths.data_dir = ""
    cfg.source.inputs[0].path = "/ud/UD_Irish-IDT"
    with pytest.raises(CorpusInputError, match="BERTFORGE_DATA"):
        run_corpus(cfg)
