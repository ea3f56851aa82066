"""Task files read as the papers read them, and bad files rejected naming file and line."""

from __future__ import annotations

import pytest

from bertforge.common.errors import CorpusInputError
from pretrain.config import DownstreamTaskConfig
from pretrain.downstream.readers import Sentence, read_split
from pretrain.downstream.stage import load_task


def ud_task(data_dir, **changes) -> DownstreamTaskConfig:
    base = dict(name="ga", type="upos", format="conllu", path=str(data_dir / "ud" / "UD_Irish-IDT"),
                train="ga_idt-ud-dev.conllu", test="ga_idt-ud-test.conllu")
    return DownstreamTaskConfig(**(base | changes))


def test_conllu_gives_syntactic_words_with_tags_and_heads(data_dir):
    sentences = read_split(ud_task(data_dir, type="parse"), "train")
    assert len(sentences) == 451  # the Irish dev file's sentences (data README)
    words = sum(len(s.words) for s in sentences)
    lines = [line for line in (data_dir / "ud/UD_Irish-IDT/ga_idt-ud-dev.conllu").read_text().splitlines()
             if line and not line.startswith("#") and line.split("\t")[0].isdigit()]
    assert words == len(lines)
    first = sentences[0]
    assert first.heads.count(0) == 1 and all(0 <= h <= len(first.words) for h in first.heads)
    assert all(":" not in tag for s in sentences for tag in s.tags)  # universal relations only


def test_a_broken_conllu_line_names_file_and_line(data_dir, tmp_path):
    lines = (data_dir / "ud/UD_Irish-IDT/ga_idt-ud-dev.conllu").read_text(encoding="utf-8").splitlines()[:60]
    word_lines = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
    broken = word_lines[5]
    lines[broken] = lines[broken].replace("\t", " ", 2)
    (tmp_path / "dev.conllu").write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = ud_task(data_dir, path=str(tmp_path), train="dev.conllu")
    with pytest.raises(CorpusInputError, match=rf"dev.conllu:{broken + 1}: a CoNLL-U word line has 10"):
        read_split(task, "train")


def test_iob2_rejects_an_entity_that_starts_with_i(data_dir, tmp_path):
    lines = (data_dir / "science/ner/NCBI-disease-IOB/train.tsv").read_text(encoding="utf-8").splitlines()[:40]
    first_b = next(i for i, line in enumerate(lines) if line.endswith("\tB-Disease"))
    lines[first_b] = lines[first_b].replace("B-Disease", "I-Disease")
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = DownstreamTaskConfig(name="ncbi", type="ner", format="iob", path=str(tmp_path), train="train.tsv",
                                test="train.tsv")
    with pytest.raises(CorpusInputError, match=rf"train.tsv:{first_b + 1}: I-Disease follows O"):
        read_split(task, "train")


def test_iob1_is_converted_to_iob2(data_dir):
    task = DownstreamTaskConfig(name="scierc", type="ner", format="iob", scheme="iob1",
                                path=str(data_dir / "science/ner/SciERC"), train="train.txt", test="test.txt")
    sentences = read_split(task, "test")
    assert len(sentences) == 551  # data README: SciERC test sentences
    for s in sentences:  # valid IOB2: every I- continues an entity of its type
        for previous, tag in zip(["O", *s.tags], s.tags):
            if tag.startswith("I-"):
                assert previous[2:] == tag[2:] and previous != "O"
    opened = sum(tag.startswith("B-") for s in sentences for tag in s.tags)
    assert opened == 1683  # data README: 1,683 test mentions


def test_a_label_train_never_has_is_an_error_naming_its_line(data_dir, tmp_path):
    lines = (data_dir / "ud/UD_Irish-IDT/ga_idt-ud-test.conllu").read_text(encoding="utf-8").splitlines()[:40]
    i = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    cols = lines[i].split("\t")
    cols[3] = "NOTATAG"
    lines[i] = "\t".join(cols)
    (tmp_path / "test.conllu").write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = ud_task(data_dir, test=str(tmp_path / "test.conllu"))
    with pytest.raises(CorpusInputError, match=rf"test.conllu:{i + 1}: label 'NOTATAG' in the test split never"):
        load_task(task)
    task.unseen_labels = "score_as_wrong"
    assert load_task(task).labels.count("NOTATAG") == 0


