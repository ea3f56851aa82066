"""Sentence pairs (NSP) and static masks built by the shards stage's tasks: peak memory per process and
time as the corpus is split into more document files.

    python bench/shards/bench_pairs.py --corpus /tmp/bench-corpus-20 --work /tmp/bench-pairs \\
        --files 1 2 8 --out bench/shards/results_pairs_20mb.json

For each count F in `--files`, the corpus (JSONL, e.g. from bench/corpus/make_corpus.py) goes through
the corpus stage (`filters=none`, `corpus.tasks=F`: F document files) and one vocab stage (WordPiece,
16 k, trained once on the first corpus and copied for the others, so every run tokenises alike). Then
`bertforge shards` with `training.objective=mlm_nsp masking.static=true masking.dupe_factor=10`, rows of
128, runs in a fresh process per repeat (`shards.tasks=0`: one tokenise task per file; the mask step
takes as many tasks, at most one per chunk of 4096 rows). datatrove's local executor runs min(tasks,
cores) tasks at a time: with one task, in the stage's own process; with more, in forked workers.

Reported per run: the stage's seconds, and the peak resident set of the stage's process and of the
largest of its workers (`ru_maxrss` of the process and of its waited-for children). A forked worker
starts with its parent's pages, so the worker figure includes the parent's footprint at the fork.
Every run must give the same pair count and label share for a given F.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench_shards import corpus_overrides  # beside this script: the same corpus and vocabulary set-up
from corpora.documents import document_files

REPO = Path(__file__).resolve().parents[2]

SHARDS = ["training.objective=mlm_nsp", "masking.static=true", "masking.dupe_factor=10", "shards.seq_len=128"]


# Run in a fresh interpreter per build, so the peak resident sets are those of this build alone.
CHILD = """
import json, resource, sys, time
from hydra import compose, initialize_config_module
from bertforge.experiment import load_config
from bertforge.stages import run_stages
with initialize_config_module(config_module="bertforge_conf", version_base=None):
    cfg = load_config(compose(config_name="shards", overrides=sys.argv[2:]))
started = time.perf_counter()
folder = run_stages(cfg, sys.argv[1])[sys.argv[1]]
seconds = time.perf_counter() - started
kib = lambda who: resource.getrusage(who).ru_maxrss
print(json.dumps({"folder": str(folder), "seconds": seconds,
                  "peak_mib_stage_process": kib(resource.RUSAGE_SELF) / 1024,
                  "peak_mib_largest_worker": kib(resource.RUSAGE_CHILDREN) / 1024}))
"""


def build(stage: str, args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    # from the repository: `python -c` puts the working directory first on sys.path, before PYTHONPATH
    done = subprocess.run([sys.executable, "-c", CHILD, stage, *args], env=env, cwd=REPO, capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--files", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    vocab_folder = None
    runs = {}
    for files in args.files:
        work = args.work / f"files{files}"
        base = corpus_overrides(work, args.corpus, files)
        # corpus.tasks=F writes at most F files: no more than the source has (each task reads whole files)
        written = len(document_files(Path(build("corpus", base)["folder"])))
        if vocab_folder is None:
            vocab_folder = Path(build("vocab", base)["folder"])
        else:
            # the same tokenizer for every F: the vocab folder is named by the config and the corpus hash,
            # so the one trained first is copied under the name this corpus would give it
            target = Path(build("vocab", base)["folder"])
            shutil.copy(vocab_folder / "tokenizer.json", target / "tokenizer.json")
        runs[files] = []
        for _ in range(args.repeats):
            for old in (work / "shards").glob("shards-*"):
                shutil.rmtree(old)  # built afresh each time
            result = build("shards", [*base, *SHARDS])
            manifest = json.loads((Path(result["folder"]) / "manifest.json").read_text())
            pairs = manifest["format"]["pairs"]
            result |= {"document_files": written, "pairs": pairs["by_seq_len"]["128"]["examples"],
                       "label_share": pairs["by_seq_len"]["128"]["label_share"],
                       "training_documents": pairs["documents"]["documents"],
                       "static_masks_per_row": manifest["format"]["static_masks"]["per_row"]["128"]}
            del result["folder"]
            runs[files].append(result)
            print(files, {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, flush=True)
        assert len({(r["pairs"], r["label_share"]) for r in runs[files]}) == 1, "a rebuild gave other pairs"
    summary = {
        files: {"seconds_median": round(statistics.median(r["seconds"] for r in rs), 2),
                "peak_mib_stage_process": round(max(r["peak_mib_stage_process"] for r in rs)),
                "peak_mib_largest_worker": round(max(r["peak_mib_largest_worker"] for r in rs)),
                "document_files": rs[0]["document_files"], "pairs": rs[0]["pairs"],
                "label_share": round(rs[0]["label_share"], 4),
                "training_documents": rs[0]["training_documents"]}
        for files, rs in runs.items()}
    result = {"corpus": str(args.corpus), "cpu_count": os.cpu_count(), "shards_overrides": SHARDS,
              "runs": runs, "summary": summary, "load_average_at_end": os.getloadavg()}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
