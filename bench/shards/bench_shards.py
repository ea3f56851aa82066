"""Shards-stage throughput against the tokenizers library's own batch encoder, same documents, same threads.

    python bench/shards/bench_shards.py --corpus /tmp/bench-corpus-20 --work /tmp/bench-shards \\
        --out bench/shards/results_20mb.json

The corpus (JSONL, e.g. from bench/corpus/make_corpus.py) goes through bertforge's corpus stage
(`filters=none`) and vocab stage (WordPiece, 16 k) once; then, alternating, `--repeats` times each:

- **tokenizer**: every document's text already in memory (read beforehand, untimed), given to
  `Tokenizer.encode_batch(texts, add_special_tokens=False)` in batches of `shards.encode_batch_docs`
  (1000), as the stage batches them: the library's Rust encoder on all cores, nothing else.
- **tokenizer_fast**: the same with `encode_batch_fast` (no character offsets), which the stage uses.
- **stage**: `bertforge shards` from the corpus folder (reading and decompressing the documents,
  splitting held-out documents, packing rows of 128 tokens, writing them, the manifest), timed
  around `run_stage`, as one tokenise task (`shards.tasks=1`, run in this process).
- **stage_tasks**: the same stage with one tokenise task per corpus file (`shards.tasks=0`; the corpus
  is built with `corpus.tasks=--corpus-files`), run by datatrove's local executor, min(tasks, cores)
  processes at a time.

All use the same cores: the Rust encoder's pool (RAYON_NUM_THREADS unset: all cores) in one process,
or one process per core in stage_tasks (processes forked after this one used the encoder encode with
one thread each). The ratio stage / tokenizer_fast of documents per second is the figure to read
(target >= 0.9); stage / tokenizer compares with the offsets-computing `encode_batch`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def corpus_overrides(work: Path, corpus: Path, files: int) -> list[str]:
    """The benchmark's corpus and vocabulary: the JSONL corpus unfiltered into `files` document files, 16 k WordPiece."""
    return ["source=jsonl", f"source.inputs.0.path={corpus}", "filters=none", f"paths.work_dir={work}",
            "paths.data_dir=/unused", "tokenizer.vocab_size=16000", f"corpus.tasks={files}"]


def composed(work: Path, corpus: Path, files: int):
    from hydra import compose, initialize_config_module

    from bertforge.experiment import load_config

    with initialize_config_module(config_module="bertforge_conf", version_base=None):
        return load_config(compose(config_name="shards", overrides=corpus_overrides(work, corpus, files)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus-files", type=int, default=2, help="document files the corpus stage writes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import dataclasses

    from tokenizers import Tokenizer

    from bertforge.stages import run_stages
    from corpora.documents import document_files, iter_documents

    cfg = composed(args.work, args.corpus, args.corpus_files)
    folders = run_stages(cfg, "vocab")  # corpus and vocab, once (reused when already built)
    corpus_dir, vocab_dir = folders["corpus"], folders["vocab"]
    texts = [d["text"] for d in iter_documents(corpus_dir)]
    text_mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    tokenizer = Tokenizer.from_file(str(vocab_dir / "tokenizer.json"))
    batch = cfg.shards.encode_batch_docs
    seconds = {"tokenizer": [], "tokenizer_fast": [], "stage": [], "stage_tasks": []}
    tokens = 0

    def encoder_alone(encode):
        count = 0
        for i in range(0, len(texts), batch):
            count += sum(len(e.ids) for e in encode(texts[i:i + batch], add_special_tokens=False))
        return count

    def stage(tasks: int):
        for old in (args.work / "shards").glob("shards-*"):
            shutil.rmtree(old)  # built afresh each time
        run = dataclasses.replace(cfg, shards=dataclasses.replace(cfg.shards, tasks=tasks))
        return run_stages(run, "shards")["shards"]

    for _ in range(args.repeats):
        for name in seconds:
            started = time.perf_counter()
            if name == "tokenizer":
                tokens = encoder_alone(tokenizer.encode_batch)
            elif name == "tokenizer_fast":
                encoder_alone(tokenizer.encode_batch_fast)
            else:
                shards = stage(tasks=1 if name == "stage" else 0)
            seconds[name].append(time.perf_counter() - started)
        print({k: round(v[-1], 2) for k, v in seconds.items()}, flush=True)
    manifest = json.loads((shards / "manifest.json").read_text())
    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "documents": len(texts), "text_mb": round(text_mb, 1), "tokens": tokens,
        "encode_batch_docs": batch, "cpu_count": os.cpu_count(),
        "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS", "unset (all cores)"),
        "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "docs_per_s": {k: round(len(texts) / v, 1) for k, v in median.items()},
        "mb_per_s": {k: round(text_mb / v, 2) for k, v in median.items()},
        "ratio_stage_over_tokenizer": round(median["tokenizer"] / median["stage"], 3),
        "ratio_stage_over_tokenizer_fast": round(median["tokenizer_fast"] / median["stage"], 3),
        "ratio_stage_tasks_over_tokenizer_fast": round(median["tokenizer_fast"] / median["stage_tasks"], 3),
        "corpus_files": len(document_files(corpus_dir)),
        "stage_rows_train": manifest["counts"]["train"]["rows"], "load_average_at_end": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
