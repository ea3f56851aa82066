"""Corpus-stage benchmark: bertforge's whole corpus stage (with one and with four duplicate-index
tasks) vs datatrove's stock MinHash pipeline and MinHash-LSH dedup on rensa and on datasketch
(`peers.py`).

All run in one invocation on the same corpus (built by make_corpus.py), each in its own process
whose tree is sampled for memory. Reported per system: wall time, MB/s and MB/s per worker
process, peak resident memory (sum over the process tree and largest single process), and
near-duplicate recall per planted Jaccard level and precision of what dedup removed.

    python bench/corpus/make_corpus.py --out /tmp/bench-corpus --mb 200
    python bench/corpus/run_bench.py --corpus /tmp/bench-corpus --work /tmp/bench-work \\
        --out bench/corpus/results.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))  # peers.py beside this script
from peers import removals as peer_removals, run_peer  # noqa: E402

# ours = the stage with one index task; ours_index4 = the same with corpus.index_tasks=4
OURS_INDEX_TASKS = {"ours": 1, "ours_index4": 4}
SYSTEMS = ("ours", "ours_index4", "rensa", "datasketch", "stock")

# The bertforge configuration measured: the Gopher preset (quality + repetition + derived stop
# words) with language ID keeping Irish and Estonian, exact and MinHash near-dup dedup.
OURS_OVERRIDES = ["source=jsonl", "filters=gopher", "filters.langid.languages=[ga,et]"]


# --------------------------------------------------------------------------- the two systems
def run_ours(corpus: Path, work: Path, tasks: int, index_tasks: int = 1) -> dict:
    from hydra import compose, initialize_config_module

    from bertforge.stages import run_stage
    from bertforge.experiment import load_config

    with initialize_config_module(config_module="bertforge_conf", version_base=None):
        raw = compose(config_name="corpus", overrides=OURS_OVERRIDES + [
            f"source.inputs.0.path={corpus}", f"paths.work_dir={work}", "paths.data_dir=/unused",
            f"corpus.tasks={tasks}", f"corpus.index_tasks={index_tasks}"])
    folder = run_stage(load_config(raw), "corpus")
    return {"folder": str(folder), "timing_s": json.loads((folder / "report.json").read_text())["timing_s"]}


def run_stock(corpus: Path, work: Path, tasks: int) -> dict:
    """datatrove's MinHash example pipeline, every setting at its default (MinhashConfig())."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = MinhashConfig()
    workers = min(tasks, os.cpu_count() or 1)
    logs = work / "logs"
    steps = [
        ([JsonlReader(str(corpus)), MinhashDedupSignature(output_folder=str(work / "signatures"), config=config)],
         tasks, "signatures"),
        ([MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"),
                              config=config)], config.num_buckets, "buckets"),
        ([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"),
                              config=config)], 1, "clusters"),
        ([JsonlReader(str(corpus)),
          MinhashDedupFilter(input_folder=str(work / "remove_ids"),
                             exclusion_writer=JsonlWriter(str(work / "removed"))),
          JsonlWriter(str(work / "documents"))], tasks, "filter"),
    ]
    timing = {}
    for pipeline, n_tasks, name in steps:
        started = time.perf_counter()
        LocalPipelineExecutor(pipeline, tasks=n_tasks, workers=min(workers, n_tasks),
                              logging_dir=str(logs / name)).run()
        timing[name] = round(time.perf_counter() - started, 2)
    return {"folder": str(work), "timing_s": timing}


# --------------------------------------------------------------------------- measurement harness
def _tree_rss_bytes(root: int) -> tuple[int, int]:
    """(sum, max) resident bytes over `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            children[int(fields[1])].append(int(entry))
            rss[int(entry)] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    stack, seen = [root], []
    while stack:
        pid = stack.pop()
        seen.append(pid)
        stack += children.get(pid, [])
    values = [rss.get(p, 0) for p in seen]
    return sum(values), max(values, default=0)


def measure(system: str, corpus: Path, work: Path, tasks: int) -> dict:
    """Run one system in a child process; wall time and peak memory of its whole process tree."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, str(HERE), "--system", system, "--corpus", str(corpus),
                              "--work", str(work), "--tasks", str(tasks)],
                             stdout=subprocess.PIPE, stderr=open(work / "stderr.log", "w"), text=True)
    peak = {"sum": 0, "max": 0}

    def sample():
        while child.poll() is None:
            total, largest = _tree_rss_bytes(child.pid)
            peak["sum"], peak["max"] = max(peak["sum"], total), max(peak["max"], largest)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = child.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if child.returncode:
        raise RuntimeError(f"{system} failed; see {work / 'stderr.log'}")
    result = json.loads(out.strip().splitlines()[-1])
    result |= {"wall_s": round(wall, 2), "peak_rss_tree_mib": round(peak["sum"] / 2**20),
               "peak_rss_largest_process_mib": round(peak["max"] / 2**20)}
    return result


