"""The duplicate index split into tasks by hash range decides exactly as one index over the whole
corpus did, on real legal text with its own near-duplicates and on planted ones, and resumes."""

import gzip
import json
import random

import numpy as np
import pytest

from bertforge.common.errors import ConfigError
from bertforge.stages import run_stage
from corpora.corpus import stage as corpus_stage
from corpora.corpus.minhash import signatures
from corpora.corpus.text_batch import TextBatch
from corpora.corpus.whole_corpus import band_hashes


def runs_of_equal(values, candidates):
    """(lowest, other) index pairs of runs of equal `values` among `candidates`."""
    order = candidates[np.argsort(values[candidates], kind="stable")]
    v = values[order]
    starts = np.concatenate(([True], v[1:] != v[:-1]))
    first = np.minimum.reduceat(order, np.flatnonzero(starts))[np.cumsum(starts) - 1]
    return first[order != first], order[order != first]


def one_task_index(texts, num_perm=128, bands=20, rows=5, threshold=0.7, seed=1):
    """The whole index in one process, as a reference: exact runs first, then LSH over the documents left,
    each document paired with the first of every band run it is in and the pair checked against the
    threshold; then, in reading order, a document is removed as a near duplicate of the most similar kept
    document its checked pairs lead to (the pair's first, or that one's kept copy), if that reaches the
    threshold. An exact copy of a removed near duplicate goes with it. Returns {removed: (reason, kept)}."""
    batches = [TextBatch(texts[i:i + 256]) for i in range(0, len(texts), 256)]
    exact = np.concatenate([b.exact_hashes() for b in batches])
    sigs, has_sig = map(np.concatenate, zip(*(signatures(b, num_perm, 5, "words", seed) for b in batches)))
    total = len(texts)
    decided = {}
    first, other = runs_of_equal(exact, np.arange(total))
    decided.update({int(o): ("exact_duplicate", int(f)) for f, o in zip(first, other)})
    candidates = np.array([i for i in range(total) if i not in decided and has_sig[i]])
    keys = band_hashes(sigs[candidates], bands, rows)
    pairs = {(int(candidates[f]), int(candidates[o])) for band in range(bands)
             for f, o in zip(*runs_of_equal(keys[:, band], np.arange(len(candidates))))}
    similar = lambda a, b: (sigs[a] == sigs[b]).mean()  # noqa: E731
    leads = {}
    for a, b in pairs:
        if similar(a, b) >= threshold:
            leads.setdefault(b, set()).add(a)
    kept_copy = {}
    for doc in range(total):
        options = sorted({kept_copy.get(a, a) for a in leads.get(doc, ())})
        if options:
            best = max(options, key=lambda k: (similar(doc, k), -k))
            if similar(doc, best) >= threshold:
                kept_copy[doc] = best
    decided.update({doc: ("near_duplicate", kept) for doc, kept in kept_copy.items()})
    return {doc: ("near_duplicate", kept_copy[kept]) if kept in kept_copy else (reason, kept)
            for doc, (reason, kept) in decided.items()}


