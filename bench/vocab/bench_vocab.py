"""Vocabulary training benchmark: time and peak memory of 32k WordPiece / BPE / Unigram, tokenizers against
sentencepiece in one run, and tokenisation throughput (tokens/s on one core) of each result.

    python bench/vocab/bench_vocab.py --data /work/shared/data --megabytes 100 --out bench/vocab

The text is built under /tmp (never committed) by recombining the UD treebank sentences: shuffled
sentences grouped ten to a line, repeated until the size is reached. Every training runs in its own
process (peak memory is that process's max RSS), reading the file as a stream through the same code
the vocab stage uses (corpora.vocab.build, corpora.vocab.sentencepiece_train).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

RUNS = [  # (name, trainer, model, byte_level)
    ("tokenizers/wordpiece", "tokenizers", "wordpiece", False),
    ("tokenizers/bpe", "tokenizers", "bpe", False),
    ("tokenizers/bpe_bytelevel", "tokenizers", "bpe", True),
    ("tokenizers/unigram", "tokenizers", "unigram", False),
    ("sentencepiece/bpe", "sentencepiece", "bpe", False),
    ("sentencepiece/unigram", "sentencepiece", "unigram", False),
]


def build_text(data_dir: Path, megabytes: float, path: Path, seed: int = 0) -> Path:
    """Recombined UD sentences, `megabytes` MB of UTF-8, ten random sentences per line."""
    if path.exists() and path.stat().st_size >= megabytes * 1e6 * 0.99:
        return path
    sentences = [line[len("# text ="):].strip() for conllu in sorted(Path(data_dir, "ud").rglob("*.conllu"))
                 for line in conllu.read_text(encoding="utf-8").splitlines() if line.startswith("# text =")]
    rng, written = random.Random(seed), 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        while written < megabytes * 1e6:
            rng.shuffle(sentences)
            for start in range(0, len(sentences) - 10, 10):
                line = " ".join(sentences[start:start + 10]) + "\n"
                handle.write(line)
                written += len(line.encode("utf-8"))
                if written >= megabytes * 1e6:
                    break
    return path


def _lines(path: Path):
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip("\n")


def train_one(name: str, text: Path, out: Path, vocab_size: int, threads: int) -> None:
    """Child process: train one vocabulary from the streamed file and save tokenizer.json."""
    from corpora.config import TokenizerConfig
    from corpora.vocab.build import build_untrained, finish

    _, trainer_name, model, byte_level = next(r for r in RUNS if r[0] == name)
    cfg = TokenizerConfig(model=model, trainer=trainer_name, byte_level=byte_level, vocab_size=vocab_size,
                          style="roberta" if byte_level else "bert", normalizer="bert" if model == "wordpiece" else "nfc",
                          sentencepiece_threads=threads)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if trainer_name == "sentencepiece":
        from corpora.vocab.sentencepiece_train import train_sentencepiece

        tokenizer = train_sentencepiece(_lines(text), cfg, out)
    else:
        tokenizer, trainer = build_untrained(cfg)
        tokenizer.train_from_iterator(_lines(text), trainer=trainer)
    finish(tokenizer, cfg)
    seconds = time.perf_counter() - started
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "train.json").write_text(json.dumps({"train_seconds": seconds, "vocab_size": tokenizer.get_vocab_size()}))


def throughput(tokenizer_file: Path, text: Path, megabytes: float) -> dict:
    """Child process with RAYON_NUM_THREADS=1: tokens/s and MB/s of encode_batch on one core."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    lines, size = [], 0
    for line in _lines(text):
        lines.append(line)
        size += len(line.encode("utf-8"))
        if size >= megabytes * 1e6:
            break
    started = time.perf_counter()
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(lines, add_special_tokens=False))
    seconds = time.perf_counter() - started
    return {"tokens_per_s_per_core": tokens / seconds, "mb_per_s_per_core": size / 1e6 / seconds,
            "tokens": tokens, "chars_per_token": sum(map(len, lines)) / tokens}


def run_child(args: list[str], env: dict | None = None) -> tuple[float, int]:
    """Run this script as a child; returns (wall seconds, peak RSS in MB) of that process alone."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"child {args} failed with status {status}")
    return time.perf_counter() - started, usage.ru_maxrss // 1024  # ru_maxrss is in KB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("BERTFORGE_DATA", "../shared/data"))
    parser.add_argument("--megabytes", type=float, default=100.0)
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--throughput-megabytes", type=float, default=5.0)
    parser.add_argument("--only", nargs="*", help="run names to run (default: all)")
    parser.add_argument("--work", default="/tmp/bertforge-bench-vocab")
    parser.add_argument("--out", default=str(Path(__file__).parent))
    parser.add_argument("--child", choices=["train", "throughput"], help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    text = work / f"ud_recombined_{args.megabytes:g}MB.txt"
    if args.child == "train":
        return train_one(args.name, text, work / args.name.replace("/", "_"), args.vocab_size, args.threads)
    if args.child == "throughput":
        result = throughput(work / args.name.replace("/", "_") / "tokenizer.json", text, args.throughput_megabytes)
        return (work / args.name.replace("/", "_") / "throughput.json").write_text(json.dumps(result))

    build_text(Path(args.data), args.megabytes, text)
    results = []
    for name, *_ in RUNS:
        if args.only and name not in args.only:
            continue
        child = ["--megabytes", str(args.megabytes), "--vocab-size", str(args.vocab_size), "--threads",
                 str(args.threads), "--work", str(work), "--name", name,
                 "--throughput-megabytes", str(args.throughput_megabytes)]
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        wall, peak_mb = run_child(["--child", "train", *child], env)
        trained = json.loads((work / name.replace("/", "_") / "train.json").read_text())
        run_child(["--child", "throughput", *child], dict(os.environ, RAYON_NUM_THREADS="1"))
        speed = json.loads((work / name.replace("/", "_") / "throughput.json").read_text())
        results.append({"run": name, "train_seconds": round(trained["train_seconds"], 1),
                        "process_seconds": round(wall, 1), "peak_rss_mb": peak_mb,
                        "vocab_size": trained["vocab_size"],
                        "tokens_per_s_per_core": round(speed["tokens_per_s_per_core"]),
                        "mb_per_s_per_core": round(speed["mb_per_s_per_core"], 2),
                        "chars_per_token": round(speed["chars_per_token"], 3)})
        print(json.dumps(results[-1]), flush=True)
    report = {"text_megabytes": args.megabytes, "text": "UD Irish-IDT + Estonian-EDT sentences, shuffled and "
              "recombined ten per line (few distinct words compared with a real corpus of this size)",
              "vocab_size": args.vocab_size, "train_threads": args.threads,
              "throughput_megabytes": args.throughput_megabytes,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with "
                         "other processes while measured", "python": platform.python_version(),
              "versions": _versions(), "results": results}
    out = Path(args.out) / f"results_{args.megabytes:g}MB.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def _versions() -> dict:
    from importlib import metadata

    return {d: metadata.version(d) for d in ("tokenizers", "sentencepiece")}


if __name__ == "__main__":
    main()
