"""Task data read from the files researchers already have: UD CoNLL-U, IOB columns, the CLAUDETTE
unfair-clause folders and JSON lines. Every example remembers its file and line, so a bad label or a
broken line is reported where it is.

Word tasks give `Sentence`s (words with one tag each, and for parsing a head per word); text tasks give
`Text`s (a string with its labels).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bertforge.common.errors import ConfigError, CorpusInputError
from pretrain.config import DownstreamTaskConfig

WORD_TASKS = {"upos": 3, "xpos": 4, "feats": 5, "parse": 7, "ner": None}  # CoNLL-U column of the tag
TEXT_TASKS = {"classify"}
SPLITS = ("train", "dev", "test")
ASCII_SPACE = " \t\r\n\f\v"
"""What separates IOB columns in a line without tabs. Not a no-break or other non-ASCII space: a token holds those."""


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    """One label per word: its UPOS/XPOS/feats, its relation to its head (parse) or its IOB2 tag (ner)."""
    heads: list[int] | None
    """parse only: the 1-based index of each word's head, 0 for the root."""
    where: str
    """file:line of the sentence's first word."""
    word_lines: list[int] = field(default_factory=list)
    """The file line of each word, so a bad label is reported where it is."""


@dataclass
class Text:
    text: str
    labels: list[str]
    where: str


@dataclass
class TaskData:
    """A task's splits and its label list (from train), shared by every model and seed."""

    task: DownstreamTaskConfig
    train: list[Sentence] | list[Text]
    dev: list[Sentence] | list[Text]
    test: list[Sentence] | list[Text]
    labels: list[str]


def read_split(task: DownstreamTaskConfig, split: str) -> list[Sentence] | list[Text]:
    """The examples of one split (`train`, `dev` or `test`) of `task`; [] for an unset dev split."""
    name = getattr(task, split)
    if not name:
        if split == "dev":
            return []
        raise ConfigError(f"downstream task {task.name!r}: the {split} split is not set (key {split})")
    root = Path(task.path)
    if not root.exists():
        raise CorpusInputError(task.path, f"downstream task {task.name!r}: this path does not exist",
                               "Set the task's path (and paths.data_dir / BERTFORGE_DATA) to where the data is")
    if task.format == "jsonl":
        return _read_jsonl(root, task, name)
    if task.format == "tos":
        return _read_tos(root, root / name)
    file = root / name
    if not file.is_file():
        raise CorpusInputError(str(file), f"downstream task {task.name!r}: the {split} file does not exist",
                               f"Set the task's {split} key to a file inside {root}")
    if task.format == "conllu":
        return _read_conllu(file, task.type)
    if task.format == "iob":
        return _read_iob(file, task.scheme)
    raise ConfigError(f"downstream task {task.name!r}: format={task.format!r} is not one of conllu, iob, tos, jsonl")


def text_files(task: DownstreamTaskConfig, split: str) -> list[Path]:
    """The files the texts of one split of `task` are read from (resolved; not checked to exist): its CoNLL-U
    or IOB file, the JSON-lines file that holds every split, or the ToS documents its fold list names. []
    for an unset split or a fold list that is not there (read_split reports those)."""
    name = getattr(task, split)
    if not name:
        return []
    root = Path(task.path)
    if task.format == "jsonl":
        return [root.resolve()]
    if task.format == "tos":
        fold_list = root / name
        return [sentences.resolve() for sentences, _, _ in _tos_documents(root, fold_list)] \
            if fold_list.is_file() else []
    return [(root / name).resolve()]


def _text_lines(file: Path) -> Iterator[tuple[int, str]]:
    """The lines of a UTF-8 text file, numbered from 1, a leading byte-order mark dropped (Windows editors
    write one). A file that is not UTF-8 is refused naming the line of its first undecodable byte."""
    try:
        with file.open(encoding="utf-8-sig") as lines:
            yield from enumerate(lines, 1)
    except UnicodeDecodeError:
        raise _not_utf8(file) from None


