"""Build the benchmark corpus: real treebank sentences recombined into new documents, with
near-duplicates planted at known Jaccard similarity and exact copies, as JSONL shards.

Each document draws 6-14 sentences of one language (Irish or Estonian, from ../shared/data), so
unrelated documents stay unrelated (they share a sentence now and then, as real text does).
Every line carries `bench_id` and `kind`: `original`, `near` (with `jaccard`, the true word
5-gram Jaccard with `of`) or `exact` (a copy of `of`, sometimes re-cased or re-spaced).

    python bench/corpus/make_corpus.py --out /tmp/bench-corpus --mb 200
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

WORD = re.compile(r"\w+")
JACCARD_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9)


def treebank_sentences(data_dir: Path) -> dict[str, list[str]]:
    """language -> the `# text =` sentences of its treebank files."""
    found = {}
    for lang, folder in (("ga", "UD_Irish-IDT"), ("et", "UD_Estonian-EDT")):
        found[lang] = [line[len("# text ="):].strip()
                       for path in sorted((data_dir / "ud" / folder).glob("*.conllu"))
                       for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# text =")]
    return found


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Word 5-grams, casefolded: the ground truth, computed independently of corpora.corpus.whole_corpus."""
    words = WORD.findall(text.casefold())
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def near_copy(text: str, target: float, rng: random.Random) -> tuple[str, float]:
    """Edit random words of `text` until its Jaccard with the original is as close to `target` as
    single-word edits allow (the result lies within one edit above the target)."""
    words = text.split()
    edited = list(words)
    best = (text, 1.0)
    for _ in range(len(words) * 3):
        i = rng.randrange(len(edited))
        edited[i] = f"{edited[i][:2]}{rng.randrange(10**6)}"
        j = jaccard(text, " ".join(edited))
        if j < target:
            return best
        best = (" ".join(edited), j)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mb", type=float, default=200.0)
    parser.add_argument("--near-per-level", type=int, default=400)
    parser.add_argument("--exact", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sentences = treebank_sentences(args.data)
    langs = list(sentences)
    target_bytes = int(args.mb * 1e6)

    docs, size = [], 0
    while size < target_bytes:
        lang = rng.choice(langs)
        text = " ".join(rng.sample(sentences[lang], rng.randint(6, 14)))
        docs.append({"text": text, "kind": "original", "language": lang})
        size += len(text.encode("utf-8")) + 60
    # plants go after their original in reading order, so the original is the copy a dedup keeps
    plants = []
    originals = rng.sample(range(len(docs) // 2), len(JACCARD_LEVELS) * args.near_per_level + args.exact)
    for k, level in enumerate(JACCARD_LEVELS):
        for of in originals[k * args.near_per_level:(k + 1) * args.near_per_level]:
            text, true_j = near_copy(docs[of]["text"], level, rng)
            plants.append((of, {"text": text, "kind": "near", "level": level, "jaccard": round(true_j, 4)}))
    for of in originals[len(JACCARD_LEVELS) * args.near_per_level:]:
        text = docs[of]["text"]
        text = rng.choice([text, text.upper(), "  " + text.replace(" ", "  ") + "\n"])
        plants.append((of, {"text": text, "kind": "exact"}))
    keyed = []
    for index, doc in enumerate(docs):
        doc["bench_id"] = index
        keyed.append((float(index), doc))
    for number, (of, plant) in enumerate(plants):
        plant["of"], plant["bench_id"] = of, f"p{number}"
        keyed.append((rng.uniform(of + 0.5, len(docs)), plant))  # somewhere after its original
    keyed.sort(key=lambda item: item[0])
    docs = [doc for _, doc in keyed]

    args.out.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(docs) // args.shards)
    for shard in range(args.shards):
        with open(args.out / f"part-{shard:03d}.jsonl", "w", encoding="utf-8") as handle:
            for doc in docs[shard * per_shard:(shard + 1) * per_shard]:
                handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in args.out.glob("*.jsonl"))
    print(json.dumps({"documents": len(docs), "bytes": total, "near_planted": len(JACCARD_LEVELS) * args.near_per_level,
                      "exact_planted": args.exact, "out": str(args.out)}))


if __name__ == "__main__":
    main()
