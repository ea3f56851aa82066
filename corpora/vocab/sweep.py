"""The recommendation that ends a vocabulary sweep: the smallest size within a tolerance of the best fertility.

A bigger vocabulary always lowers fertility a little, but costs embedding parameters and rare,
poorly trained tokens; past the knee the gain is small. gaBERT settled on 30k this way.
"""

from __future__ import annotations

SIZE_KNOB = "tokenizer.vocab_size"
FERTILITY = "vocab/fertility"


def recommend_vocab_size(knobs_per_job: list[dict[str, str]], metrics_per_job: list[dict[str, float]],
                         tolerance_percent: float) -> dict | None:
    """The recommended job of a sweep, or None when the sweep did not vary the vocabulary size.

    Each job's size is the size it reached (trainers stop short of `tokenizer.vocab_size` when the
    corpus has no more pieces to learn), else its override; among the jobs whose held-out fertility
    is at most `tolerance_percent` % above the best one, the smallest size wins (ties: the lower
    fertility). The other swept knobs (e.g. the algorithm) label each job.
    """
    varying = [k for k in dict.fromkeys(k for knobs in knobs_per_job for k in knobs)
               if k != SIZE_KNOB and len({knobs.get(k) for knobs in knobs_per_job}) > 1]
    jobs = []
    for knobs, metrics in zip(knobs_per_job, metrics_per_job):
        if FERTILITY not in metrics:
            continue
        requested = knobs.get(SIZE_KNOB)
        size = metrics.get("vocab/vocab_size", float(requested) if requested else None)
        if size is None:  # neither reached nor asked for: nothing to rank it by
            continue
        label = ", ".join(f"{k}={knobs.get(k)}" for k in varying + [SIZE_KNOB] if k in knobs) or "all"
        jobs.append({"label": label, "vocab_size": int(size), "fertility": metrics[FERTILITY]})
    if len({j["vocab_size"] for j in jobs}) < 2:
        return None
    best = min(jobs, key=lambda j: j["fertility"])
    limit = best["fertility"] * (1 + tolerance_percent / 100)
    chosen = min((j for j in jobs if j["fertility"] <= limit), key=lambda j: (j["vocab_size"], j["fertility"]))
    return {"recommended": chosen, "best": best, "tolerance_percent": tolerance_percent}


def recommendation_markdown(found: dict) -> str:
    """One sentence a user can act on."""
    chosen, best = found["recommended"], found["best"]
    head = f"**Recommended:** {chosen['label']} ({chosen['vocab_size']} tokens): held-out fertility {chosen['fertility']:.4g}"
    if chosen is best:  # nothing smaller came within the tolerance
        return (f"{head}, the best of the sweep; no smaller vocabulary came within {found['tolerance_percent']:g}% "
                "of it (set the tolerance with tokenizer.recommend_within_percent).")
    return (f"{head}, within {found['tolerance_percent']:g}% of the best ({best['fertility']:.4g} with "
            f"{best['label']}, {best['vocab_size']} tokens); set the tolerance with tokenizer.recommend_within_percent.")