def _not_utf8(file: Path) -> CorpusInputError:
    # Decoding streams in blocks, so the error's offset is within a block: find the line from the bytes.
    data = file.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return CorpusInputError(str(file), f"not UTF-8 text (byte 0x{data[err.start]:02x} cannot be decoded)",
                                f"Re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8 {file.name} > utf8-{file.name} "
                                "for a Latin-1 file (as the CoNLL-2002 files are), and point the task at that",
                                line=data[:err.start].count(b"\n") + 1)
    return CorpusInputError(str(file), "not UTF-8 text", "Re-encode the file as UTF-8 (e.g. with iconv)")


def _read_text(file: Path) -> str:
    """The whole of a UTF-8 text file (see `_text_lines`)."""
    return "".join(line for _, line in _text_lines(file))


def _read_conllu(file: Path, task_type: str) -> list[Sentence]:
    """Syntactic words (integer ids) of each sentence; multiword-token ranges and empty nodes are not words."""
    if task_type not in WORD_TASKS or WORD_TASKS[task_type] is None:
        raise ConfigError(f"{file}: a CoNLL-U file serves upos, xpos, feats or parse, not type={task_type!r}")
    column = WORD_TASKS[task_type]
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    heads: list[int] = []
    word_lines: list[int] = []

    def close() -> None:
        if not words:
            return
        for i, head in enumerate(heads):
            if head > len(words):
                raise CorpusInputError(str(file), f"word {i + 1} has head {head} but the sentence has {len(words)} "
                                       "words", "Fix the HEAD column of this sentence", line=word_lines[0])
        sentences.append(Sentence(list(words), list(tags), list(heads) if task_type == "parse" else None,
                                  f"{file}:{word_lines[0]}", list(word_lines)))
        words.clear(), tags.clear(), heads.clear(), word_lines.clear()

    for line_no, raw in _text_lines(file):
        line = raw.rstrip("\n")
        if not line.strip():
            close()
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise CorpusInputError(str(file), f"a CoNLL-U word line has 10 tab-separated columns, this one has "
                                   f"{len(cols)}", "Fix or remove the line (spaces instead of tabs?)", line=line_no)
        if "-" in cols[0] or "." in cols[0]:
            continue  # a multiword token's surface form or an empty node: not a syntactic word
        if not cols[0].isdigit() or int(cols[0]) != len(words) + 1:
            raise CorpusInputError(str(file), f"word id {cols[0]!r} where {len(words) + 1} was expected",
                                   "Word ids count 1, 2, 3... within each sentence", line=line_no)
        words.append(cols[1])
        word_lines.append(line_no)
        tag = cols[column]
        if task_type == "parse":
            if not cols[6].isdigit():
                raise CorpusInputError(str(file), f"HEAD {cols[6]!r} is not a word id", "Fix the HEAD column",
                                       line=line_no)
            heads.append(int(cols[6]))
            tag = tag.split(":")[0]  # universal relation: subtypes are not scored (CoNLL 2018 LAS)
        if tag == "_" and task_type in ("upos", "parse"):  # XPOS and feats may be unspecified (_)
            raise CorpusInputError(str(file), f"word {cols[1]!r} has no {'UPOS' if column == 3 else 'DEPREL'} "
                                   "value (_)", "Use a treebank annotated for this task", line=line_no)
        tags.append(tag)
    close()  # a last sentence without a blank line after it
    if not sentences:
        raise CorpusInputError(str(file), "no sentences", "Give a CoNLL-U file with word lines")
    return sentences


