"""Exact and MinHash-LSH near-duplicate removal across the whole corpus, as three datatrove steps.

1. `SignatureWriter` (every task): for each document, a hash of its text with case and spacing
   ignored and a MinHash signature (`num_perm` uint32, `corpora.corpus.minhash`) are appended to per-task
   binary files, a batch of documents at a time; the document goes on.
2. `DuplicateIndex` (one task): reads all signatures; exact duplicates share a hash; LSH puts a
   pair in a candidate bucket when one band of `rows` values agrees, and a candidate is a
   duplicate when its estimated Jaccard (share of equal values) reaches `threshold`; connected
   documents form a cluster whose first document (in reading order) is kept. Source caps and
   weights are decided here too, because only this step sees the whole corpus.
3. `DecisionApplier` (every task): reads back what step 1 passed on, drops what step 2 decided
   (naming the kept copy) and writes the stage's output.

Optional boilerplate removal rides on the same steps: step 1 records a hash of each line of 20+
characters, step 2 marks lines found in at least `min_repeated_line_docs` kept documents, step 3
cuts them out (writing each cut line aside) and drops a document left with nothing.

Memory of step 2: 4 * num_perm bytes per document (512 B at 128), plus 8 bytes per band.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import xxhash
import orjson
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched
from datatrove.utils.typeshelper import StatHints

from corpora.corpus.rules.lines import split_lines
from corpora.corpus.minhash import signatures
from corpora.corpus.text_batch import BATCH_KEY, TextBatch, batches_of
from corpora.corpus.writers import CutLineLog, JsonlFile
from corpora.config import NearDedupConfig

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) for combining hashes

KEEP, EXACT, NEAR, CAP, WEIGHT = 0, 1, 2, 3, 4
ACTION_REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate", CAP: "source_cap", WEIGHT: "source_weight"}
# per document: exact hash, input index, has a signature; and, for the kept totals of the report,
# characters, words and which (source, language) pair of the task's `labels.json` it carries
META_DTYPE = np.dtype([("exact", "<u8"), ("input", "<u2"), ("has_sig", "u1"), ("chars", "<u4"), ("words", "<u4"),
                       ("label", "<u4")])
LINE_DTYPE = np.dtype([("doc", "<u4"), ("hash", "<u8")])
BOILERPLATE_MIN_LINE_CHARS = 20  # shorter lines ("Yes.", dates) repeat innocently
CLUSTERS_SHOWN, MEMBERS_SHOWN = 5, 5  # the largest clusters the report shows, and removed copies of each
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


class SignatureWriter(PipelineStep):
    """Step 1: exact hash and MinHash signature of each document, appended to per-task files."""

    type = "🫂 - DEDUP"
    name = "✍️ signatures"

    def __init__(self, folder: str, cfg: NearDedupConfig, exact: bool, boilerplate_lines: bool = False):
        super().__init__()
        self.folder, self.cfg, self.exact, self.boilerplate_lines = folder, cfg, exact, boilerplate_lines
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
            for batch in batched(data, self.batch_docs):
                self._write(batch, meta_out, sig_out, ids_out, lines_out)
                yield from batch
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
            meta_out.write(meta.tobytes())
            ids_out.write("".join(doc.id.replace("\n", " ") + "\n" for doc in batch))
            if self.boilerplate_lines:
                rows = [(self._written + k, h) for k, doc in enumerate(batch) for h in boilerplate_candidates(doc.text)]
                lines_out.write(np.array(rows, dtype=LINE_DTYPE).tobytes())
            self._written += len(batch)


def _largest_clusters(action: np.ndarray, rep: np.ndarray, count: int) -> dict[tuple[int, ...], int]:
    """The `count` largest near-duplicate clusters (ties: the earliest kept document first), each as
    (kept index, first removed indices...) -> size."""
    near = np.flatnonzero(action == NEAR)
    if not len(near):
        return {}
    sizes = np.bincount(rep[near])
    keepers = np.flatnonzero(sizes)
    top = keepers[np.lexsort((keepers, -sizes[keepers]))][:count]
    return {(int(k), *near[rep[near] == k][:MEMBERS_SHOWN].tolist()): int(sizes[k]) + 1 for k in top}


def _runs_of_equal(values: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (first, other) of indices in `candidates` whose `values` are equal; first is the lowest."""
    order = candidates[np.argsort(values[candidates])]
    sorted_vals = values[order]
    starts = np.concatenate(([True], sorted_vals[1:] != sorted_vals[:-1]))  # where each run of equal values starts
    if starts.all():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    run = np.cumsum(starts) - 1
    first = np.minimum.reduceat(order, np.flatnonzero(starts))[run]  # the lowest index of each one's run
    other = order != first
    return first[other], order[other]