def test_an_unseen_label_is_reported_on_its_own_words_line(data_dir, tmp_path):
    lines = (data_dir / "ud/UD_Irish-IDT/ga_idt-ud-test.conllu").read_text(encoding="utf-8").splitlines()[:40]
    i = [i for i, line in enumerate(lines) if line[:1].isdigit()][3]  # the first sentence's fourth word
    cols = lines[i].split("\t")
    cols[3] = "NOTATAG"
    lines[i] = "\t".join(cols)
    (tmp_path / "test.conllu").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CorpusInputError, match=rf"test.conllu:{i + 1}: label 'NOTATAG' in the test split"):
        load_task(ud_task(data_dir, test=str(tmp_path / "test.conllu")))

    ner = data_dir / "science/ner/NCBI-disease-IOB"
    lines = (ner / "test.tsv").read_text(encoding="utf-8").splitlines()[:60]
    i = [i for i, line in enumerate(lines) if line.strip()][5]
    lines[i] = lines[i].split("\t")[0] + "\tB-Gene"
    (tmp_path / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = DownstreamTaskConfig(name="ncbi", type="ner", format="iob", path=str(ner), train="train.tsv",
                                test=str(tmp_path / "test.tsv"))
    with pytest.raises(CorpusInputError, match=rf"test.tsv:{i + 1}: label 'B-Gene' in the test split"):
        load_task(task)


def jsonl_task(tmp_path, records: list[str], **changes) -> DownstreamTaskConfig:
    (tmp_path / "texts.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    return DownstreamTaskConfig(**dict(name="j", type="classify", format="jsonl", path=str(tmp_path / "texts.jsonl"),
                                       train="train", test="test") | changes)


def test_a_null_label_is_refused_naming_its_line(tmp_path):
    """null is a missing annotation, not a class "None" (nor, for a multi-label task, no labels)."""
    task = jsonl_task(tmp_path, ['{"split": "train", "text": "a", "label": "pos"}',
                                 '{"split": "train", "text": "b", "label": null}'])
    with pytest.raises(CorpusInputError, match=r"texts.jsonl:2: the 'label' field is null: a label is a string"):
        read_split(task, "train")
    task = jsonl_task(tmp_path, ['{"split": "train", "text": "a", "subjects": ["x", "y"]}',
                                 '{"split": "train", "text": "b", "subjects": []}',
                                 '{"split": "train", "text": "c", "subjects": null}'],
                      label_field="subjects", multi_label=True)
    with pytest.raises(CorpusInputError, match=r"texts.jsonl:3: the 'subjects' field is null: a multi-label task's "
                                               r"labels are a list of strings \(\[\] for none\)"):
        read_split(task, "train")
    task = jsonl_task(tmp_path, ['{"split": "train", "text": "a", "subjects": ["x", null]}'],
                      label_field="subjects", multi_label=True)
    with pytest.raises(CorpusInputError, match=r"texts.jsonl:1: the 'subjects' field is \[\"x\", null\]"):
        read_split(task, "train")
    task = jsonl_task(tmp_path, ['{"split": "train", "text": null, "label": "pos"}'])
    with pytest.raises(CorpusInputError, match=r"texts.jsonl:1: the 'text' field is null, not a string"):
        read_split(task, "train")
    # an integer class id is read as its digits
    task = jsonl_task(tmp_path, ['{"split": "train", "text": "a", "label": 1}'])
    assert read_split(task, "train")[0].labels == ["1"]


