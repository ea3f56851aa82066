"""datatrove readers for plain text, JSONL(.gz), Parquet, saved HF datasets and CoNLL-U.

Each reader decodes bytes itself so that a non-UTF-8 byte, a NUL byte, a malformed JSON line, a
record without its text field or a record longer than `max_record_mib` is bad input named by
file and line. With `on_bad_record: error` the run stops there; with `skip` the record is left
out, counted, and written to `skipped/<input>/<rank>.jsonl` (file, line, problem) for the report. For
txt by paragraph (or file) the record is the paragraph (file): one bad line, or a paragraph over the
limit, leaves out the whole paragraph, listed once (at the bad line, or at the first line of the long
paragraph).

Each task reads a contiguous run of the whole input (`split_inputs`): all inputs' files in config
order, an HF dataset's rows in ranges. Tasks in rank order read the input in its own order, so the
task count never changes the corpus (its order, which copy of a duplicate is kept, what a cap keeps).

Lines are read with a length limit, so a 50 MB line costs at most `max_record_mib` of memory. A UTF-8
byte order mark (BOM) at the start of a file is removed (Windows editors write one), so the first JSON line
parses and a first `# text =` or `# newdoc` line of CoNLL-U is seen.
Every document carries `metadata["source"]` (the input's name) and, until the dedup step takes
it off, `metadata["input_index"]` (which input it came from, for caps and weights).
"""

from __future__ import annotations

import glob
import gzip
import zlib
from pathlib import Path
from typing import Iterator

import orjson
from datatrove.data import Document
from datatrove.pipeline.readers.base import BaseDiskReader

from bertforge.common.errors import CorpusInputError
from corpora.config import InputConfig

DEFAULT_GLOBS = {"txt": "**/*.txt", "jsonl": "**/*.jsonl*", "conllu": "**/*.conllu",
                 "parquet": "**/*.parquet", "hf": "**/dataset_info.json"}
FORMATS = tuple(DEFAULT_GLOBS)
BAD_RECORD_MODES = ("error", "skip")
TXT_UNITS = ("file", "paragraph", "line")  # TextReader: a document per file, paragraph or line
BOM = "\ufeff"


def size_text(n_bytes: int) -> str:
    """A byte limit for a message: "16 MiB", "0.5 MiB", "1000 bytes" (never "0 MiB" under 1 MiB)."""
    if n_bytes >= 1 << 19:
        return f"{n_bytes / (1 << 20):.3g} MiB"
    return f"{n_bytes / (1 << 10):.3g} KiB" if n_bytes >= 1 << 10 else f"{n_bytes} bytes"


class BadRecord(Exception):
    """One bad record, raised inside a reader and either re-raised as CorpusInputError or skipped."""

    def __init__(self, line: int | None, problem: str, fix: str, fatal_for_file: bool = False):
        super().__init__(problem)
        self.line, self.problem, self.fix, self.fatal_for_file = line, problem, fix, fatal_for_file