# --------------------------------------------------------------------------- accuracy
def _read_jsonl(folder: Path):
    for path in sorted(folder.glob("**/*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)


def accuracy(corpus: Path, removed_by_dedup: dict[str, str], removed_otherwise: set[str]) -> dict:
    """Pair-based recall per planted level and precision of what dedup removed.

    A planted pair (copy, original) counts when both passed the other filters, and is found when
    dedup removed either of the two (which copy survives depends on reading order across tasks).
    A dedup removal is correct when the document belongs to a planted pair.
    """
    planted = [d for d in _read_jsonl(corpus) if d["kind"] != "original"]
    recall: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for doc in planted:
        copy, original = str(doc["bench_id"]), str(doc["of"])
        if copy in removed_otherwise or original in removed_otherwise:
            continue
        level = "exact" if doc["kind"] == "exact" else f"{doc['level']:.1f}"
        recall[level][1] += 1
        recall[level][0] += copy in removed_by_dedup or original in removed_by_dedup
    in_pairs = {str(d["bench_id"]) for d in planted} | {str(d["of"]) for d in planted}
    near_pairs = {str(d["bench_id"]) for d in planted if d["kind"] == "near" and d["level"] >= 0.7} | \
        {str(d["of"]) for d in planted if d["kind"] == "near" and d["level"] >= 0.7}
    exact_pairs = {str(d["bench_id"]) for d in planted if d["kind"] == "exact"} | \
        {str(d["of"]) for d in planted if d["kind"] == "exact"}
    correct = sum(1 for i in removed_by_dedup if i in in_pairs)
    strict = sum(1 for i in removed_by_dedup if i in near_pairs or i in exact_pairs)
    return {
        "recall_by_planted_jaccard": {k: round(v[0] / v[1], 4) for k, v in sorted(recall.items()) if v[1]},
        "pairs_by_planted_jaccard": {k: v[1] for k, v in sorted(recall.items())},
        "dedup_removed": len(removed_by_dedup),
        "dedup_precision": round(correct / max(1, len(removed_by_dedup)), 5),
        "dedup_precision_pairs_at_least_0.7": round(strict / max(1, len(removed_by_dedup)), 5),
        "removed_unplanted_examples": [i for i in removed_by_dedup if i not in in_pairs][:5],
    }


def ours_removals(folder: Path) -> tuple[dict[str, str], set[str], Counter]:
    dedup, other, rules = {}, set(), Counter()
    for doc in _read_jsonl(folder / "removed"):
        meta = doc["metadata"]
        rules[meta["filter_reason"]] += 1
        if meta["filter_reason"] in ("exact_duplicate", "near_duplicate"):
            dedup[str(meta["bench_id"])] = meta["filter_reason"]
        else:
            other.add(str(meta["bench_id"]))
    return dedup, other, rules


def stock_removals(folder: Path) -> dict[str, str]:
    return {str(d["metadata"]["bench_id"]): "minhash" for d in _read_jsonl(folder / "removed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--system", choices=SYSTEMS)
    parser.add_argument("--only", choices=SYSTEMS, nargs="+", help="the systems to run (default: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.system:  # child process: run one system, print its result as the last line
        if args.system in ("rensa", "datasketch"):
            result = run_peer(args.system, args.corpus, args.work)
        elif args.system.startswith("ours"):
            result = run_ours(args.corpus, args.work, args.tasks, OURS_INDEX_TASKS[args.system])
        else:
            result = run_stock(args.corpus, args.work, args.tasks)
        print(json.dumps(result))
        return
    corpus_bytes = sum(p.stat().st_size for p in args.corpus.glob("*.jsonl"))
    results = {"corpus_mb": round(corpus_bytes / 1e6, 1), "tasks": args.tasks, "cpu_count": os.cpu_count(),
               "load_average_at_start": os.getloadavg(), "ours_overrides": OURS_OVERRIDES, "systems": {}}
    for system in SYSTEMS:
        if args.only and system not in args.only:
            continue
        print(f"running {system} ...", file=sys.stderr, flush=True)
        res = measure(system, args.corpus, args.work / system, args.tasks)
        res["mb_per_s"] = round(corpus_bytes / 1e6 / res["wall_s"], 3)
        workers = 1 if system in ("rensa", "datasketch") else min(args.tasks, os.cpu_count() or 1)
        res["mb_per_s_per_worker"] = round(res["mb_per_s"] / workers, 3)
        if system.startswith("ours"):
            dedup, other, rules = ours_removals(Path(res["folder"]))
            res["removed_by_rule"] = dict(rules)
        elif system == "stock":
            dedup, other = stock_removals(Path(res["folder"])), set()
        else:
            dedup, other = peer_removals(Path(res["folder"])), set()
        res["accuracy"] = accuracy(args.corpus, dedup, other)
        results["systems"][system] = res
        print(json.dumps(res, indent=1), file=sys.stderr, flush=True)
    systems = results["systems"]
    if "ours" in systems:
        results["ours_speedup"] = {name: round(r["wall_s"] / systems["ours"]["wall_s"], 2)
                                   for name, r in systems.items() if name != "ours"}
    results["load_average_at_end"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
