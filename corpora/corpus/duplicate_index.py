"""The duplicate index, split into `corpus.index_tasks` datatrove tasks by hash range of its keys.

A document's keys are its exact hash (the "exact band") and one hash per LSH band of its MinHash
signature. The signature step (`whole_corpus.SignatureWriter`) sends each key, with the document's
row, to the key file of the index task that owns the key's hash range (`KeyFiles`), so:

- `IndexTask` (task p of K) reads only the keys of its range: about (bands + 1) x N / K entries (14
  bytes on disk, ~25 held), flat as the corpus grows when K grows with it. Documents that share a key (same band)
  form a run; as in the one-task index, each is paired with the run's first document, and a band
  pair is kept when its estimated Jaccard reaches the threshold (signatures read for the pairs only).
  Every run lies wholly in one task, so the tasks together find exactly the pairs one task found.
- `MergeDecisions` (one task) reads the pairs (memory in proportion to the duplicates, not the
  corpus): exact pairs mark their second document; near pairs that touch an exact duplicate are
  dropped (an exact duplicate has its kept copy's signature, so the copy sits in every run the
  duplicate does, below it: the runs' first documents and the remaining pairs are those of the
  one-task index over the documents left). In reading order, a document is then removed when its
  estimated Jaccard reaches the threshold with a kept document that one of its pairs leads to (the
  pair's first document, or that one's kept copy), so a chain of pairs removes only what is close
  to something kept (`_near`). An exact copy of a removed near duplicate is a near duplicate of that
  one's kept copy. Then, one signature task's files at a time, the source caps and weights, and the
  decision files `DecisionApplier` reads. Caps and weights come after dedup: a kept copy they drop
  takes its duplicates' text with it (the first copy in reading order is kept, whatever input the
  later ones are in), and each such duplicate says so (`duplicate_dropped_by`).

Boilerplate line counting (off by default) stays global: its memory grows with the corpus's lines.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from corpora.config import NearDedupConfig
from corpora.corpus.text_batch import fmix64

KEEP, EXACT, NEAR, CAP, WEIGHT = 0, 1, 2, 3, 4
ACTION_REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate", CAP: "source_cap", WEIGHT: "source_weight"}
KEY_DTYPE = np.dtype([("key", "<u8"), ("band", "<u2"), ("row", "<u4")])  # 14 bytes per key, packed
PAIR_DTYPE = np.dtype([("first", "<i8"), ("other", "<i8"), ("exact", "u1")])
EXACT_BAND = 0xFFFF  # the band number of exact hashes: runs there are duplicates without a similarity check
# per document: exact hash, input index, has a signature; and, for the kept totals of the report,
# characters, words and which (source, language) pair of the task's `labels.json` it carries
META_DTYPE = np.dtype([("exact", "<u8"), ("input", "<u2"), ("has_sig", "u1"), ("chars", "<u4"), ("words", "<u4"),
                       ("label", "<u4")])
LINE_DTYPE = np.dtype([("doc", "<u4"), ("hash", "<u8")])
READ_KEYS = 1 << 20  # keys read from a file at a time
CLUSTERS_SHOWN, MEMBERS_SHOWN = 5, 5  # the largest clusters the report shows, and removed copies of each
MAX_COPIES = 255  # copies of a kept document (source weights) are held as uint8


def index_task_of(keys: np.ndarray, tasks: int) -> np.ndarray:
    """The index task owning each key: its range of the (re-mixed) 64-bit hash space."""
    return ((fmix64(keys) >> np.uint64(32)) * np.uint64(tasks) >> np.uint64(32)).astype(np.int64)


class KeyFiles:
    """One signature task's key files, one per index task (`<rank>.keys.<index task>`)."""

    def __init__(self, folder: Path, rank: int, tasks: int):
        self.tasks = tasks
        self.handles = [open(folder / f"{rank:05d}.keys.{p:05d}", "wb") for p in range(tasks)]

    def write(self, keys: np.ndarray, bands: np.ndarray, rows: np.ndarray) -> None:
        """Send each (key, band, row) to the file of the index task owning the key."""
        entries = np.empty(len(keys), KEY_DTYPE)
        entries["key"], entries["band"], entries["row"] = keys, bands, rows
        owner = index_task_of(keys, self.tasks)
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self.tasks + 1))
        entries = entries[order]
        for p in np.flatnonzero(np.diff(bounds)):
            self.handles[p].write(entries[bounds[p]:bounds[p + 1]].tobytes())

    def close(self) -> None:
        for handle in self.handles:
            handle.close()