class _StrictReader(BaseDiskReader):
    """Shared: source tags, the bad-record policy and bounded line reading (gzip or plain)."""

    def __init__(self, data_folder: str, source: str, glob_pattern: str, input_index: int = 0,
                 on_bad_record: str = "error", max_record_bytes: int = 16 << 20, skipped_folder: str = ""):
        if on_bad_record not in BAD_RECORD_MODES:
            raise ValueError(f"source.on_bad_record must be error or skip, not {on_bad_record!r}")
        super().__init__(data_folder, glob_pattern=glob_pattern, default_metadata={"source": source},
                         add_file_path=False)
        self.source, self.input_index = source, input_index
        self.on_bad_record, self.max_record_bytes = on_bad_record, max_record_bytes
        self.skipped_folder = skipped_folder
        self._skipped_out, self._rank = None, 0
        self.shares: dict[int, list] | None = None
        """Task rank -> the units (`units`) of this input it reads; set by `split_inputs`. None: datatrove's
        own sharding (files rank, rank + tasks, ...), for a reader used outside the corpus stage."""

    def units(self, tasks: int) -> list:
        """This input in pieces that `split_inputs` hands out in order: its files."""
        return self.data_folder.list_files(recursive=self.recursive, glob_pattern=self.glob_pattern)

    def read_units(self, units: list) -> Iterator[Document]:
        return self.read_files_shard(units)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self._rank = rank
        if self.shares is None:
            yield from super().run(data, rank, world_size)
            return
        if data:
            yield from data
        for doc in self.read_units(self.shares.get(rank, [])):
            self.update_doc_stats(doc)
            yield doc

    def update_doc_stats(self, document: Document) -> None:
        """Skipped: datatrove's per-document length statistic cost ~4 us a document; the corpus
        report counts documents and characters itself."""

    # -- bad records -------------------------------------------------------------------------
    def _bad(self, filepath: str, bad: BadRecord) -> None:
        if self.on_bad_record == "error":
            raise CorpusInputError(self.data_folder.resolve_paths(filepath), bad.problem, bad.fix,
                                   line=bad.line) from None
        self._skip(filepath, bad)

    def _empty(self, filepath: str, line: int) -> None:
        """A record (JSON line, table row) whose text is empty, only spaces or null: not bad input, but not a
        document either; listed with the skipped records, so the report counts it."""
        self._skip(filepath, BadRecord(line, "holds no text (empty, only spaces, or null)", ""))

    def _skip(self, filepath: str, bad: BadRecord) -> None:
        full = self.data_folder.resolve_paths(filepath)
        self.stat_update("skipped_records")
        if self.skipped_folder:
            if self._skipped_out is None:
                folder = Path(self.skipped_folder)
                folder.mkdir(parents=True, exist_ok=True)
                # "wb": a task run again after a kill writes its list afresh, never twice
                self._skipped_out = open(folder / f"input{self.input_index}-{self._rank:05d}.jsonl", "wb")
            self._skipped_out.write(orjson.dumps({"file": full, "line": bad.line, "problem": bad.problem,
                                                  "input": self.source}) + b"\n")
            self._skipped_out.flush()

    def read_file(self, filepath: str):
        """Documents of one file; bad records are raised or skipped per `on_bad_record`."""
        records = self._records(filepath)
        while True:
            try:
                doc = next(records)
            except StopIteration:
                return
            except BadRecord as bad:  # the generator is finished after raising: only for whole-file faults
                self._bad(filepath, bad)
                return
            if isinstance(doc, BadRecord):
                self._bad(filepath, doc)
                if doc.fatal_for_file:
                    return
                continue
            yield doc

    def _records(self, filepath: str) -> Iterator[Document | BadRecord]:
        raise NotImplementedError

    def _lines(self, filepath: str) -> Iterator[tuple[int, str | BadRecord]]:
        """(line number, text) per line; a bad line gives a BadRecord in place of its text."""
        limit = self.max_record_bytes
        with self.data_folder.open(filepath, "rb") as raw:
            handle = gzip.GzipFile(fileobj=raw) if filepath.endswith(".gz") else raw
            number = 0
            try:
                while True:
                    line = handle.readline(limit + 1)
                    if not line:
                        return
                    number += 1
                    if len(line) > limit and not line.endswith(b"\n"):
                        while (rest := handle.readline(limit)) and not rest.endswith(b"\n"):
                            pass  # skip the rest of the oversized line without holding it
                        yield number, BadRecord(number, f"line longer than {size_text(limit)}",
                                                "Split the record, or raise source.max_record_mib.")
                        continue
                    if b"\x00" in line:
                        yield number, BadRecord(number, "contains NUL bytes (binary data?)",
                                                "Remove the binary content or the file.")
                        continue
                    try:
                        text = line.decode("utf-8")
                    except UnicodeDecodeError as err:
                        yield number, BadRecord(
                            number, f"not valid UTF-8 (byte {err.start} of the line)",
                            "Re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or remove it.")
                        continue
                    # a byte order mark is no text: left on, it breaks line 1's JSON or CoNLL-U comment
                    yield number, text[1:] if number == 1 and text.startswith(BOM) else text
            except (EOFError, OSError, zlib.error) as err:
                yield number + 1, BadRecord(number + 1, f"cannot be read past this line ({err})",
                                            "The file is truncated or corrupt: re-download or re-compress it.",
                                            fatal_for_file=True)

    def _doc(self, text: str, filepath: str, key: str, extra: dict | None = None) -> Document | None:
        text = text.strip()
        if not text:
            return None
        return Document(text=text, id=f"{self.source}/{filepath}/{key}",
                        metadata={"source": self.source, **(extra or {}), "input_index": self.input_index})

    def _check_size(self, text: str, line: int) -> BadRecord | None:
        if len(text) > self.max_record_bytes:  # counts characters (no encoding pass): up to 4x the bytes
            return BadRecord(line, f"record longer than {size_text(self.max_record_bytes)}",
                             "Split the record, or raise source.max_record_mib.")
        return None


