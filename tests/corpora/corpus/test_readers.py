"""Readers on real treebank text and on every kind of bad input the corpus stage must name."""

import gzip
import json

import pytest

from corpora.config import InputConfig
from bertforge.common.errors import CorpusInputError
from corpora.corpus.readers import make_reader
from tests.conftest import ud_sentences


def read_all(spec: InputConfig):
    reader = make_reader(spec, "test")
    files = reader.data_folder.list_files(recursive=True, glob_pattern=reader.glob_pattern)
    return [doc for name in files for doc in reader.read_file(name)]


def test_conllu_groups_text_lines_into_documents(data_dir):
    path = data_dir / "ud" / "UD_Irish-IDT"
    docs = read_all(InputConfig(path=str(path), format="conllu", name="ga", sentences_per_doc=10))
    sentences = len(ud_sentences(data_dir, "UD_Irish-IDT"))
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


def read_all_with(spec: InputConfig, **kwargs):
    reader = make_reader(spec, "test", **kwargs)
    files = reader.data_folder.list_files(recursive=True, glob_pattern=reader.glob_pattern)
    return reader, [doc for name in files for doc in reader.read_file(name)]


def irish_sentences(data_dir, count=40):
    return ud_sentences(data_dir, "UD_Irish-IDT/ga_idt-ud-test.conllu")[:count]


def test_parquet_and_hf_dataset_read_real_text(tmp_path, data_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    texts = irish_sentences(data_dir)
    table = pa.table({"body": texts, "url": [f"https://x.ie/{i}" for i in range(len(texts))]})
    pq.write_table(table, tmp_path / "part.parquet", row_group_size=7)
    docs = read_all(InputConfig(path=str(tmp_path), format="parquet", name="pq", text_key="body"))
    assert [d.text for d in docs] == texts and docs[3].metadata["url"] == "https://x.ie/3"
    Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "hf"))
    docs = read_all(InputConfig(path=str(tmp_path / "hf"), format="hf", name="hf"))
    assert [d.text for d in docs] == texts and {d.metadata["source"] for d in docs} == {"hf"}


def test_parquet_without_the_text_column_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "p.parquet")
    with pytest.raises(CorpusInputError, match=r"no column 'text' \(columns: \['body'\]\)") as err:
        read_all(InputConfig(path=str(tmp_path / "p.parquet"), format="parquet", name="p"))
    assert str(tmp_path / "p.parquet") in str(err.value)


def test_a_huge_line_is_bad_input_and_memory_stays_bounded(tmp_path):
    import tracemalloc

    path = tmp_path / "big.jsonl"
    with open(path, "wb") as handle:  # 50 MB on one line, between two good records
        handle.write(b'{"text": "roimh"}\n{"text": "' + b"a" * (50 << 20) + b'"}\n{"text": "ina dhiaidh"}\n')
    with pytest.raises(CorpusInputError, match="longer than 1 MiB") as err:
        read_all_with(InputConfig(path=str(path), format="jsonl", name="b"), max_record_mib=1)
    assert err.value.line == 2
    tracemalloc.start()
    _, docs = read_all_with(InputConfig(path=str(path), format="jsonl", name="b"), max_record_mib=1,
                            on_bad_record="skip", skipped_folder=str(tmp_path / "skipped"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [d.text for d in docs] == ["roimh", "ina dhiaidh"]
    assert peak < 8 << 20  # the 50 MB line was never held
    [skipped] = [json.loads(line) for p in (tmp_path / "skipped").glob("*.jsonl") for line in p.open()]
    assert skipped["line"] == 2 and skipped["file"] == str(path)


def test_skip_mode_reports_every_bad_record_by_file_and_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"text": "maith"}\n{"text": "caf\xe9"}\n{oops}\n{"text": "a\x00b"}\n'
                     b'{"title": "x"}\n{"text": "go maith"}\n{"text": "a\\u0000b"}\n')
    _, docs = read_all_with(InputConfig(path=str(path), format="jsonl", name="m"), on_bad_record="skip",
                            skipped_folder=str(tmp_path / "skipped"))
    assert [d.text for d in docs] == ["maith", "go maith"]
    skipped = [json.loads(line) for p in (tmp_path / "skipped").glob("*.jsonl") for line in p.open()]
    assert [(s["line"], s["problem"].split(" (")[0]) for s in skipped] == [
        (2, "not valid UTF-8"), (3, "not a JSON object"), (4, "contains NUL bytes"), (5, "no string field 'text'"),
        (7, "contains NUL characters")]  # JSON's escaped \u0000: never passed on as text