class SignatureFiles:
    """The signature tasks' files in reading order: global document index <-> (task, row)."""

    def __init__(self, folder: Path, num_perm: int):
        self.folder, self.num_perm = folder, num_perm
        self.ranks = sorted(int(p.stem) for p in folder.glob("*.meta"))
        self.sizes = [(folder / f"{r:05d}.meta").stat().st_size // META_DTYPE.itemsize for r in self.ranks]
        self.offsets = np.concatenate(([0], np.cumsum(self.sizes))).astype(np.int64)
        self.total = int(self.offsets[-1])

    def signatures(self, docs: np.ndarray) -> np.ndarray:
        """(len(docs), num_perm) uint32: the signatures of the global indices `docs`, read from disk."""
        out = np.empty((len(docs), self.num_perm), dtype=np.uint32)
        which = np.searchsorted(self.offsets, docs, side="right") - 1
        for k in np.unique(which):
            path = self.folder / f"{self.ranks[k]:05d}.sig"
            sig = np.memmap(path, dtype=np.uint32, mode="r").reshape(-1, self.num_perm)
            mine = which == k
            out[mine] = sig[docs[mine] - self.offsets[k]]
        return out

    def similarity(self, first: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Estimated Jaccard (share of equal MinHash values) of each pair (first[i], other[i]), read a bounded
        number of pairs at a time: two signatures per pair in memory."""
        out = np.empty(len(first))
        for start in range(0, len(first), 1 << 16):
            end = start + (1 << 16)
            out[start:end] = (self.signatures(first[start:end]) == self.signatures(other[start:end])).mean(axis=1)
        return out

    def meta(self, k: int) -> np.ndarray:
        return np.fromfile(self.folder / f"{self.ranks[k]:05d}.meta", dtype=META_DTYPE)


def star_pairs(keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, other) for every document `other` sharing its key (within one band) with a lower one;
    `first` is the lowest document of the run. `docs` must be ascending (as the key files are read)."""
    order = np.argsort(keys, kind="stable")  # stable: each run keeps its documents ascending
    k, d = keys[order], docs[order]
    starts = np.ones(len(d), dtype=bool)
    starts[1:] = k[1:] != k[:-1]
    first = d[np.flatnonzero(starts)][np.cumsum(starts) - 1]
    return first[~starts], d[~starts]


class IndexTask(PipelineStep):
    """Index task p of K: the duplicate pairs among the keys of its hash range."""

    type = "🫂 - DEDUP"
    name = "🧮 duplicate index"

    def __init__(self, sig_folder: str, pairs_folder: str, cfg: NearDedupConfig):
        super().__init__()
        self.sig_folder, self.pairs_folder, self.cfg = sig_folder, pairs_folder, cfg

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        files = SignatureFiles(Path(self.sig_folder), self.cfg.num_perm)
        out = Path(self.pairs_folder)
        out.mkdir(parents=True, exist_ok=True)
        with self.track_time():
            keys, bands, docs = self._read_keys(files, rank)
            self.stat_update("keys", value=len(keys))
            pairs = []
            for band in np.flatnonzero(np.bincount(bands)):  # one band at a time: its temporaries are a share of the task's keys
                mine = np.flatnonzero(bands == band)
                first, other = star_pairs(keys[mine], docs[mine])
                pairs.append((first, other, band == EXACT_BAND))
            del keys, bands, docs
            exact = [(f, o) for f, o, is_exact in pairs if is_exact]
            near = [(f, o) for f, o, is_exact in pairs if not is_exact]
            pairs = np.concatenate([self._pairs(*_joined(exact), True), self._verified(files, *_joined(near))])
        np.save(out / f"{rank:05d}.npy", pairs)
        return iter(())

    def _read_keys(self, files: SignatureFiles, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(key, band, global document) of this task's keys, read file by file into arrays sized once
        (18 bytes per key held, not twice that while joining)."""
        paths = [Path(self.sig_folder) / f"{r:05d}.keys.{rank:05d}" for r in files.ranks]
        counts = [p.stat().st_size // KEY_DTYPE.itemsize for p in paths]
        keys, bands = np.empty(sum(counts), np.uint64), np.empty(sum(counts), np.uint16)
        docs = np.empty(sum(counts), np.int64)
        at = 0
        for k, (path, count) in enumerate(zip(paths, counts)):
            with open(path, "rb") as handle:
                for _ in range(0, count, READ_KEYS):  # a bounded read buffer, whatever the file's size
                    part = np.fromfile(handle, dtype=KEY_DTYPE, count=READ_KEYS)
                    end = at + len(part)
                    keys[at:end], bands[at:end] = part["key"], part["band"]
                    docs[at:end] = part["row"].astype(np.int64) + files.offsets[k]
                    at = end
        return keys, bands, docs

    @staticmethod
    def _pairs(first: np.ndarray, other: np.ndarray, exact: bool) -> np.ndarray:
        unique = np.unique(np.stack([first, other], axis=1), axis=0) if len(first) else np.zeros((0, 2), np.int64)
        pairs = np.empty(len(unique), PAIR_DTYPE)
        pairs["first"], pairs["other"], pairs["exact"] = unique[:, 0], unique[:, 1], exact
        return pairs

    def _verified(self, files: SignatureFiles, first: np.ndarray, other: np.ndarray) -> np.ndarray:
        """The candidate pairs (each once) whose estimated Jaccard reaches the threshold."""
        pairs = self._pairs(first, other, False)
        self.stat_update("lsh_candidate_pairs", value=len(pairs))
        return pairs[files.similarity(pairs["first"], pairs["other"]) >= self.cfg.threshold]


class MergeDecisions(PipelineStep):
    """One task: from the index tasks' pairs, keep or drop every document and why; source caps and
    weights; the decision files of each signature task."""

    type = "🫂 - DEDUP"
    name = "🔗 merge duplicates"

    def __init__(self, sig_folder: str, pairs_folder: str, out_folder: str, cfg: NearDedupConfig, exact: bool,
                 inputs: list[dict], min_repeated_line_docs: int = 0):
        super().__init__()
        self.sig_folder, self.pairs_folder, self.out_folder = sig_folder, pairs_folder, out_folder
        self.cfg, self.exact = cfg, exact
        self.inputs = inputs  # [{"weight": w, "max_docs": n}, ...] per input, in config order
        self.min_repeated_line_docs = min_repeated_line_docs

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        files = SignatureFiles(Path(self.sig_folder), self.cfg.num_perm)
        out = Path(self.out_folder)
        out.mkdir(parents=True, exist_ok=True)
        with self.track_time():
            pairs = [np.load(p) for p in sorted(Path(self.pairs_folder).glob("*.npy"))]
            pairs = np.concatenate(pairs) if pairs else np.zeros(0, PAIR_DTYPE)
            removed, rep, action_of, similarity = self._clusters(files, pairs)
            del pairs
            counts = np.zeros(5, dtype=np.int64)
            line_hashes, taken, placed = [], [0] * len(self.inputs), [0] * len(self.inputs)
            dups_of_rank = []
            keepers = np.unique(rep)  # the kept copies that have duplicates
            dropped: dict[int, str] = {}  # of them, those a source cap or weight then dropped, and which
            for k, r in enumerate(files.ranks):
                start, end = files.offsets[k], files.offsets[k + 1]
                lo, hi = np.searchsorted(removed, [start, end])
                action = np.zeros(end - start, dtype=np.uint8)
                action[removed[lo:hi] - start] = action_of[lo:hi]
                meta = files.meta(k)
                if self.min_repeated_line_docs:  # counted over what dedup keeps, before caps and weights
                    rows = np.fromfile(Path(self.sig_folder) / f"{r:05d}.lines", dtype=LINE_DTYPE)
                    line_hashes.append(rows["hash"][action[rows["doc"].astype(np.int64)] == KEEP])
                copies = self._mix(meta, action, taken, placed)
                here = keepers[np.searchsorted(keepers, start):np.searchsorted(keepers, end)]
                for keeper, verdict in zip(here.tolist(), action[here - start].tolist()):
                    if verdict in (CAP, WEIGHT):
                        dropped[keeper] = ACTION_REASONS[verdict]
                counts += np.bincount(action, minlength=5)
                np.save(out / f"{r:05d}.action.npy", action)
                np.save(out / f"{r:05d}.copies.npy", copies)
                dups_of_rank.append((lo, hi))
            if self.min_repeated_line_docs:
                self._boilerplate(line_hashes, out)
            near = action_of == NEAR
            clusters = _largest_clusters(removed[near], rep[near], CLUSTERS_SHOWN)
            ids = _ids_of(files, set(rep.tolist()) | {m for c in clusters for m in c})
            for (lo, hi), r, start in zip(dups_of_rank, files.ranks, files.offsets[:-1]):
                # A third entry where a cap or weight dropped the kept copy: the text is in no output
                dups = {int(removed[i] - start): [ids[int(rep[i])], round(float(similarity[i]), 3)]
                        + ([dropped[int(rep[i])]] if int(rep[i]) in dropped else []) for i in range(lo, hi)}
                (out / f"{r:05d}.dups.json").write_text(json.dumps(dups), encoding="utf-8")
            sim_of = dict(zip(removed.tolist(), similarity.tolist()))

            def place(doc: int) -> dict:  # the task and the row in its files of a global index
                k = int(np.searchsorted(files.offsets, doc, side="right")) - 1
                return {"kept_rank": int(files.ranks[k]), "kept_row": int(doc - files.offsets[k])}

            (out / "clusters.json").write_text(json.dumps([
                {"kept_id": ids[keeper], **place(keeper), "size": size,
                 "removed": [{"id": ids[m], "similarity": round(sim_of[m], 3)} for m in members]}
                for (keeper, *members), size in clusters.items()], ensure_ascii=False), encoding="utf-8")
        self.stat_update("documents", value=files.total)
        for code, reason in ACTION_REASONS.items():
            self.stat_update(reason, value=int(counts[code]))
        return iter(())

    def _clusters(self, files: SignatureFiles, pairs: np.ndarray):
        """(removed documents sorted, their kept copy, EXACT or NEAR, estimated Jaccard with it as float32)."""
        exact = pairs[pairs["exact"] == 1]
        e_docs, first_at = np.unique(exact["other"], return_index=True)  # each exact duplicate once
        e_rep = exact["first"][first_at]
        near = pairs[pairs["exact"] == 0]
        near = near[~np.isin(near["first"], e_docs) & ~np.isin(near["other"], e_docs)]
        n_docs, n_rep, n_sim = self._near(files, near)
        e_action = np.full(len(e_docs), EXACT, np.uint8)
        e_sim = np.ones(len(e_docs), dtype=np.float32)
        if len(n_docs):  # an exact copy of a near duplicate: a near duplicate of its kept copy, at its similarity
            at = np.searchsorted(n_docs, e_rep).clip(max=len(n_docs) - 1)
            via = n_docs[at] == e_rep
            e_rep = np.where(via, n_rep[at], e_rep)
            e_action[via], e_sim[via] = NEAR, n_sim[at[via]]
        removed = np.concatenate([e_docs, n_docs])
        rep = np.concatenate([e_rep, n_rep])
        action = np.concatenate([e_action, np.full(len(n_docs), NEAR, np.uint8)])
        similarity = np.concatenate([e_sim, n_sim])
        order = np.argsort(removed, kind="stable")
        return removed[order], rep[order], action[order], similarity[order]

    def _near(self, files: SignatureFiles, near: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(removed documents sorted, their kept copy, estimated Jaccard with it) from the verified near pairs.

        In reading order, a document is removed when its estimated Jaccard reaches the threshold with a kept
        document that one of its pairs leads to: the pair's first document if it is kept, else that one's kept
        copy. A chain of pairs (A~B, B~C, C~D ...) so removes only what is close to something kept, where
        connected components would remove the whole chain for its first document, C and D with nothing in
        common with A. The pairs split into connected components, which are decided apart: a component of
        two documents, most of them, is its one pair (no signature read); a larger one reads its members'
        signatures, a share of the duplicates at a time."""
        empty = np.zeros(0, np.int64)
        if not len(near):
            return empty, empty, np.zeros(0, np.float32)
        # imported here: scipy.sparse is a fifth of a second to import
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        # one row per pair: a pair found in several bands may come from several index tasks
        first, other = np.unique(np.stack([near["first"], near["other"]], axis=1), axis=0).T
        members = np.unique(np.concatenate([first, other]))  # compact ids: sorted documents
        a, b = np.searchsorted(members, first), np.searchsorted(members, other)
        graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(members), len(members)))
        _, label = connected_components(graph, directed=False)
        size = np.bincount(label)
        two = size[label[a]] == 2
        docs, reps, sims = [other[two]], [first[two]], [files.similarity(first[two], other[two]).astype(np.float32)]
        big = np.flatnonzero(size > 2)
        if len(big):
            in_big = np.flatnonzero(size[label] > 2)  # ascending: each component's members in reading order
            in_big = in_big[np.argsort(label[in_big], kind="stable")]
            starts = np.searchsorted(label[in_big], big)
            ends = np.append(starts[1:], len(in_big))
            order = np.flatnonzero(~two)
            order = order[np.argsort(label[b[order]], kind="stable")]  # the pairs, component by component
            p_ends = np.searchsorted(label[b[order]], big, side="right")
            p_starts = np.append(0, p_ends[:-1])
            group = 0
            while group < len(big):  # components together, up to a bounded number of signatures at a time
                last = group + max(1, int(np.searchsorted(ends[group:] - starts[group], 1 << 16, side="right")))
                held = members[in_big[starts[group]:ends[last - 1]]]
                sig, row = files.signatures(held), {int(d): i for i, d in enumerate(held)}
                for c in range(group, last):
                    mine = order[p_starts[c]:p_ends[c]]
                    decided = self._decide(members[in_big[starts[c]:ends[c]]], first[mine], other[mine], sig, row)
                    for out, part in zip((docs, reps, sims), decided):
                        out.append(part)
                group = last
        n_docs, n_rep, n_sim = np.concatenate(docs), np.concatenate(reps), np.concatenate(sims)
        order = np.argsort(n_docs, kind="stable")
        return n_docs[order], n_rep[order], n_sim[order]

    def _decide(self, docs: np.ndarray, first: np.ndarray, other: np.ndarray, sig: np.ndarray,
                row: dict[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One component: its members `docs` (ascending) in reading order, each against the kept copies its
        pairs (first[i] < other[i]) lead to; the most similar that reaches the threshold is its kept copy (ties:
        the first). (removed, kept copy, estimated Jaccard) arrays; `sig[row[d]]` is document d's signature."""
        leads: dict[int, list[int]] = {}
        for earlier, later in zip(first.tolist(), other.tolist()):
            leads.setdefault(later, []).append(earlier)
        kept_copy: dict[int, int] = {}
        out = []
        for doc in docs.tolist():
            if doc not in leads:
                continue  # no pair to an earlier document: kept
            candidates = sorted({kept_copy.get(first, first) for first in leads[doc]})
            estimate = (sig[[row[c] for c in candidates]] == sig[row[doc]]).mean(axis=1)
            best = int(np.argmax(estimate))
            if estimate[best] >= self.cfg.threshold:
                kept_copy[doc] = candidates[best]
                out.append((doc, candidates[best], estimate[best]))
        if not out:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        removed, rep, estimate = zip(*out)
        return np.array(removed, np.int64), np.array(rep, np.int64), np.array(estimate, np.float32)

    def _mix(self, meta: np.ndarray, action: np.ndarray, taken: list[int], placed: list[int]) -> np.ndarray:
        """Source caps (first kept documents win) and weights (hash-chosen sampling or repeats), for one
        signature task's documents; `taken` and `placed` carry each input's counts from earlier tasks."""
        copies = np.ones(len(meta), dtype=np.uint8)  # weights are checked to lie in [0, MAX_COPIES] (corpus.stage)
        for index, spec in enumerate(self.inputs):
            mine = np.nonzero((meta["input"] == index) & (action == KEEP))[0]
            weight = float(spec.get("weight", 1.0))
            whole, fraction = math.floor(weight), weight - math.floor(weight)
            uniform = (meta["exact"][mine] >> np.uint64(11)).astype(np.float64) / 2.0**53
            # exact hash is 0 when exact dedup is off; fall back to the position for the draw
            if not self.exact:
                uniform = ((placed[index] + np.arange(len(mine))) * 0.6180339887498949) % 1.0
            placed[index] += len(mine)
            n_copies = whole + (uniform < fraction)
            copies[mine] = n_copies
            action[mine[n_copies == 0]] = WEIGHT
            cap = int(spec.get("max_docs", 0))
            if cap:
                kept = mine[n_copies > 0]
                room = max(0, cap - taken[index])
                action[kept[room:]] = CAP
                taken[index] += min(room, len(kept))
        return copies

    def _boilerplate(self, line_hashes: list[np.ndarray], out: Path) -> None:
        """Hashes of lines found in at least `min_repeated_line_docs` documents that survive dedup
        (so duplicated documents do not make their own lines look like boilerplate)."""
        hashes = np.concatenate(line_hashes) if line_hashes else np.zeros(0, np.uint64)
        values, counts = np.unique(hashes, return_counts=True)
        repeated = values[counts >= self.min_repeated_line_docs]
        self.stat_update("boilerplate_lines", value=len(repeated))
        np.save(out / "boilerplate.npy", repeated)


def _joined(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate([f for f, _ in pairs]), np.concatenate([o for _, o in pairs])


def _largest_clusters(near: np.ndarray, rep: np.ndarray, count: int) -> dict[tuple[int, ...], int]:
    """The `count` largest near-duplicate clusters (ties: the earliest kept document first), each as
    (kept index, first removed indices...) -> size; `near` are the removed documents, sorted."""
    if not len(near):
        return {}
    keepers, sizes = np.unique(rep, return_counts=True)
    top = np.lexsort((keepers, -sizes))[:count]
    return {(int(keepers[t]), *near[rep == keepers[t]][:MEMBERS_SHOWN].tolist()): int(sizes[t]) + 1 for t in top}


def _ids_of(files: SignatureFiles, wanted: set[int]) -> dict[int, str]:
    """Document ids of the global indices in `wanted` (read line by line: memory ~ len(wanted))."""
    found: dict[int, str] = {}
    if not wanted:
        return found
    for r, start, end in zip(files.ranks, files.offsets[:-1], files.offsets[1:]):
        if not any(start <= w < end for w in wanted):
            continue
        with open(files.folder / f"{r:05d}.ids", encoding="utf-8") as handle:
            for i, line in enumerate(handle):
                if int(start) + i in wanted:
                    found[int(start) + i] = line.rstrip("\n")
    return found