def test_tos_folds_label_unfair_sentences(data_dir):
    root = data_dir / "legal/tos_unfair_clauses_en"
    task = DownstreamTaskConfig(name="tos", type="classify", format="tos", path=str(root),
                                train="lists/LIST_TRAIN_0.txt", test="lists/LIST_TEST_0.txt")
    train, test = read_split(task, "train"), read_split(task, "test")
    train_docs = set((root / "lists/LIST_TRAIN_0.txt").read_text().split())
    assert not any(t.where.split(":")[0].rsplit("/", 1)[1] in train_docs for t in test)  # document folds
    assert {label for t in train for label in t.labels} == {"fair", "unfair"}
    unfair = sum(t.labels == ["unfair"] for t in train + test)
    assert 1000 < unfair < 1651  # README: 1,374 unfair in all 50 ToS; fold 0 holds 50 of them


def test_jsonl_multi_label_split(data_dir):
    task = DownstreamTaskConfig(name="eurlex", type="classify", format="jsonl",
                                path=str(data_dir / "legal/eurlex_sum_en/summaries.jsonl"), train="train",
                                dev="validation", test="test", label_field="subjects", multi_label=True)
    assert [len(read_split(task, s)) for s in ("train", "dev", "test")] == [1129, 187, 188]
    task.multi_label = False
    with pytest.raises(CorpusInputError, match="labels in a single-label task"):
        read_split(task, "train")


def test_sentence_type_is_plain_data():
    s = Sentence(["a"], ["X"], None, "f:1")
    assert s.heads is None


def ncbi_lines(data_dir, count: int = 40) -> list[str]:
    return (data_dir / "science/ner/NCBI-disease-IOB/train.tsv").read_text(encoding="utf-8").splitlines()[:count]


def iob_task(folder, train: str = "train.tsv") -> DownstreamTaskConfig:
    return DownstreamTaskConfig(name="ncbi", type="ner", format="iob", path=str(folder), train=train, test=train)


def test_an_iob_token_keeps_its_no_break_space_and_a_tab_separated_token_its_spaces(data_dir, tmp_path):
    """Split on any whitespace, "10\u00a0mg" lost "mg" and "New York" lost "York", without a word."""
    lines = ncbi_lines(data_dir)
    word_lines = [i for i, line in enumerate(lines) if line.strip()]
    nbsp, spaced, space_separated = word_lines[1], word_lines[2], word_lines[3]
    lines[nbsp] = "10\u00a0mg\t" + lines[nbsp].split("\t")[1]
    lines[spaced] = "New York\t" + lines[spaced].split("\t")[1]
    lines[space_separated] = "5\u202fkg   " + lines[space_separated].split("\t")[1]  # no tab: ASCII spaces separate
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    words = [word for s in read_split(iob_task(tmp_path), "train") for word in s.words]
    assert words[1:4] == ["10\u00a0mg", "New York", "5\u202fkg"]
    assert len(words) == len(word_lines)  # every line one word, none split or lost

    lines[nbsp] = "10\u00a0" + lines[nbsp].split("\t")[1]  # the tag joined to the token: no column left
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CorpusInputError, match=rf"train.tsv:{nbsp + 1}: a token line needs a token and a tag"):
        read_split(iob_task(tmp_path), "train")


def test_a_file_that_is_not_utf8_is_refused_naming_its_line(data_dir, tmp_path):
    """CoNLL-2002 ships Latin-1: the error names the file, the line and the fix, not a byte offset in a block."""
    lines = [*ncbi_lines(data_dir, 5000), "Málaga\tO", ""]
    (tmp_path / "train.tsv").write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(CorpusInputError, match=r"train.tsv:5001: not UTF-8 text \(byte 0xe1 .* iconv -f latin1"):
        load_task(iob_task(tmp_path))

    lines = (data_dir / "ud/UD_Irish-IDT/ga_idt-ud-dev.conllu").read_text(encoding="utf-8").splitlines()[:200]
    first = next(i for i, line in enumerate(lines) if not line.isascii())
    (tmp_path / "dev.conllu").write_bytes("\n".join(lines).encode("latin-1"))  # Irish fadas are Latin-1
    with pytest.raises(CorpusInputError, match=rf"dev.conllu:{first + 1}: not UTF-8 text"):
        read_split(ud_task(data_dir, path=str(tmp_path), train="dev.conllu"), "train")