def test_truncated_gzip_in_skip_mode_keeps_what_was_read(tmp_path):
    blob = gzip.compress(b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(2000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    _, docs = read_all_with(InputConfig(path=str(path), format="jsonl", name="c"), on_bad_record="skip",
                            skipped_folder=str(tmp_path / "s"))
    assert 0 < len(docs) < 2000 and docs[0].text == "doc 0"
    [skipped] = [json.loads(line) for p in (tmp_path / "s").glob("*.jsonl") for line in p.open()]
    assert skipped["line"] == len(docs) + 1 and "cannot be read past this line" in skipped["problem"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_records_without_text_are_listed_not_dropped_silently_and_are_not_errors(tmp_path, fmt):
    texts = ["maith", "", "   \n ", None, "go maith"]
    if fmt == "jsonl":
        path = tmp_path / "in.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "in.parquet"
        pq.write_table(pa.table({"text": texts}), path)
    # on_bad_record=error: an empty or null record is not bad input
    _, docs = read_all_with(InputConfig(path=str(path), format=fmt, name="e"), skipped_folder=str(tmp_path / "s"))
    assert [d.text for d in docs] == ["maith", "go maith"]
    skipped = [json.loads(line) for p in (tmp_path / "s").glob("*.jsonl") for line in p.open()]
    assert [s["line"] for s in skipped] == [2, 3, 4] and all("holds no text" in s["problem"] for s in skipped)


def test_jsonl_text_that_is_neither_text_nor_null_stays_bad_input(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text(json.dumps({"text": None}) + "\n" + json.dumps({"text": 5}) + "\n", encoding="utf-8")
    with pytest.raises(CorpusInputError, match="no string field 'text'") as err:
        read_all(InputConfig(path=str(path), format="jsonl", name="n"))
    assert err.value.line == 2  # the null on line 1 was no error


def _with_bom(fmt: str, sentences: list[str]) -> bytes:
    """`sentences` as a file of `fmt` that starts with a UTF-8 byte order mark (as Windows editors save)."""
    if fmt.startswith("jsonl"):
        text = "".join(json.dumps({"text": s}, ensure_ascii=False) + "\n" for s in sentences)
    elif fmt == "txt":
        text = "".join(s + "\n\n" for s in sentences)
    else:  # CoNLL-U whose first line is a sentence's text (no sent_id before it)
        text = "".join(f"# text = {s}\n1\t{s.split()[0]}\t_\t_\t_\t_\t0\troot\t_\t_\n\n" for s in sentences)
    data = "\ufeff".encode() + text.encode("utf-8")
    return gzip.compress(data) if fmt.endswith(".gz") else data


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "txt", "conllu"])
def test_a_byte_order_mark_at_the_start_of_a_file_is_not_text(tmp_path, data_dir, fmt):
    sentences = irish_sentences(data_dir, 5)
    path = tmp_path / f"bom.{fmt}"
    path.write_bytes(_with_bom(fmt, sentences))
    docs = read_all(InputConfig(path=str(path), format=fmt.removesuffix(".gz"), name="b"))
    texts = [d.text for d in docs]
    assert texts == ([" ".join(sentences)] if fmt == "conllu" else sentences)  # line 1 read, without the mark


def test_an_overlong_paragraph_is_skipped_whole_and_its_limit_is_named(tmp_path, data_dir):
    sentences = irish_sentences(data_dir, 30)
    long_paragraph = "\n".join(sentences[2:])  # about 3 KB of real sentences, one a line
    path = tmp_path / "long.txt"
    path.write_text(f"{sentences[0]}\n\n{long_paragraph}\n\n{sentences[1]}\n", encoding="utf-8")
    _, docs = read_all_with(InputConfig(path=str(path), format="txt", name="t", txt_unit="paragraph"),
                            on_bad_record="skip", max_record_mib=1000 / (1 << 20),
                            skipped_folder=str(tmp_path / "s"))
    assert [d.text for d in docs] == sentences[:2]  # no tail of the long paragraph passed off as a paragraph
    [skipped] = [json.loads(line) for p in (tmp_path / "s").glob("*.jsonl") for line in p.open()]
    assert skipped["line"] == 3 and skipped["problem"] == "paragraph starting here is longer than 1000 bytes"


@pytest.mark.parametrize("unit", ["paragraph", "file"])
def test_a_bad_line_leaves_out_its_whole_paragraph_and_says_so(tmp_path, data_dir, unit):
    sentences = irish_sentences(data_dir, 6)
    path = tmp_path / "bad.txt"
    latin1_line = "\nTá sé go breá\n".encode("latin-1")
    broken = "\n".join(sentences[1:3]).encode() + latin1_line + sentences[3].encode()
    path.write_bytes(sentences[0].encode() + b"\n\n" + broken + b"\n\n" + sentences[4].encode() + b"\n")
    _, docs = read_all_with(InputConfig(path=str(path), format="txt", name="t", txt_unit=unit),
                            on_bad_record="skip", skipped_folder=str(tmp_path / "s"))
    # never the lines around the bad one joined into a paragraph that was not in the file
    assert [d.text for d in docs] == ([sentences[0], sentences[4]] if unit == "paragraph" else [])
    [skipped] = [json.loads(line) for p in (tmp_path / "s").glob("*.jsonl") for line in p.open()]
    first = 3 if unit == "paragraph" else 1
    assert skipped["line"] == 5 and skipped["problem"].startswith("not valid UTF-8")
    assert f"its {unit} (from line {first}) is left out whole" in skipped["problem"]


@pytest.mark.parametrize("name,sibling", [
    ("crawl[2024].jsonl", "crawl2.jsonl"), ("doc[1].jsonl", "doc1.jsonl"), ("a*b?.jsonl", "axbx.jsonl"),
    ("plain.jsonl", "explain.jsonl"),  # datatrove reads a pattern without magic as "*plain.jsonl"
])
def test_a_file_input_reads_that_file_whatever_its_name_holds(tmp_path, data_dir, name, sibling):
    from corpora.config import SourceConfig
    from corpora.corpus.stage import checked_inputs

    mine, other = irish_sentences(data_dir, 2)
    (tmp_path / name).write_text(json.dumps({"text": mine}) + "\n", encoding="utf-8")
    (tmp_path / sibling).write_text(json.dumps({"text": other}) + "\n", encoding="utf-8")
    spec = InputConfig(path=str(tmp_path / name), format="jsonl", name="g")
    assert [d.text for d in read_all(spec)] == [mine]  # never the sibling its name matches as a glob
    checked = checked_inputs(SourceConfig(name="g", inputs=[spec]))
    assert [entry[0] for entry in checked.fingerprint] == [str(tmp_path / name)]