def _read_iob(file: Path, scheme: str) -> list[Sentence]:
    """Token per line, its tag in the last column (see `_iob_columns`), a blank line between sentences,
    `-DOCSTART-` lines skipped. Tags come out as IOB2."""
    if scheme not in ("iob1", "iob2"):
        raise ConfigError(f"{file}: scheme={scheme!r} is not iob1 or iob2")
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    word_lines: list[int] = []
    for line_no, raw in _text_lines(file):
        cols = _iob_columns(raw)
        if cols and cols[0] == "-DOCSTART-":
            cols = []
        if not cols:
            if words:
                sentences.append(Sentence(words, tags, None, f"{file}:{word_lines[0]}", word_lines))
                words, tags, word_lines = [], [], []
            continue
        if len(cols) < 2:
            raise CorpusInputError(str(file), f"a token line needs a token and a tag, this one has {raw.strip()!r}",
                                   "Fix the line or separate sentences with an empty line", line=line_no)
        tag = cols[-1]
        if tag != "O" and not (len(tag) > 2 and tag[:2] in ("B-", "I-")):
            raise CorpusInputError(str(file), f"tag {tag!r} is not O, B-TYPE or I-TYPE",
                                   "Fix the tag (the tag is the last column)", line=line_no)
        previous = tags[-1] if tags else "O"
        continues = previous != "O" and previous[2:] == tag[2:]
        if tag.startswith("I-") and not continues:
            if scheme == "iob2":
                raise CorpusInputError(str(file), f"{tag} follows {previous}: in IOB2 an entity starts with B-",
                                       "Fix the tag, or set the task's scheme=iob1 if the file is IOB1", line=line_no)
            tag = "B-" + tag[2:]  # IOB1 opens an entity with I-
        words.append(cols[0])
        tags.append(tag)
        word_lines.append(line_no)
    if words:
        sentences.append(Sentence(words, tags, None, f"{file}:{word_lines[0]}", word_lines))
    if not sentences:
        raise CorpusInputError(str(file), "no sentences", "Give a file of token and tag lines")
    return sentences


def _iob_columns(line: str) -> list[str]:
    """The non-empty columns of an IOB line: split on tabs when it has one (a token may then hold a space),
    else on runs of ASCII whitespace. A no-break space (U+00A0) or other non-ASCII space is never a
    separator: "10\u00a0mg" is one token, not "10" with "mg" dropped."""
    if "\t" in line:
        columns = [column.strip(ASCII_SPACE) for column in line.split("\t")]
    else:
        columns = re.split(f"[{re.escape(ASCII_SPACE)}]+", line)
    return [column for column in columns if column]


def _read_tos(root: Path, fold_list: Path) -> list[Text]:
    """CLAUDETTE: every sentence of the Terms of Service the fold lists, labelled unfair when one of its
    tags is in list_tags.txt, else fair."""
    for needed in (fold_list, root / "list_tags.txt"):
        if not needed.is_file():
            raise CorpusInputError(str(needed), "missing", "Point the task at the tos_unfair_clauses_en folder "
                                   "and its train/dev/test keys at files under lists/")
    unfair = set(_read_text(root / "list_tags.txt").split())
    texts: list[Text] = []
    for sentence_file, tag_file, list_line in _tos_documents(root, fold_list):
        for needed in (sentence_file, tag_file):
            if not needed.is_file():
                raise CorpusInputError(str(fold_list), f"it names {needed.name!r}, but {needed} does not exist",
                                       f"Fix the name, or add its sentences/ and tags/ files under {root}",
                                       line=list_line)
        sentences = _read_text(sentence_file).split("\n")
        tags = _read_text(tag_file).split("\n")
        if len(sentences) != len(tags):
            raise CorpusInputError(str(tag_file), f"{len(tags)} lines, but {sentence_file} has {len(sentences)}",
                                   "Each line of a tags file labels the same line of its sentences file")
        for line_no, (sentence, tag_line) in enumerate(zip(sentences, tags), 1):
            if sentence.strip():
                label = "unfair" if unfair & set(tag_line.split()) else "fair"
                texts.append(Text(sentence.strip(), [label], f"{sentence_file}:{line_no}"))
    return texts


def _tos_documents(root: Path, fold_list: Path) -> list[tuple[Path, Path, int]]:
    """The sentences file, tags file and fold-list line of each document `fold_list` names."""
    return [(root / "sentences" / name, root / "tags" / name, line_no)
            for line_no, line in _text_lines(fold_list) for name in line.split()]