def test_a_byte_order_mark_is_not_part_of_the_first_line(data_dir, tmp_path):
    """Windows editors write one: it made the CoNLL-U file's first line 'not 10 columns', the IOB file's first
    word '\\ufeffIdentification' and the JSON-lines file's first line 'not JSON'."""
    conllu = (data_dir / "ud/UD_Irish-IDT/ga_idt-ud-dev.conllu").read_text(encoding="utf-8").splitlines()[:60]
    conllu = [line for line in conllu if not line.startswith("#")]  # a word line first
    (tmp_path / "dev.conllu").write_text("\ufeff" + "\n".join(conllu) + "\n", encoding="utf-8")
    (tmp_path / "plain.conllu").write_text("\n".join(conllu) + "\n", encoding="utf-8")
    read = [read_split(ud_task(data_dir, path=str(tmp_path), train=name), "train") for name in ("dev.conllu",
                                                                                              "plain.conllu")]
    assert [s.words for s in read[0]] == [s.words for s in read[1]]

    iob = ncbi_lines(data_dir)
    (tmp_path / "train.tsv").write_text("\ufeff" + "\n".join(iob) + "\n", encoding="utf-8")
    assert read_split(iob_task(tmp_path), "train")[0].words[0] == iob[0].split("\t")[0]

    task = jsonl_task(tmp_path, ['\ufeff{"split": "train", "text": "a", "label": "pos"}'])
    assert read_split(task, "train")[0].text == "a"


def test_a_jsonl_line_that_is_not_a_record_is_refused_naming_its_line(tmp_path):
    """Valid JSON but a list or null: it broke the reader with an AttributeError (a traceback from the CLI)."""
    first = '{"split": "train", "text": "a", "label": "pos"}'
    for line, shown in (('["not", "a", "record"]', r'\["not", "a", "record"\]'), ("null", "null"), ('"a"', '"a"')):
        task = jsonl_task(tmp_path, [first, line])
        with pytest.raises(CorpusInputError, match=rf"texts.jsonl:2: the line is {shown}, not a JSON object"):
            read_split(task, "train")


def test_a_tos_fold_list_naming_a_missing_document_names_the_list_and_line(data_dir, tmp_path):
    root = data_dir / "legal/tos_unfair_clauses_en"
    (tmp_path / "train.txt").write_text("Amazon.txt\nNoSuchCompany.txt\n", encoding="utf-8")
    task = DownstreamTaskConfig(name="tos", type="classify", format="tos", path=str(root),
                                train=str(tmp_path / "train.txt"), test="lists/LIST_TEST_0.txt")
    with pytest.raises(CorpusInputError, match=r"train.txt:2: it names 'NoSuchCompany.txt', but .*sentences/"
                                               r"NoSuchCompany.txt does not exist"):
        read_split(task, "train")


def test_text_files_are_the_files_a_split_scores(data_dir):
    """What the planning's warning compares with the corpus's files: for ToS, the documents of the fold."""
    from pretrain.downstream.readers import text_files

    root = data_dir / "legal/tos_unfair_clauses_en"
    tos = DownstreamTaskConfig(name="tos", type="classify", format="tos", path=str(root),
                               train="lists/LIST_TRAIN_0.txt", test="lists/LIST_TEST_0.txt")
    docs = (root / "lists/LIST_TEST_0.txt").read_text(encoding="utf-8").split()
    assert text_files(tos, "test") == [(root / "sentences" / doc).resolve() for doc in docs]
    assert {t.where.rsplit(":", 1)[0] for t in read_split(tos, "test")} <= {str(root / "sentences" / d) for d in docs}
    assert text_files(ud_task(data_dir), "test") == [(data_dir / "ud/UD_Irish-IDT/ga_idt-ud-test.conllu").resolve()]
    assert text_files(ud_task(data_dir), "dev") == []