def legal_texts_with_plants(data_dir):
    """Every sentence of the 50 Terms of Service (real clauses, many nearly repeated across companies)
    and, after them, planted copies: exact (re-cased, re-spaced), near (a word or two changed), and a
    near copy of an exact copy."""
    folder = data_dir / "legal" / "tos_unfair_clauses_en" / "sentences"
    texts = [line for path in sorted(folder.glob("*.txt")) for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    rng = random.Random(5)
    long = [t for t in texts if len(t.split()) >= 60]
    for text in rng.sample(long, 40):
        words = text.split()
        texts.append("  " + text.upper())
        words[rng.randrange(len(words))] = "changed"
        texts.append(" ".join(words))
    return texts


def line_of(doc_id: str) -> int:
    """0-based input line of a document id (`<file>/<line number from 1>`)."""
    return int(doc_id.rsplit("/", 1)[1]) - 1


def removed_by_index(folder):
    """{line index: (reason, kept line index)} of the stage's dedup removals."""
    out = {}
    for path in (folder / "removed" / "dedup").glob("*.jsonl.gz"):
        for line in gzip.open(path):
            doc = json.loads(line)
            meta = doc["metadata"]
            out[line_of(doc["id"])] = (meta["filter_reason"], line_of(meta["duplicate_of"]))
    return out


def stage_cfg(make_cfg, src, work, index_tasks):
    return make_cfg("corpus", ["source=jsonl", f"source.inputs.0.path={src}", "filters=none",
                               "filters.normalise.collapse_spaces=false", "filters.exact_dedup=true",
                               "filters.near_dedup.enabled=true", f"corpus.index_tasks={index_tasks}"], work_dir=work)


def test_split_index_decides_as_the_one_task_index_on_real_legal_text(make_cfg, data_dir, tmp_path):
    texts = legal_texts_with_plants(data_dir)
    src = tmp_path / "tos.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    split = run_stage(stage_cfg(make_cfg, src, tmp_path / "split", 4), "corpus")
    kept_texts = {line_of(d["id"]): d["text"] for p in (split / "documents").glob("*.jsonl.gz")
                  for d in map(json.loads, gzip.open(p))}
    removed = removed_by_index(split)
    assert len(kept_texts) + len(removed) == len(texts)
    # the reference runs on the texts as the stage read them (normalised), in reading order
    read = {**kept_texts, **{line_of(d["id"]): d["text"] for p in (split / "removed" / "dedup").glob("*")
                             for d in map(json.loads, gzip.open(p))}}
    reference = one_task_index([read[i] for i in range(len(texts))])
    assert removed == reference
    reasons = [reason for reason, _ in removed.values()]
    # the real clauses repeat across companies: both kinds occur beyond the 80 plants
    assert reasons.count("exact_duplicate") > 40 and reasons.count("near_duplicate") > 40
    exact_plants, near_plants = range(len(texts) - 80, len(texts), 2), range(len(texts) - 79, len(texts), 2)
    assert all(removed.get(i, ("",))[0] == "exact_duplicate" for i in exact_plants)
    assert sum(i in removed for i in near_plants) >= 36, sum(i in removed for i in near_plants)

    one = run_stage(stage_cfg(make_cfg, src, tmp_path / "one", 1), "corpus")
    assert removed_by_index(one) == removed
    report_one, report_split = (json.loads((f / "report.json").read_text()) for f in (one, split))
    assert report_one["duplicate_clusters"] == report_split["duplicate_clusters"]
    assert report_one["documents_kept"] == report_split["documents_kept"]


def test_killed_after_the_index_tasks_resumes_without_running_them_again(make_cfg, data_dir, tmp_path, monkeypatch):
    texts = legal_texts_with_plants(data_dir)[-2000:]
    src = tmp_path / "tos.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    cfg = stage_cfg(make_cfg, src, tmp_path / "w", 3)
    real_chain = corpus_stage.run_chain

    def killed_after_index(executor, steps, logging_dir):
        real_chain(executor, steps[:2], logging_dir)  # filter and index finish, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_stage, "run_chain", killed_after_index)
    with pytest.raises(KeyboardInterrupt):
        run_stage(cfg, "corpus")
    [work] = list((tmp_path / "w" / "corpus").glob(".corpus-*.work"))
    done = {p.name: p.stat().st_mtime_ns for p in (work / "datatrove" / "index" / "completions").iterdir()}
    assert len(done) == 3
    monkeypatch.setattr(corpus_stage, "run_chain", real_chain)
    folder = run_stage(cfg, "corpus")
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "datatrove" / "index" / "completions").iterdir()}
    assert after == done  # not run again
    assert removed_by_index(folder) == removed_by_index(run_stage(stage_cfg(make_cfg, src, tmp_path / "x", 3), "corpus"))


def test_index_tasks_below_one_is_refused_before_work(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="corpus.index_tasks=0"):
        run_stage(make_cfg("corpus", ["corpus.index_tasks=0"]), "corpus")
    assert not list((tmp_path / "work").glob("corpus/*"))


def removed_with_similarity(folder):
    """{line index: (reason, kept line index, similarity)} of the stage's dedup removals."""
    out = {}
    for path in (folder / "removed" / "dedup").glob("*.jsonl.gz"):
        for line in gzip.open(path):
            meta = json.loads(line)["metadata"]
            out[line_of(json.loads(line)["id"])] = (meta["filter_reason"], line_of(meta["duplicate_of"]),
                                                    meta["similarity"])
    return out


