"""Readers on real treebank text and on every kind of bad input the corpus stage must name."""

import gzip
import json

import pytest

from corpora.config import InputConfig
from corpora.errors import CorpusInputError
from corpora.readers import make_reader


def read_all(spec: InputConfig):
    reader = make_reader(spec)
    files = reader.data_folder.list_files(recursive=True, glob_pattern=reader.glob_pattern)
    return [doc for name in files for doc in reader.read_file(name)]


def test_conllu_groups_text_lines_into_documents(data_dir):
    path = data_dir / "ud" / "UD_Irish-IDT"
    docs = read_all(InputConfig(path=str(path), format="conllu", name="ga", sentences_per_doc=10))
    sentences = sum(f.read_text(encoding="utf-8").count("# text =") for f in path.glob("*.conllu"))
    assert len(docs) == pytest.approx(sentences / 10, abs=2)
    assert all(d.metadata["source"] == "ga" for d in docs)
    assert any("á" in d.text or "é" in d.text for d in docs)  # fadas survive reading
    assert not any("# text" in d.text or "\t" in d.text for d in docs)


def test_conllu_newdoc_marker_starts_a_document(data_dir):
    path = data_dir / "ud" / "UD_Estonian-EDT" / "et_edt-ud-dev.conllu"
    big = read_all(InputConfig(path=str(path), format="conllu", name="et", sentences_per_doc=10**9))
    # with no sentence cap, documents are exactly the newdoc-delimited blocks (plus any text before the first)
    text = path.read_text(encoding="utf-8")
    assert len(big) == text.count("# newdoc") + (0 if text.startswith("# newdoc") else 1)


@pytest.mark.parametrize("unit,expected", [("file", 1), ("paragraph", 2), ("line", 3)])
def test_text_units(tmp_path, unit, expected):
    (tmp_path / "a.txt").write_text("Líne a haon.\nLíne a dó.\n\nAlt eile.\n", encoding="utf-8")
    docs = read_all(InputConfig(path=str(tmp_path), format="txt", name="t", txt_unit=unit))
    assert len(docs) == expected


def test_jsonl_gz_with_custom_text_field(tmp_path):
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"body": "Dia duit", "url": "x"}) + "\n\n" + json.dumps({"body": "Slán"}) + "\n")
    docs = read_all(InputConfig(path=str(tmp_path / "d.jsonl.gz"), format="jsonl", name="j", text_key="body"))
    assert [d.text for d in docs] == ["Dia duit", "Slán"] and docs[0].metadata["url"] == "x"


@pytest.mark.parametrize("content,fmt,message,line", [
    (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "jsonl", "not valid UTF-8", 2),
    (b'{"text": "ok"}\n{"text": oops}\n', "jsonl", "not a JSON object", 2),
    (b'{"text": "ok"}\n{"body": "no text"}\n', "jsonl", "no string field 'text'", 2),
    (b"fine\n\xff\xfe broken\n", "txt", "not valid UTF-8", 2),
])
def test_bad_records_name_file_and_line(tmp_path, content, fmt, message, line):
    path = tmp_path / f"bad.{'jsonl' if fmt == 'jsonl' else 'txt'}"
    path.write_bytes(content)
    with pytest.raises(CorpusInputError, match=message) as err:
        read_all(InputConfig(path=str(path), format=fmt, name="b"))
    assert err.value.line == line and str(path) in str(err.value)


def test_truncated_gzip_is_named(tmp_path):
    blob = gzip.compress(b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(2000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorpusInputError, match="truncated or corrupt") as err:
        read_all(InputConfig(path=str(path), format="jsonl", name="c"))
    assert str(path) in str(err.value)