class DuplicateIndex(PipelineStep):
    """Step 2 (one task): decide, for every document of every task, keep or drop and why."""

    type = "🫂 - DEDUP"
    name = "🧮 duplicate index"

    def __init__(self, sig_folder: str, out_folder: str, cfg: NearDedupConfig, exact: bool, inputs: list[dict],
                 min_repeated_line_docs: int = 0):
        super().__init__()
        self.sig_folder, self.out_folder, self.cfg, self.exact = sig_folder, out_folder, cfg, exact
        self.inputs = inputs  # [{"weight": w, "max_docs": n}, ...] per input, in config order
        self.min_repeated_line_docs = min_repeated_line_docs

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        sig_dir, out = Path(self.sig_folder), Path(self.out_folder)
        out.mkdir(parents=True, exist_ok=True)
        ranks = sorted(int(p.stem) for p in sig_dir.glob("*.meta"))
        metas = [np.fromfile(sig_dir / f"{r:05d}.meta", dtype=META_DTYPE) for r in ranks]
        sizes = [len(m) for m in metas]
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        meta = np.concatenate(metas) if metas else np.zeros(0, META_DTYPE)
        total = len(meta)
        action = np.zeros(total, dtype=np.uint8)
        rep = np.arange(total, dtype=np.int64)
        similarity = np.ones(total, dtype=np.float32)
        with self.track_time():
            if self.exact and total:
                first, other = _runs_of_equal(meta["exact"], np.arange(total))
                action[other], rep[other] = EXACT, first
            if self.cfg.enabled and total:
                self._near(sig_dir, ranks, total, meta, action, rep, similarity)
            if self.min_repeated_line_docs:
                self._boilerplate(sig_dir, ranks, offsets, action, out)
            copies = self._mix(meta, action)
        self.stat_update("documents", value=total)
        for code, reason in ACTION_REASONS.items():
            self.stat_update(reason, value=int((action == code).sum()))
        clusters = _largest_clusters(action, rep, CLUSTERS_SHOWN)
        rep_ids = self._ids_of(sig_dir, ranks, offsets, set(rep[action == EXACT].tolist()) |
                               set(rep[action == NEAR].tolist()) | {m for c in clusters for m in c})
        def place(doc: int) -> dict:  # the task and the row in its files of a global index
            k = int(np.searchsorted(offsets, doc, side="right")) - 1
            return {"kept_rank": int(ranks[k]), "kept_row": int(doc - offsets[k])}

        (out / "clusters.json").write_text(json.dumps([
            {"kept_id": rep_ids[keeper], **place(keeper), "size": size,
             "removed": [{"id": rep_ids[m], "similarity": round(float(similarity[m]), 3)} for m in members]}
            for (keeper, *members), size in clusters.items()], ensure_ascii=False), encoding="utf-8")
        for r, start, size in zip(ranks, offsets[:-1], sizes):
            sl = slice(start, start + size)
            np.save(out / f"{r:05d}.action.npy", action[sl])
            np.save(out / f"{r:05d}.copies.npy", copies[sl])
            dups = {int(i - start): [rep_ids[int(rep[i])], round(float(similarity[i]), 3)]
                    for i in np.nonzero((action[sl] == EXACT) | (action[sl] == NEAR))[0] + start}
            (out / f"{r:05d}.dups.json").write_text(json.dumps(dups), encoding="utf-8")
        return iter(())

    def _near(self, sig_dir, ranks, total, meta, action, rep, similarity) -> None:
        cfg = self.cfg
        if cfg.bands * cfg.rows > cfg.num_perm:
            raise ValueError(f"filters.near_dedup: bands*rows ({cfg.bands}*{cfg.rows}) exceeds num_perm "
                             f"({cfg.num_perm}); raise num_perm or lower bands/rows")
        sigs = np.concatenate([np.fromfile(sig_dir / f"{r:05d}.sig", dtype=np.uint32).reshape(-1, cfg.num_perm)
                               for r in ranks])  # (N, num_perm)
        candidates = np.nonzero((action == KEEP) & (meta["has_sig"] == 1))[0]
        bands = band_hashes(sigs if len(candidates) == total else sigs[candidates], cfg.bands, cfg.rows)
        firsts, others = [], []
        for band in range(cfg.bands):
            first, other = _runs_of_equal(bands[:, band], np.arange(len(candidates)))
            firsts.append(candidates[first])
            others.append(candidates[other])
        first, other = np.concatenate(firsts), np.concatenate(others)
        if not len(first):
            return
        pairs = np.unique(np.stack([first, other], axis=1), axis=0)  # (E, 2), each pair once
        estimate = (sigs[pairs[:, 0]] == sigs[pairs[:, 1]]).mean(axis=1)  # estimated Jaccard per pair
        self.stat_update("lsh_candidate_pairs", value=len(pairs))
        pairs, estimate = pairs[estimate >= cfg.threshold], estimate[estimate >= cfg.threshold]
        if not len(pairs):
            return
        from scipy.sparse import coo_matrix  # imported here: scipy.sparse is a fifth of a second to import
        from scipy.sparse.csgraph import connected_components

        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(total, total))
        _, label = connected_components(graph, directed=False)
        in_pairs = np.unique(pairs)
        # the kept copy of each cluster is its first document in reading order
        first_of = {}
        for doc in in_pairs:
            first_of.setdefault(int(label[doc]), int(doc))
        for doc in in_pairs:
            keeper = first_of[int(label[doc])]
            if doc != keeper:
                action[doc], rep[doc] = NEAR, keeper
                similarity[doc] = float((sigs[doc] == sigs[keeper]).mean())

    def _boilerplate(self, sig_dir, ranks, offsets, action, out: Path) -> None:
        """Hashes of lines found in at least `min_repeated_line_docs` documents that survive dedup
        (so duplicated documents do not make their own lines look like boilerplate)."""
        hashes = []
        for r, start in zip(ranks, offsets[:-1]):
            rows = np.fromfile(sig_dir / f"{r:05d}.lines", dtype=LINE_DTYPE)
            hashes.append(rows["hash"][action[start + rows["doc"].astype(np.int64)] == KEEP])
        values, counts = np.unique(np.concatenate(hashes) if hashes else np.zeros(0, np.uint64), return_counts=True)
        repeated = values[counts >= self.min_repeated_line_docs]
        self.stat_update("boilerplate_lines", value=len(repeated))
        np.save(out / "boilerplate.npy", repeated)

    def _mix(self, meta, action) -> np.ndarray:
        """Source caps (first kept documents win) and weights (hash-chosen sampling or repeats)."""
        copies = np.ones(len(meta), dtype=np.uint8)
        for index, spec in enumerate(self.inputs):
            mine = np.nonzero((meta["input"] == index) & (action == KEEP))[0]
            weight = float(spec.get("weight", 1.0))
            whole, fraction = math.floor(weight), weight - math.floor(weight)
            uniform = (meta["exact"][mine] >> np.uint64(11)).astype(np.float64) / 2.0**53
            # exact hash is 0 when exact dedup is off; fall back to the position for the draw
            if not self.exact:
                uniform = (np.arange(len(mine)) * 0.6180339887498949) % 1.0
            n_copies = whole + (uniform < fraction)
            copies[mine] = np.minimum(n_copies, 255)
            action[mine[n_copies == 0]] = WEIGHT
            cap = int(spec.get("max_docs", 0))
            if cap:
                kept = mine[n_copies > 0]
                action[kept[cap:]] = CAP
        return copies

    def _ids_of(self, sig_dir, ranks, offsets, wanted: set[int]) -> dict[int, str]:
        """Document ids of the global indices in `wanted` (read line by line: memory ~ len(wanted))."""
        found: dict[int, str] = {}
        if not wanted:
            return found
        for r, start in zip(ranks, offsets[:-1]):
            with open(sig_dir / f"{r:05d}.ids", encoding="utf-8") as handle:
                for i, line in enumerate(handle):
                    if int(start) + i in wanted:
                        found[int(start) + i] = line.rstrip("\n")
        return found