class TextReader(_StrictReader):
    """Plain text: one document per file, per blank-line-separated paragraph, or per line."""

    name = "📄 text"

    def __init__(self, data_folder: str, source: str, glob_pattern: str, unit: str = "paragraph", **kwargs):
        if unit not in TXT_UNITS:
            raise ValueError(f"source.inputs[].txt_unit must be file, paragraph or line, not {unit!r}")
        super().__init__(data_folder, source, glob_pattern, **kwargs)
        self.unit = unit

    def _records(self, filepath: str):
        if self.unit == "line":
            for number, line in self._lines(filepath):
                if isinstance(line, BadRecord):
                    yield line
                elif doc := self._doc(line, filepath, str(number)):
                    yield doc
            return
        yield from self._block_records(filepath)

    def _block_records(self, filepath: str):
        """A document per paragraph (or file). A paragraph holding a bad line, or longer than the record
        limit, is left out whole and listed once: keeping the lines around a bad one
        would join text that never stood together, and keeping the tail of a long one would pass it off as a
        paragraph of its own."""
        block: list[str] = []
        size, first, dropped = 0, 1, False  # dropped: this paragraph (file) was listed as bad: skip it
        for number, line in self._lines(filepath):
            if self.unit == "paragraph" and isinstance(line, str) and not line.strip():
                if not dropped and (doc := self._doc("".join(block), filepath, str(first))):
                    yield doc
                block, size, first, dropped = [], 0, number + 1, False
                continue
            if dropped:
                continue
            if isinstance(line, BadRecord):
                yield self._whole_unit_bad(line, first)
                block, dropped = [], True
                continue
            block.append(line)
            size += len(line)
            if size > self.max_record_bytes:
                limit = size_text(self.max_record_bytes)
                yield BadRecord(first, f"{self.unit} starting here is longer than {limit}",
                                "Split it, use txt_unit=line, or raise source.max_record_mib.")
                block, dropped = [], True
        if not dropped and (doc := self._doc("".join(block), filepath, str(first))):
            yield doc

    def _whole_unit_bad(self, bad: BadRecord, first: int) -> BadRecord:
        """`bad` (one line), saying in skip mode that the paragraph (or file) holding it, from line `first`,
        is left out whole (the skipped list must not read as if only that line was lost)."""
        if self.on_bad_record != "skip":
            return bad  # the run stops at it: nothing is left out
        problem = f"{bad.problem}; its {self.unit} (from line {first}) is left out whole"
        return BadRecord(bad.line, problem, bad.fix, bad.fatal_for_file)


class JsonlReader(_StrictReader):
    """JSON Lines (optionally gzipped): the text is taken from `text_key`, other keys kept as metadata."""

    name = "🐿 jsonl"

    def __init__(self, data_folder: str, source: str, glob_pattern: str, text_key: str = "text", **kwargs):
        super().__init__(data_folder, source, glob_pattern, **kwargs)
        self.text_key = text_key

    def _records(self, filepath: str):
        for number, line in self._lines(filepath):
            if isinstance(line, BadRecord):
                yield line
                continue
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                yield BadRecord(number, f"not a JSON object ({err})",
                                "Fix or remove this line; each line must be one JSON object.")
                continue
            if isinstance(record, dict) and self.text_key in record and record[self.text_key] is None:
                self._empty(filepath, number)  # null text: no text, as an empty string or a null table cell
                continue
            if not isinstance(record, dict) or not isinstance(record.get(self.text_key), str):
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                yield BadRecord(number, f"no string field {self.text_key!r} (found {keys})",
                                "Set source.inputs[].text_key to the field that holds the text.")
                continue
            text = record.pop(self.text_key)
            if (bad := _nul_in(text, number)) is not None:  # an escaped \u0000, which the byte check cannot see
                yield bad
                continue
            meta = {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool))}
            if doc := self._doc(text, filepath, str(number), meta):
                yield doc
            else:
                self._empty(filepath, number)


def _nul_in(text: str, number: int) -> BadRecord | None:
    """A decoded text that holds NUL characters (binary data), as a bad record; None for text."""
    return BadRecord(number, "contains NUL characters (binary data?)", "Remove the binary content.") \
        if "\x00" in text else None


