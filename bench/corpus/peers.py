"""MinHash-LSH dedup on `rensa` (Rust) and on `datasketch` (numpy), for the corpus benchmark.

Both do what a user of either library writes for corpus dedup, and nothing else (no filters, no
language ID): read the JSONL corpus in order, take the word 5-gram shingles of each document
(case-folded `\\w+` words, as our stage does), build a 128-value MinHash, query the LSH index of the
documents kept so far, and drop the document when a candidate's estimated Jaccard reaches 0.7 (the
check our stage makes too); otherwise keep and index it. One process, one core.

- rensa: `RMinHash` (seeded hash per shingle, 128 permutations in Rust) and `RMinHashLSH` with 32
  bands of 4 rows (16 x 8 found only ~60 % of candidates at Jaccard 0.7 by the S-curve).
- datasketch: `MinHash.update_batch` (SHA-1 per shingle, numpy permutations) and `MinHashLSH`
  with its own band/row choice for threshold 0.7.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

WORD = re.compile(r"\w+")
THRESHOLD, NUM_PERM = 0.7, 128


def shingles(text: str, n: int = 5) -> list[str]:
    words = WORD.findall(text.casefold())
    if len(words) < n:
        return [" ".join(words)] if words else []
    return list({" ".join(words[i:i + n]) for i in range(len(words) - n + 1)})


def documents(corpus: Path):
    for path in sorted(corpus.glob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                yield str(doc["bench_id"]), doc["text"]


def run_peer(name: str, corpus: Path, work: Path) -> dict:
    """Dedup `corpus` with library `name`; writes work/removed.jsonl, returns step timings."""
    if name == "rensa":
        from rensa import RMinHash, RMinHashLSH

        lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, num_bands=32)

        def minhash(grams):
            m = RMinHash(num_perm=NUM_PERM, seed=1)
            m.update(grams)
            return m
    else:
        from datasketch import MinHash, MinHashLSH

        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)

        def minhash(grams):
            m = MinHash(num_perm=NUM_PERM, seed=1)
            m.update_batch([g.encode("utf-8") for g in grams])
            return m

    kept, removed = {}, {}
    hashing = indexing = 0.0
    for index, (doc_id, text) in enumerate(documents(corpus)):
        started = time.perf_counter()
        grams = shingles(text)
        if not grams:
            continue
        m = minhash(grams)
        hashed = time.perf_counter()
        hashing += hashed - started
        duplicate_of = next((c for c in lsh.query(m) if kept[c][1].jaccard(m) >= THRESHOLD), None)
        if duplicate_of is None:
            key = index if name == "rensa" else doc_id
            lsh.insert(key, m)
            kept[key] = (doc_id, m)
        else:
            removed[doc_id] = kept[duplicate_of][0]
        indexing += time.perf_counter() - hashed
    with open(work / "removed.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps({"bench_id": k, "duplicate_of": v}) + "\n" for k, v in removed.items())
    return {"folder": str(work), "timing_s": {"shingles_and_minhash": round(hashing, 2),
                                              "lsh_query_verify_insert": round(indexing, 2)}}


def removals(work: Path) -> dict[str, str]:
    with open(work / "removed.jsonl", encoding="utf-8") as handle:
        return {json.loads(line)["bench_id"]: "minhash" for line in handle}