def test_a_chain_of_near_duplicates_keeps_what_is_not_close_to_anything_kept(make_cfg, tmp_path):
    """30 windows of one text, each shifted 12 of its 200 words (neighbours ~0.9 alike): merging every chain
    of pairs into one cluster kept the first window alone. Each removed window names a kept one that it
    resembles at or above the threshold, and the text's words survive."""
    rng = random.Random(1)
    stream = [f"w{rng.randrange(5000)}" for _ in range(600)]
    windows = [" ".join(stream[k * 12:k * 12 + 200]) for k in range(30)]
    src = tmp_path / "windows.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in windows), encoding="utf-8")
    folder = run_stage(stage_cfg(make_cfg, src, tmp_path / "w", 3), "corpus")
    removed = removed_with_similarity(folder)
    kept = sorted(set(range(30)) - set(removed))
    assert 0 in kept and len(kept) >= 5
    assert all(reason == "near_duplicate" and kept_copy in kept and similarity >= 0.7
               for reason, kept_copy, similarity in removed.values())
    words = {w for i in kept for w in windows[i].split()}
    assert len(words) >= 0.9 * len(set(" ".join(windows).split()))
    assert {i: (reason, kept_copy) for i, (reason, kept_copy, _) in removed.items()} == one_task_index(windows)


def test_an_exact_copy_of_a_near_duplicate_names_the_kept_document(make_cfg, tmp_path):
    rng = random.Random(4)
    words = [f"w{rng.randrange(3000)}" for _ in range(300)]
    near = list(words)
    near[150] = "changed"
    texts = [" ".join(words), " ".join(near), " ".join(near).upper()]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    removed = removed_with_similarity(run_stage(stage_cfg(make_cfg, src, tmp_path / "w", 1), "corpus"))
    # the third is an exact copy of the second, which is itself removed: both name the first
    assert removed[1] == removed[2] and removed[1][:2] == ("near_duplicate", 0) and removed[1][2] > 0.9


@pytest.mark.parametrize("limit, reason", [("max_docs: 1", "source_cap"), ("weight: 0", "source_weight")])
def test_a_duplicate_whose_kept_copy_a_cap_or_weight_dropped_says_so(make_cfg, tmp_path, limit, reason):
    """Dedup keeps the first copy in reading order, then caps and weights decide: a copy of input A removed as
    a duplicate of one that input B's cap or weight then drops is in no output. It is not silent: the
    removed record and the report say so."""
    shared = "The second document of input B, which also appears in input A word for word, about the tides."
    b, a = tmp_path / "b.jsonl", tmp_path / "a.jsonl"
    b.write_text(json.dumps({"text": "The first document of input B, about the weather in Galway."}) + "\n"
                 + json.dumps({"text": shared}) + "\n", encoding="utf-8")
    a.write_text(json.dumps({"text": shared}) + "\n"
                 + json.dumps({"text": "A document only input A holds, about the ferries."}) + "\n", encoding="utf-8")
    inputs = (f"source.inputs=[{{path: '{b}', format: jsonl, name: B, {limit}}}, "
              f"{{path: '{a}', format: jsonl, name: A}}]")
    folder = run_stage(make_cfg("corpus", ["source=jsonl", "filters=none", "filters.exact_dedup=true", inputs]),
                       "corpus")
    removed = [json.loads(line)["metadata"] for p in (folder / "removed" / "dedup").glob("*.jsonl.gz")
               for line in gzip.open(p)]
    [duplicate] = [m for m in removed if m["filter_reason"] == "exact_duplicate"]
    assert duplicate["source"] == "A" and duplicate["duplicate_of"] == "B/b.jsonl/2"
    assert duplicate["duplicate_dropped_by"] == reason
    report = json.loads((folder / "report.json").read_text())
    assert report["removed_by_rule"]["exact_duplicate"]["kept_copy_dropped"] == 1
    assert "1 duplicate(s) removed whose kept copy a source cap or weight then dropped" in \
        (folder / "report.md").read_text()