class DecisionApplier(PipelineStep):
    """Step 3 (every task): reads back, in order, the documents this task kept in step 1 and applies
    what `DuplicateIndex` decided. Kept documents go to `documents/` as the line that was read
    (unless boilerplate is cut from one or it is copied for a source weight), removed ones to
    `removed/dedup/` with `filter_reason`, `duplicate_of` (the kept id) and `similarity` (estimated
    Jaccard); cut lines are logged. Totals of what was kept (documents, words, characters, sources,
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
        if not source.exists():  # this task kept no documents in step 1
            return iter(())
        action = np.load(folder / f"{rank:05d}.action.npy")
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
        with self.track_time():
            with open(source, "rb") as lines:
                for index, line in enumerate(lines):
                    if index >= len(action):
                        raise RuntimeError(f"dedup decisions hold {len(action)} documents but {source} has more: "
                                           "the intermediate files changed between steps; rerun the corpus stage")
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
                            record["metadata"]["duplicate_of"], record["metadata"]["similarity"] = dups[str(index)]
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
                        duplicate = record | {"id": f"{record['id']}#copy{copy}"}
                        kept_out.write(orjson.dumps(duplicate, option=orjson.OPT_APPEND_NEWLINE))
                    if not plain[index]:  # copied, or cut: not as step 1 recorded it
                        summary.add(record, copies=int(copies[index]))
            for handle in (kept_out, removed_out, cut_log):
                if handle is not None:
                    handle.close()
        summary.add_recorded(plain)
        summary.write(out / "kept" / f"{rank:05d}.json")
        self.stat_update(StatHints.forwarded, value=summary.documents)
        for reason, count in removed.items():
            self.stat_update(f"dropped_{reason}", value=count)
        if cut_lines:
            self.stat_update("boilerplate_lines_cut", value=cut_lines)
        return iter(())


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
