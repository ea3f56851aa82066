"""Peak memory per duplicate-index task and time as the corpus grows, on synthetic signatures.

    python bench/corpus/index_scale.py --docs 10000000 --index-tasks 10 --folder /tmp/scale --out r.json

How the signatures are made (streamed, 250 k documents at a time, one "signature task" file per
1 M documents, as the corpus stage's signature step lays them out): 128 uniform random uint32 values
and a random 64-bit exact hash per document; in each million, 500 documents are exact copies of an
earlier one (same hash, same signature) and 500 are near copies (12 of the 128 values redrawn:
estimated Jaccard 0.906). Their keys go through the stage's own `KeyFiles` into the index tasks'
files. Only the signature rows of documents in a planted pair are written: the rest of each `.sig`
file is a hole, since the index reads signatures only for candidate pairs (random rows share no
64-bit band hash). Then each index task, and the merge, runs alone in a fresh process (two at a
time, like two workers on the two cores), and its peak RSS is read from `wait4`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from corpora.config import NearDedupConfig
from corpora.corpus.duplicate_index import EXACT_BAND, META_DTYPE, IndexTask, KeyFiles, MergeDecisions
from corpora.corpus.whole_corpus import band_hashes

PER_FILE, CHUNK, PLANTS_PER_FILE = 1_000_000, 250_000, 500  # planted copies of each kind per file
CFG = NearDedupConfig(enabled=True)


def generate(folder: Path, docs: int, index_tasks: int, seed: int = 0) -> dict:
    """Write the signature files of `docs` synthetic documents; returns the planted pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = {"exact": [], "near": []}
    plants = PLANTS_PER_FILE * CHUNK // PER_FILE  # of each kind, per chunk
    for rank, start in enumerate(range(0, docs, PER_FILE)):
        n_file = min(PER_FILE, docs - start)
        keys = KeyFiles(folder, rank, index_tasks)
        with open(folder / f"{rank:05d}.sig", "wb") as sig_out, open(folder / f"{rank:05d}.meta", "wb") as meta_out, \
                open(folder / f"{rank:05d}.ids", "w") as ids_out:
            for c0 in range(0, n_file, CHUNK):
                n = min(CHUNK, n_file - c0)
                sig = rng.integers(0, 2**32, size=(n, CFG.num_perm), dtype=np.uint32)
                exact = rng.integers(0, 2**63, size=n, dtype=np.uint64)
                # copies in the chunk's second half, of originals in its first half
                copies = rng.choice(np.arange(n // 2, n), size=2 * plants, replace=False)
                originals = rng.integers(0, n // 2, size=2 * plants)
                sig[copies] = sig[originals]
                exact[copies[:plants]] = exact[originals[:plants]]
                near = copies[plants:]
                redraw = np.argsort(rng.random((plants, CFG.num_perm)), axis=1)[:, :12]
                sig[near[:, None], redraw] = rng.integers(0, 2**32, size=(plants, 12), dtype=np.uint32)
                truth["exact"] += list(zip((start + c0 + originals[:plants]).tolist(), (start + c0 + copies[:plants]).tolist()))
                truth["near"] += list(zip((start + c0 + originals[plants:]).tolist(), (start + c0 + near).tolist()))
                for row in np.unique(np.concatenate([copies, originals])).tolist():
                    sig_out.seek((c0 + row) * CFG.num_perm * 4)
                    sig_out.write(sig[row].tobytes())
                meta = np.zeros(n, META_DTYPE)
                meta["exact"], meta["has_sig"], meta["words"], meta["chars"] = exact, 1, 200, 1000
                meta_out.write(meta.tobytes())
                ids_out.write("".join(f"s{start + r}\n" for r in range(c0, c0 + n)))
                per_band = band_hashes(sig, CFG.bands, CFG.rows)
                del sig
                rows = np.arange(c0, c0 + n, dtype=np.uint32)
                keys.write(np.concatenate([exact, per_band.ravel()]),
                           np.concatenate([np.full(n, EXACT_BAND, np.uint16),
                                           np.tile(np.arange(CFG.bands, dtype=np.uint16), n)]),
                           np.concatenate([rows, np.repeat(rows, CFG.bands)]))
            sig_out.truncate(n_file * CFG.num_perm * 4)
        keys.close()
        (folder / f"{rank:05d}.labels.json").write_text('[["synthetic", "xx"]]')
    return truth


def run_one(kind: str, folder: Path, rank: int, tasks: int) -> None:
    """One index task or the merge, in this process (the parent measures it)."""
    if kind == "index":
        IndexTask(str(folder), str(folder / "pairs"), CFG).run(rank=rank, world_size=tasks)
    else:
        MergeDecisions(str(folder), str(folder / "pairs"), str(folder / "decisions"), CFG, exact=True,
                       inputs=[{"weight": 1.0, "max_docs": 0}]).run()


def measured(commands: list[list[str]], parallel: int) -> list[dict]:
    """Run `commands`, `parallel` at a time; wall seconds and peak RSS (MiB) of each process."""
    pending, running, done = list(enumerate(commands)), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            index, command = pending.pop(0)
            running[subprocess.Popen(command).pid] = (index, time.time())
        pid, status, usage = os.wait4(-1, 0)
        index, started = running.pop(pid)
        if status:
            raise RuntimeError(f"{commands[index]} failed ({status})")
        done[index] = {"seconds": round(time.time() - started, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}
    return [done[i] for i in range(len(commands))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int)
    parser.add_argument("--index-tasks", type=int)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # kind rank tasks: run one task here
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], args.folder, int(args.one[1]), int(args.one[2]))
        return
    shutil.rmtree(args.folder, ignore_errors=True)
    started = time.time()
    truth = generate(args.folder, args.docs, args.index_tasks)
    generated = time.time() - started
    key_bytes = sum(p.stat().st_size for p in args.folder.glob("*.keys.*"))
    me = [sys.executable, __file__, "--folder", str(args.folder), "--one"]
    started = time.time()
    tasks = measured([me + ["index", str(p), str(args.index_tasks)] for p in range(args.index_tasks)], args.workers)
    index_wall = time.time() - started
    [merge] = measured([me + ["merge", "0", "1"]], 1)
    decided = {}
    for path in sorted(args.folder.glob("decisions/*.action.npy")):
        rank = int(path.name[:5])
        action = np.load(path)
        for row in np.flatnonzero(action):
            decided[rank * PER_FILE + int(row)] = int(action[row])
    found_exact = sum(decided.get(copy) == 1 for _, copy in truth["exact"])
    found_near = sum(decided.get(copy) == 2 for _, copy in truth["near"])
    planted = {copy for pairs in truth.values() for _, copy in pairs}
    result = {
        "documents": args.docs, "index_tasks": args.index_tasks, "workers": args.workers,
        "keys_per_task": round(key_bytes / 14 / args.index_tasks), "key_files_mb": round(key_bytes / 1e6, 1),
        "generate_seconds": round(generated, 1),
        "index_wall_seconds": round(index_wall, 1),
        "index_task_seconds_max": max(t["seconds"] for t in tasks),
        "index_task_peak_rss_mib_max": max(t["peak_rss_mib"] for t in tasks),
        "index_task_peak_rss_mib_min": min(t["peak_rss_mib"] for t in tasks),
        "merge_seconds": merge["seconds"], "merge_peak_rss_mib": merge["peak_rss_mib"],
        "planted_exact": len(truth["exact"]), "found_exact": found_exact,
        "planted_near": len(truth["near"]), "found_near": found_near,
        "removed_not_planted": sum(doc not in planted for doc in decided),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        runs = json.loads(args.out.read_text()) if args.out.exists() else []
        args.out.write_text(json.dumps(runs + [result], indent=1) + "\n")
    shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
