"""datatrove readers for plain text, JSONL(.gz) and CoNLL-U, strict about bad input.

Each reader decodes bytes itself so that a non-UTF-8 byte, a malformed JSON line or a record
without its text field stops the run with the file and line named, instead of being skipped.
Every document carries `metadata["source"]`, the name of the input it came from.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Iterator

import orjson
from datatrove.data import Document
from datatrove.pipeline.readers.base import BaseDiskReader

from corpora.errors import CorpusInputError

DEFAULT_GLOBS = {"txt": "**/*.txt", "jsonl": "**/*.jsonl*", "conllu": "**/*.conllu"}


class _StrictLineReader(BaseDiskReader):
    """Shared decoding: yields (line_number, text) for each line of a file, gzip or plain."""

    def __init__(self, data_folder: str, source: str, glob_pattern: str, **kwargs):
        super().__init__(data_folder, glob_pattern=glob_pattern, default_metadata={"source": source},
                         add_file_path=False, **kwargs)
        self.source = source

    def _lines(self, filepath: str) -> Iterator[tuple[int, str]]:
        full = self.data_folder.resolve_paths(filepath)
        with self.data_folder.open(filepath, "rb") as raw:
            handle = gzip.GzipFile(fileobj=raw) if filepath.endswith(".gz") else raw
            number = 0
            try:
                for number, line in enumerate(handle, start=1):
                    try:
                        yield number, line.decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise CorpusInputError(
                            full, f"not valid UTF-8 (byte {err.start} of the line)",
                            "Re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or remove it.",
                            line=number) from None
            except (EOFError, OSError, zlib.error) as err:
                if isinstance(err, CorpusInputError):
                    raise
                raise CorpusInputError(full, f"cannot be read past this line ({err})",
                                       "The file is truncated or corrupt: re-download or re-compress it.",
                                       line=number + 1) from None

    def _doc(self, text: str, filepath: str, key: str, extra: dict | None = None) -> Document | None:
        text = text.strip()
        if not text:
            return None
        return Document(text=text, id=f"{self.source}/{filepath}/{key}",
                        metadata={"source": self.source, **(extra or {})})


class TextReader(_StrictLineReader):
    """Plain text: one document per file, per blank-line-separated paragraph, or per line."""

    name = "📄 text"

    def __init__(self, data_folder: str, source: str, glob_pattern: str, unit: str = "paragraph"):
        if unit not in ("file", "paragraph", "line"):
            raise ValueError(f"source.inputs[].txt_unit must be file, paragraph or line, not {unit!r}")
        super().__init__(data_folder, source, glob_pattern)
        self.unit = unit

    def read_file(self, filepath: str):
        block: list[str] = []
        first = 1
        for number, line in self._lines(filepath):
            if self.unit == "line":
                if doc := self._doc(line, filepath, str(number)):
                    yield doc
                continue
            if self.unit == "paragraph" and not line.strip():
                if doc := self._doc("".join(block), filepath, str(first)):
                    yield doc
                block, first = [], number + 1
                continue
            block.append(line)
        if doc := self._doc("".join(block), filepath, str(first)):
            yield doc


class JsonlReader(_StrictLineReader):
    """JSON Lines (optionally gzipped): the text is taken from `text_key`, other keys kept as metadata."""

    name = "🐿 jsonl"

    def __init__(self, data_folder: str, source: str, glob_pattern: str, text_key: str = "text"):
        super().__init__(data_folder, source, glob_pattern)
        self.text_key = text_key

    def read_file(self, filepath: str):
        full = self.data_folder.resolve_paths(filepath)
        for number, line in self._lines(filepath):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise CorpusInputError(full, f"not a JSON object ({err})",
                                       "Fix or remove this line; each line must be one JSON object.",
                                       line=number) from None
            if not isinstance(record, dict) or not isinstance(record.get(self.text_key), str):
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise CorpusInputError(full, f"no string field {self.text_key!r} (found {keys})",
                                       "Set source.inputs[].text_key to the field that holds the text.",
                                       line=number)
            text = record.pop(self.text_key)
            meta = {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool))}
            if doc := self._doc(text, filepath, str(number), meta):
                yield doc


class ConlluReader(_StrictLineReader):
    """CoNLL-U: the `# text =` line of each sentence; sentences grouped into documents.

    A document ends at a `# newdoc` marker or after `sentences_per_doc` sentences, whichever
    comes first (treebanks without markers, like Irish IDT, would otherwise be one document).
    """

    name = "🌳 conllu"

    def __init__(self, data_folder: str, source: str, glob_pattern: str, sentences_per_doc: int = 10):
        super().__init__(data_folder, source, glob_pattern)
        self.sentences_per_doc = sentences_per_doc

    def read_file(self, filepath: str):
        sentences: list[str] = []
        first = 1
        for number, line in self._lines(filepath):
            newdoc = line.startswith("# newdoc")
            if newdoc or len(sentences) >= self.sentences_per_doc:
                if doc := self._doc(" ".join(sentences), filepath, str(first)):
                    yield doc
                sentences, first = [], number
            if line.startswith("# text ="):
                sentences.append(line[len("# text ="):].strip())
        if doc := self._doc(" ".join(sentences), filepath, str(first)):
            yield doc


def make_reader(input_cfg) -> BaseDiskReader:
    """The datatrove reader for one configured input (see `corpora.config.InputConfig`)."""
    path, glob = Path(input_cfg.path), input_cfg.glob or DEFAULT_GLOBS.get(input_cfg.format, "")
    if path.is_file():  # a single file: read its folder, matching only that file
        path, glob = path.parent, path.name
    name = input_cfg.name
    if input_cfg.format == "txt":
        return TextReader(str(path), name, glob, unit=input_cfg.txt_unit)
    if input_cfg.format == "jsonl":
        return JsonlReader(str(path), name, glob, text_key=input_cfg.text_key)
    if input_cfg.format == "conllu":
        return ConlluReader(str(path), name, glob, sentences_per_doc=input_cfg.sentences_per_doc)
    raise ValueError(f"source.inputs[].format must be txt, jsonl or conllu, not {input_cfg.format!r}")