def _row_records(reader: _StrictReader, rows: Iterator[dict], filepath: str, text_key: str, first: int = 0):
    """Documents from table rows (Parquet, HF datasets), the first being row `first` (0-based) of its table;
    the row number (1-based) stands in for the line."""
    for number, row in enumerate(rows, start=first + 1):
        text = row.get(text_key)
        if not isinstance(text, str):
            if text is None:
                reader._empty(filepath, number)
                continue
            yield BadRecord(number, f"column {text_key!r} holds {type(text).__name__}, not text",
                            "Set source.inputs[].text_key to a string column.")
            continue
        if (bad := reader._check_size(text, number)) is not None:
            yield bad
            continue
        if (bad := _nul_in(text, number)) is not None:
            yield bad
            continue
        meta = {k: v for k, v in row.items() if k != text_key and isinstance(v, (str, int, float, bool))}
        if doc := reader._doc(text, filepath, str(number), meta):
            yield doc
        else:
            reader._empty(filepath, number)


class ParquetReader(_StrictReader):
    """Parquet files, read in record batches (memory ~ one batch); `text_key` names the text column."""

    name = "📦 parquet"

    def __init__(self, data_folder: str, source: str, glob_pattern: str, text_key: str = "text",
                 batch_rows: int = 1024, **kwargs):
        super().__init__(data_folder, source, glob_pattern, **kwargs)
        self.text_key, self.batch_rows = text_key, batch_rows

    def _records(self, filepath: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            handle = pq.ParquetFile(self.data_folder.resolve_paths(filepath))
        except (pa.ArrowInvalid, OSError) as err:
            raise BadRecord(None, f"is not a readable Parquet file ({err})",
                            "Re-export it, or remove it from the input.", fatal_for_file=True) from None
        columns = handle.schema_arrow.names
        if self.text_key not in columns:
            raise BadRecord(None, f"has no column {self.text_key!r} (columns: {columns})",
                            "Set source.inputs[].text_key to the column that holds the text.", fatal_for_file=True)

        def rows():
            for batch in handle.iter_batches(batch_size=self.batch_rows):
                yield from batch.to_pylist()

        yield from _row_records(self, rows(), filepath, self.text_key)


class HFDatasetReader(_StrictReader):
    """A dataset saved with `datasets.Dataset.save_to_disk` (the folder holding dataset_info.json).

    Memory-mapped Arrow: rows are read in batches; a task reads contiguous ranges of rows. A document's id
    holds its row number in the whole dataset, whatever the task count.
    """

    name = "🤗 hf dataset"

    def __init__(self, data_folder: str, source: str, glob_pattern: str, text_key: str = "text", **kwargs):
        super().__init__(data_folder, source, glob_pattern, **kwargs)
        self.text_key = text_key
        self._rows = (0, None)  # the range of rows `_records` reads; None: to the end

    def units(self, tasks: int) -> list:
        """`tasks` ranges of rows (start, end), so every task can take a share of one dataset."""
        try:
            rows = len(self._load())
        except BadRecord:
            return [(0, None)]  # reading it names the problem
        return [(rank * rows // tasks, (rank + 1) * rows // tasks) for rank in range(tasks)]

    def read_units(self, units: list) -> Iterator[Document]:
        for rows in units:
            self._rows = rows
            yield from self.read_file("")

    def _load(self):
        from datasets import load_from_disk

        folder = self.data_folder.resolve_paths("")
        try:
            dataset = load_from_disk(folder)
        except (FileNotFoundError, ValueError) as err:
            raise BadRecord(None, f"is not a saved HF dataset ({err})",
                            "Point source.inputs[].path at the folder written by save_to_disk.",
                            fatal_for_file=True) from None
        if hasattr(dataset, "keys"):  # a DatasetDict: read every split in a fixed order
            raise BadRecord(None, f"holds several splits ({sorted(dataset.keys())})",
                            "Point source.inputs[].path at one split's folder.", fatal_for_file=True)
        if self.text_key not in dataset.column_names:
            raise BadRecord(None, f"has no column {self.text_key!r} (columns: {dataset.column_names})",
                            "Set source.inputs[].text_key to the column that holds the text.", fatal_for_file=True)
        return dataset

    def _records(self, filepath: str):
        dataset = self._load()
        start, end = self._rows
        end = len(dataset) if end is None else end
        shard = dataset.select(range(start, end)) if (start, end) != (0, len(dataset)) else dataset

        def rows():
            for batch in shard.iter(batch_size=1024):
                keys = list(batch)
                for values in zip(*batch.values()):
                    yield dict(zip(keys, values))

        yield from _row_records(self, rows(), "rows", self.text_key, first=start)


class ConlluReader(_StrictReader):
    """CoNLL-U: the `# text =` line of each sentence; sentences grouped into documents.

    A document ends at a `# newdoc` marker or after `sentences_per_doc` sentences, whichever
    comes first (treebanks without markers, like Irish IDT, would otherwise be one document).
    """

    name = "🌳 conllu"

    def __init__(self, data_folder: str, source: str, glob_pattern: str, sentences_per_doc: int = 10, **kwargs):
        super().__init__(data_folder, source, glob_pattern, **kwargs)
        self.sentences_per_doc = sentences_per_doc

    def _records(self, filepath: str):
        sentences: list[str] = []
        first = 1
        for number, line in self._lines(filepath):
            if isinstance(line, BadRecord):
                yield line
                continue
            newdoc = line.startswith("# newdoc")
            if newdoc or len(sentences) >= self.sentences_per_doc:
                if doc := self._sentences_doc(sentences, filepath, str(first)):
                    yield doc
                sentences, first = [], number
            if line.startswith("# text ="):
                sentences.append(line[len("# text ="):].strip())
        if doc := self._sentences_doc(sentences, filepath, str(first)):
            yield doc

    def _sentences_doc(self, sentences: list[str], filepath: str, key: str) -> Document | None:
        # The treebank's own sentence boundaries travel as lengths (characters of each sentence, joined by
        # one space), so sentence-pair objectives need no sentence splitter (`corpora.shards.sentences`).
        return self._doc(" ".join(sentences), filepath, key, {"sentence_chars": [len(s) for s in sentences]})


def split_inputs(readers: list[_StrictReader], tasks: int) -> None:
    """Give each of `tasks` tasks a contiguous run of the whole input: every reader's units in config
    order, cut into `tasks` runs of about equal count (see the module doc)."""
    units = [(reader, unit) for reader in readers for unit in reader.units(tasks)]
    for reader in readers:
        reader.shares = {}
    for rank in range(tasks):
        for reader, unit in units[rank * len(units) // tasks:(rank + 1) * len(units) // tasks]:
            reader.shares.setdefault(rank, []).append(unit)


def exact_glob(name: str) -> str:
    """A glob pattern that matches the file `name` and nothing else. `[`, `*` and `?` in the name are
    escaped (`crawl[2024].jsonl` would match `crawl2.jsonl`...), and the pattern always holds a bracket:
    datatrove puts `*` before a pattern without one (`plain.jsonl` would also match `explain.jsonl`)."""
    escaped = glob.escape(name)
    if glob.has_magic(escaped):
        return escaped
    for i, ch in enumerate(escaped):
        if ch.isalnum() or ch in "._":
            return f"{escaped[:i]}[{ch}]{escaped[i + 1:]}"
    return escaped  # no letter, digit, dot or underscore at all: left as it is


def make_reader(input_cfg: InputConfig, source_name: str, index: int = 0, on_bad_record: str = "error",
                max_record_mib: float = 16.0, skipped_folder: str = "") -> BaseDiskReader:
    """The datatrove reader for one configured input (see `corpora.config.InputConfig`); its documents
    carry the input's name, or `source_name` when the input has none."""
    fmt = input_cfg.format
    if fmt not in FORMATS:
        raise ValueError(f"source.inputs[{index}].format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    path, pattern = Path(input_cfg.path), input_cfg.glob or DEFAULT_GLOBS[fmt]
    if path.is_file() and fmt != "hf":  # a single file: read its folder, matching only that file
        path, pattern = path.parent, exact_glob(path.name)
    common = dict(input_index=index, on_bad_record=on_bad_record,
                  max_record_bytes=int(max_record_mib * (1 << 20)), skipped_folder=skipped_folder)
    name = input_cfg.name or source_name
    if fmt == "txt":
        return TextReader(str(path), name, pattern, unit=input_cfg.txt_unit, **common)
    if fmt == "jsonl":
        return JsonlReader(str(path), name, pattern, text_key=input_cfg.text_key, **common)
    if fmt == "parquet":
        return ParquetReader(str(path), name, pattern, text_key=input_cfg.text_key, **common)
    if fmt == "hf":
        return HFDatasetReader(str(path), name, "dataset_info.json", text_key=input_cfg.text_key, **common)
    return ConlluReader(str(path), name, pattern, sentences_per_doc=input_cfg.sentences_per_doc, **common)