def _read_jsonl(file: Path, task: DownstreamTaskConfig, split_value: str) -> list[Text]:
    texts: list[Text] = []
    for line_no, raw in _text_lines(file):
        if not raw.strip():
            continue
        record = _json_record(raw, file, line_no)
        if record.get(task.split_field) != split_value:
            continue
        for key in (task.text_field, task.label_field):
            if key not in record:
                raise CorpusInputError(str(file), f"the record has no {key!r} field",
                                       "Set the task's text_field / label_field to the record's keys", line=line_no)
        labels = _record_labels(record[task.label_field], task, file, line_no)
        if not task.multi_label and len(labels) != 1:
            raise CorpusInputError(str(file), f"{len(labels)} labels in a single-label task",
                                   "Set the task's multi_label=true", line=line_no)
        text = record[task.text_field]
        if not isinstance(text, str):
            raise CorpusInputError(str(file), f"the {task.text_field!r} field is {json.dumps(text)}, not a string",
                                   "Give every record its text, or remove the record", line=line_no)
        texts.append(Text(text, labels, f"{file}:{line_no}"))
    if not texts:
        raise CorpusInputError(str(file), f"no record has {task.split_field}={split_value!r}",
                               f"Set the task's train/dev/test keys to values of the {task.split_field!r} field")
    return texts


def _json_record(raw: str, file: Path, line_no: int) -> dict:
    """The JSON object on one line of a JSON-lines file; anything else is refused naming the line."""
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CorpusInputError(str(file), f"not JSON ({err.msg})", "Fix or remove the line", line=line_no) from None
    if not isinstance(record, dict):
        raise CorpusInputError(str(file), f"the line is {json.dumps(record)[:80]}, not a JSON object (a record)",
                               "Give one record per line, {\"text\": ..., \"label\": ..., \"split\": ...}, or "
                               "remove the line", line=line_no)
    return record


def _record_labels(value, task: DownstreamTaskConfig, file: Path, line_no: int) -> list[str]:
    """A record's label (a string, or an integer class id read as its digits), or for a multi-label task
    its list of them ([] for none). null is refused, not read as a class "None" or as no labels: a
    missing annotation is not a label."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, str) or (isinstance(item, int) and not isinstance(item, bool)):
            continue
        wanted = "a multi-label task's labels are a list of strings ([] for none)" if task.multi_label else \
            "a label is a string"
        raise CorpusInputError(str(file), f"the {task.label_field!r} field is {json.dumps(value)[:80]}: {wanted}",
                               "Fix the record's label, or remove the record", line=line_no)
    return [str(item) for item in items]


def label_set(examples: list[Sentence] | list[Text]) -> list[str]:
    """The labels `examples` use, sorted (the head's classes)."""
    found = {tag for ex in examples for tag in (ex.tags if isinstance(ex, Sentence) else ex.labels)}
    return sorted(found)


def unseen_labels(train_labels: list[str], examples: list[Sentence] | list[Text], split: str, task_name: str,
                  policy: str) -> int:
    """How many labels in `examples` train never has. policy=error raises at the first, naming its line."""
    known = set(train_labels)
    count = 0
    for ex in examples:
        for label, where in _labels_where(ex):
            if label in known:
                continue
            if policy == "error":
                file, line = where.rsplit(":", 1)
                raise CorpusInputError(file, f"label {label!r} in the {split} split never occurs in train",
                                       f"The model cannot learn it: fix the label, or set downstream task "
                                       f"{task_name!r} unseen_labels=score_as_wrong to count it as an error",
                                       line=int(line))
            count += 1
    return count


def _labels_where(example: Sentence | Text) -> list[tuple[str, str]]:
    """Each label of `example` with the file:line it is on: a word's own line, a text's line."""
    if isinstance(example, Text):
        return [(label, example.where) for label in example.labels]
    file = example.where.rsplit(":", 1)[0]
    lines = example.word_lines or [int(example.where.rsplit(":", 1)[1])] * len(example.tags)
    return [(tag, f"{file}:{line}") for tag, line in zip(example.tags, lines, strict=True)]
