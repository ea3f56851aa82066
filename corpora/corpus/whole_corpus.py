"""Exact and MinHash-LSH near-duplicate removal across the whole corpus, as datatrove steps.

1. `SignatureWriter` (every task): for each document, a hash of its text with case and spacing
   ignored and a MinHash signature (`num_perm` uint32, `corpora.corpus.minhash`) are appended to per-task
   binary files, a batch of documents at a time, and its keys (exact hash, one hash per LSH band of
   `rows` values) go to the key file of the index task owning each key's hash range; the document goes on.
2. `IndexTask` (`corpus.index_tasks` tasks) and `MergeDecisions` (one task), in
   `corpora.corpus.duplicate_index`: exact duplicates share a hash; a pair is a near-duplicate
   candidate when one band agrees, and a duplicate when its estimated Jaccard (share of equal values)
   reaches `threshold`; connected documents form a cluster whose first document (in reading order)
   is kept. Source caps and weights are decided in the merge, which sees the whole corpus's decisions.
3. `DecisionApplier` (every task): reads back what step 1 passed on, drops what step 2 decided
   (naming the kept copy) and writes the stage's output.

Optional boilerplate removal rides on the same steps: step 1 records a hash of each line of 20+
characters, step 2 marks lines found in at least `min_repeated_line_docs` kept documents, step 3
cuts them out (writing each cut line aside) and drops a document left with nothing. Being cut after
dedup decided, a boilerplate line still tells two documents apart: one with a footer and one without
are both kept, with the same text once it is cut (README.md, corpus section).

Memory of an index task: ~25 bytes per key of its hash range held (14 on disk), (bands + 1) keys
per document, so about 525 B x documents / index_tasks with 20 bands; of the merge: in proportion
to the duplicates.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import xxhash
import orjson
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched
from datatrove.utils.typeshelper import StatHints

from bertforge.common.errors import ConfigError
from corpora.corpus.duplicate_index import ACTION_REASONS, EXACT, EXACT_BAND, KEEP, LINE_DTYPE, META_DTYPE, NEAR, \
    KeyFiles
from corpora.corpus.rules.lines import split_lines
from corpora.corpus.minhash import SHINGLE_UNITS, signatures
from corpora.corpus.text_batch import BATCH_KEY, TextBatch, batches_of
from corpora.corpus.writers import CutLineLog, JsonlFile
from corpora.config import NearDedupConfig
from corpora.documents import copy_id

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) for combining hashes

BOILERPLATE_MIN_LINE_CHARS = 20  # shorter lines ("Yes.", dates) repeat innocently
QUOTE_CHARS = 300  # text quoted from the kept copy of each cluster shown


def line_hash(line: str) -> int:
    """Hash of a line for boilerplate counting: case and surrounding space ignored."""
    return xxhash.xxh64_intdigest(line.strip().casefold().encode("utf-8"))


def boilerplate_candidates(text: str) -> set[int]:
    """Hashes of the lines of `text` long enough to count as boilerplate."""
    return {line_hash(line) for line in text.split("\n") if len(line.strip()) >= BOILERPLATE_MIN_LINE_CHARS}


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(N, bands) uint64: one hash per band of `rows` signature values, for LSH bucketing."""
    out = np.empty((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):  # a band's columns copied together: one strided read of the matrix per band
            block = signatures[:, band * rows:(band + 1) * rows].astype(np.uint64)
            h = np.full(len(signatures), band + 1, dtype=np.uint64)
            for row in range(rows):
                h = (h ^ block[:, row]) * _MIX
            out[:, band] = h
    return out


def check_near_dedup(cfg: NearDedupConfig) -> None:
    """ConfigError, naming the key and what it takes, for `filters.near_dedup` values that cannot work
    (checked before any work starts; nothing is checked while near dedup is off)."""
    if not cfg.enabled:
        return
    key = "filters.near_dedup"
    if cfg.shingle_unit not in SHINGLE_UNITS:
        raise ConfigError(f"{key}.shingle_unit={cfg.shingle_unit!r} is not one of {list(SHINGLE_UNITS)}")
    for name in ("shingle_words", "num_perm", "bands", "rows"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{key}.{name}={getattr(cfg, name)}: give at least 1")
    if cfg.bands * cfg.rows > cfg.num_perm:
        raise ConfigError(f"{key}: bands*rows ({cfg.bands}*{cfg.rows}) exceeds num_perm ({cfg.num_perm}); raise "
                          "num_perm or lower bands or rows")
    if not 0 < cfg.threshold <= 1:
        raise ConfigError(f"{key}.threshold={cfg.threshold}: give an estimated Jaccard similarity above 0 and at "
                          "most 1 (e.g. 0.7)")
    if cfg.seed < 0:
        raise ConfigError(f"{key}.seed={cfg.seed}: give 0 or more")


class SignatureWriter(PipelineStep):
    """Step 1: exact hash and MinHash signature of each document, appended to per-task files."""

    type = "🫂 - DEDUP"
    name = "✍️ signatures"

    def __init__(self, folder: str, cfg: NearDedupConfig, exact: bool, boilerplate_lines: bool = False,
                 index_tasks: int = 1):
        super().__init__()
        self.folder, self.cfg, self.exact, self.boilerplate_lines = folder, cfg, exact, boilerplate_lines
        self.index_tasks = index_tasks
        self._written = 0

    batch_docs = 256  # documents hashed and written together; bounds what a task holds between writes

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._labels: dict[tuple[str, str], int] = {}
        with open(folder / f"{rank:05d}.meta", "wb") as meta_out, \
                open(folder / f"{rank:05d}.sig", "wb") as sig_out, \
                open(folder / f"{rank:05d}.ids", "w", encoding="utf-8") as ids_out, \
                open(folder / f"{rank:05d}.lines", "wb") as lines_out:
            self._keys = KeyFiles(folder, rank, self.index_tasks)
            try:
                for batch in batched(data, self.batch_docs):
                    self._write(batch, meta_out, sig_out, ids_out, lines_out)
                    yield from batch
            finally:
                self._keys.close()
        (folder / f"{rank:05d}.labels.json").write_text(json.dumps(list(self._labels), ensure_ascii=False),
                                                         encoding="utf-8")

    def hashes(self, batch: TextBatch) -> list[tuple[int, bytes, bool, int]]:
        """Per document of `batch`: (exact hash, signature bytes, has a signature, words)."""
        words = batch.words_per_doc.tolist()
        exact = batch.exact_hashes().tolist() if self.exact else [0] * batch.size
        if not self.cfg.enabled:
            return [(e, b"", False, w) for e, w in zip(exact, words)]
        cfg = self.cfg
        sigs, has_sig = signatures(batch, cfg.num_perm, cfg.shingle_words, cfg.shingle_unit, cfg.seed)
        return list(zip(exact, (row.tobytes() for row in sigs), has_sig.tolist(), words))

    def _write(self, batch, meta_out, sig_out, ids_out, lines_out) -> None:
        with self.track_time("batch"):
            # on the batches an earlier step read the documents in, hashed once per batch
            handed: list = [None] * len(batch)
            for texts, rows, positions in batches_of(batch):
                hashes = texts.cached("dedup", self.hashes)
                for row, position in zip(rows.tolist(), positions):
                    handed[position] = hashes[row]
            for doc in batch:  # the last step to use the shared batch: let it go
                doc.metadata.pop(BATCH_KEY, None)
            meta = np.zeros(len(batch), dtype=META_DTYPE)
            meta["exact"] = [h[0] for h in handed]
            meta["has_sig"] = [h[2] for h in handed]
            meta["words"] = [h[3] for h in handed]
            meta["chars"] = [len(doc.text) for doc in batch]
            meta["input"] = [doc.metadata.pop("input_index", 0) for doc in batch]
            labels = self._labels
            meta["label"] = [labels.setdefault((doc.metadata.get("source", "?"),
                                                doc.metadata.get("language", "not identified")), len(labels))
                             for doc in batch]
            if self.cfg.enabled:
                sig_out.write(b"".join(h[1] for h in handed))
            self._write_keys(handed, meta)
            meta_out.write(meta.tobytes())
            ids_out.write("".join(doc.id.replace("\n", " ") + "\n" for doc in batch))
            if self.boilerplate_lines:
                rows = [(self._written + k, h) for k, doc in enumerate(batch) for h in boilerplate_candidates(doc.text)]
                lines_out.write(np.array(rows, dtype=LINE_DTYPE).tobytes())
            self._written += len(batch)

    def _write_keys(self, handed: list, meta: np.ndarray) -> None:
        """The batch's exact hashes and (documents with a signature) band hashes, to the index tasks."""
        rows = self._written + np.arange(len(handed), dtype=np.uint32)
        keys, bands, owners = [], [], []
        if self.exact:
            keys.append(meta["exact"])
            bands.append(np.full(len(handed), EXACT_BAND, np.uint16))
            owners.append(rows)
        if self.cfg.enabled:
            signed = meta["has_sig"] == 1
            if signed.any():
                sigs = np.frombuffer(b"".join(h[1] for h, s in zip(handed, signed) if s), dtype=np.uint32)
                per_band = band_hashes(sigs.reshape(-1, self.cfg.num_perm), self.cfg.bands, self.cfg.rows)
                keys.append(per_band.ravel())
                bands.append(np.tile(np.arange(self.cfg.bands, dtype=np.uint16), len(per_band)))
                owners.append(np.repeat(rows[signed], self.cfg.bands))
        if keys:
            self._keys.write(np.concatenate(keys), np.concatenate(bands), np.concatenate(owners))


class DecisionApplier(PipelineStep):
    """Step 3 (every task): reads back, in order, the documents this task kept in step 1 and applies
    what the duplicate index decided. Kept documents go to `documents/` as the line that was read
    (unless boilerplate is cut from one or it is copied for a source weight), removed ones to
    `removed/dedup/` with `filter_reason`, `duplicate_of` (the kept id), `similarity` (estimated
    Jaccard) and, where a source cap or weight then dropped that kept copy, `duplicate_dropped_by`
    (source_cap or source_weight); cut lines are logged. Totals of what was kept (documents, words, characters, sources,
    languages, from what step 1 recorded per document, and the text of the kept copies of the largest
    clusters) go to `kept/<rank>.json`, so the report need not read the output back.
    """

    type = "🫂 - DEDUP"
    name = "🧹 apply dedup"

    def __init__(self, filtered_folder: str, sig_folder: str, decisions_folder: str, out_folder: str):
        super().__init__()
        self.filtered, self.sig_folder, self.folder, self.out = filtered_folder, sig_folder, decisions_folder, out_folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        source = Path(self.filtered) / f"{rank:05d}.jsonl"
        folder, out = Path(self.folder), Path(self.out)
        action = np.load(folder / f"{rank:05d}.action.npy")
        if not source.exists():
            if len(action):
                _not_as_decided(source, len(action), "no file")
            return iter(())  # this task kept no documents in step 1
        copies = np.load(folder / f"{rank:05d}.copies.npy")
        dups = json.loads((folder / f"{rank:05d}.dups.json").read_text(encoding="utf-8"))
        quoted = {c["kept_row"] for c in json.loads((folder / "clusters.json").read_text(encoding="utf-8"))
                  if c["kept_rank"] == rank}
        boilerplate = set(np.load(folder / "boilerplate.npy").tolist()) if (folder / "boilerplate.npy").exists() else set()
        summary = KeptSummary(Path(self.sig_folder), rank)
        plain = (action == KEEP) & (copies == 1)  # kept as read: totals from step 1's record, no parsing
        removed: Counter = Counter()
        cut_lines = 0
        kept_out, removed_out = JsonlFile(out / "documents", rank), JsonlFile(out / "removed" / "dedup", rank)
        cut_log = CutLineLog(out / "removed_lines" / "boilerplate", rank) if boilerplate else None
        read = 0
        with self.track_time():
            with open(source, "rb") as lines:
                for index, line in enumerate(lines):
                    read = index + 1
                    if index >= len(action):
                        _not_as_decided(source, len(action), "more")
                    if plain[index] and not boilerplate and index not in quoted:
                        kept_out.write(line)
                        continue
                    record = orjson.loads(line)
                    verdict = int(action[index])
                    if verdict != KEEP:
                        reason = ACTION_REASONS[verdict]
                        removed[reason] += 1
                        record["metadata"]["filter_reason"] = reason
                        if verdict in (EXACT, NEAR):
                            kept_id, similarity, *dropped_by = dups[str(index)]
                            record["metadata"] |= {"duplicate_of": kept_id, "similarity": similarity}
                            if dropped_by:  # its kept copy was dropped by a source cap or weight
                                record["metadata"]["duplicate_dropped_by"] = dropped_by[0]
                        removed_out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
                        continue
                    cut = []
                    if boilerplate:
                        kept, cut = split_lines(record["text"], lambda text: _boilerplate_rule(text, boilerplate))
                    if cut:
                        remaining = "\n".join(kept).strip()
                        plain[index] = False  # counted below, from its new text, or removed whole
                        if not remaining:
                            removed["only_boilerplate"] += 1
                            record["metadata"]["filter_reason"] = "only_boilerplate"
                            removed_out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
                            continue
                        record["text"] = remaining
                        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
                        cut_log.write(record["id"], cut)
                        cut_lines += len(cut)
                    kept_out.write(line)
                    if index in quoted:
                        summary.quotes[record["id"]] = record["text"][:QUOTE_CHARS]
                    for copy in range(1, int(copies[index])):
                        duplicate = record | {"id": copy_id(record["id"], copy)}
                        kept_out.write(orjson.dumps(duplicate, option=orjson.OPT_APPEND_NEWLINE))
                    if not plain[index]:  # copied, or cut: not as step 1 recorded it
                        summary.add(record, copies=int(copies[index]))
            for handle in (kept_out, removed_out, cut_log):
                if handle is not None:
                    handle.close()
        if read < len(action):
            _not_as_decided(source, len(action), f"only {read}")
        summary.add_recorded(plain)
        summary.write(out / "kept" / f"{rank:05d}.json")
        self.stat_update(StatHints.forwarded, value=summary.documents)
        for reason, count in removed.items():
            self.stat_update(f"dropped_{reason}", value=count)
        if cut_lines:
            self.stat_update("boilerplate_lines_cut", value=cut_lines)
        return iter(())


def _not_as_decided(source: Path, decided: int, found: str) -> None:
    raise RuntimeError(f"dedup decisions hold {decided} documents but {source} holds {found}: the intermediate "
                       "files changed between steps (were they written by a run with another corpus.tasks?); "
                       "rerun the corpus stage")


def _boilerplate_rule(line: str, boilerplate: set[int]) -> str | None:
    long = len(line.strip()) >= BOILERPLATE_MIN_LINE_CHARS
    return "boilerplate" if long and line_hash(line) in boilerplate else None


class KeptSummary:
    """Totals over the kept documents of one task, written as JSON for the report."""

    def __init__(self, sig_folder: Path, rank: int):
        self.meta = np.fromfile(sig_folder / f"{rank:05d}.meta", dtype=META_DTYPE)
        self.labels = [tuple(pair) for pair in json.loads((sig_folder / f"{rank:05d}.labels.json").read_text(
            encoding="utf-8"))]
        self.documents = self.words = self.characters = self.copies = 0
        self.sources: Counter = Counter()
        self.languages: Counter = Counter()
        self.quotes: dict[str, str] = {}

    def add(self, record: dict, copies: int = 1) -> None:
        """One kept document (and its copies), counted from its text."""
        text, meta = record["text"], record["metadata"]
        self.documents += copies
        self.copies += copies - 1
        self.words += copies * len(text.split())
        self.characters += copies * len(text)
        self.sources[meta.get("source", "?")] += copies
        self.languages[meta.get("language", "not identified")] += copies

    def add_recorded(self, mask: np.ndarray) -> None:
        """The documents of `mask`, counted from what step 1 recorded for each."""
        kept = self.meta[mask]
        self.documents += len(kept)
        self.words += int(kept["words"].sum())
        self.characters += int(kept["chars"].sum())
        for label, count in zip(*np.unique(kept["label"], return_counts=True)):
            source, language = self.labels[int(label)]
            self.sources[source] += int(count)
            self.languages[language] += int(count)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"documents": self.documents, "words": self.words, "characters": self.characters,
                                    "copies": self.copies, "sources": self.sources, "languages": self.languages,
                                    "quotes": self.quotes}, ensure_ascii=False), encoding="utf-8")
