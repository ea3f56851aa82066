"""Sweeps end in a comparison: each job records its result, a Hydra callback tabulates and plots them.

`bertforge <stage> -m knob=a,b,c` writes, in the sweep folder, `comparison.md`, `comparison.csv` and
`comparison.png`: one row per job, the swept knobs as columns, then the headline metrics of every
stage folder the job produced. The markdown table keeps the metrics that differ between jobs and
names the ones that do not once, above it (the CSV keeps every column, for scripts). The plot draws
a numeric knob as lines over its value (the vocabulary size the tokenizer reached, not the size
asked for) and a categorical knob (a filter preset, a tokenizer) as bars in sweep order.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bertforge.common.stage_folder import read_manifest, write_json_atomic
from corpora.vocab.sweep import SIZE_KNOB, recommend_vocab_size, recommendation_markdown

log = logging.getLogger("bertforge.sweep")

RESULT_FILE = "bertforge_result.json"
# What a user came to learn from a sweep, per stage (dotted paths into manifest["counts"]). Keyed by stage
# name: a new stage's headline is one more entry.
HEADLINE = {
    "corpus": ["documents_kept", "documents_removed", "lines_cut", "kept_share", "kept_words", "skipped_records"],
    "vocab": ["fertility", "gold.fertility", "continued_word_share", "unk_rate", "chars_per_token",
              "vocab_used_share", "vocab_size", "reference.heldout.fertility", "reference.gold.fertility"],
    "shards": ["train.rows", "train.tokens"],
    "pretrain": ["last_loss", "tokens_trained"],
    "evaluate": ["trained.loss", "trained.accuracy"],
    # per task (*): the model's main score, then its untrained twin's (counts: task -> model -> metric)
    "downstream": ["*.model.*", "*.random_init.*"],
}


def headline_metrics(folders: dict[str, str]) -> dict[str, float]:
    """`stage/metric` -> value for every finished stage folder given."""
    metrics = {}
    for stage, folder in folders.items():
        counts = read_manifest(Path(folder)).get("counts", {})
        for dotted in HEADLINE.get(stage, []):
            for name, value in _lookup(counts, dotted.split("."), []):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics[f"{stage}/{name}"] = value
    return metrics


def _lookup(node: Any, parts: list[str], path: list[str]) -> list[tuple[str, Any]]:
    """(dotted name, value) of every value at `parts` below `node`; a `*` part matches every key."""
    if not parts:
        return [(".".join(path), node)]
    if not isinstance(node, dict):
        return []
    keys = list(node) if parts[0] == "*" else [parts[0]] if parts[0] in node else []
    return [found for key in keys for found in _lookup(node[key], parts[1:], [*path, key])]


def record_job_result(output_dir: str, stage: str, overrides: list[str], folders: dict[str, str]) -> None:
    """Called by each Hydra job: what it ran, with which overrides, and where the results are."""
    write_json_atomic(Path(output_dir) / RESULT_FILE, {
        "stage": stage, "overrides": overrides, "folders": folders, "metrics": headline_metrics(folders)})


def _parse_overrides(overrides: list[str]) -> dict[str, str]:
    return dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)


def write_comparison(sweep_dir: Path, fertility_tolerance_percent: float = 2.0) -> Path | None:
    """Table (markdown + CSV) and plot of every job under `sweep_dir`; returns the markdown path.
    A sweep over vocabulary sizes also gets the recommended size (see corpora.vocab.sweep)."""
    results = [json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob(f"*/{RESULT_FILE}"),
                                                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)]
    if not results:
        return None
    knobs_per_job = [_parse_overrides(r["overrides"]) for r in results]
    swept = [k for k in dict.fromkeys(k for job in knobs_per_job for k in job)
             if len({job.get(k) for job in knobs_per_job}) > 1]
    metric_names = list(dict.fromkeys(m for r in results for m in r["metrics"]))
    rows = [[job.get(k, "") for k in swept] + [r["metrics"].get(m, "") for m in metric_names]
            for job, r in zip(knobs_per_job, results)]
    header = swept + metric_names
    with open(Path(sweep_dir) / "comparison.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    md = table_markdown(header, rows, first_metric=len(swept))
    recommended = recommend_vocab_size(knobs_per_job, [r["metrics"] for r in results], fertility_tolerance_percent)
    if recommended:
        md += ["", recommendation_markdown(recommended)]
        write_json_atomic(Path(sweep_dir) / "recommendation.json", recommended)
    path = Path(sweep_dir) / "comparison.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    if swept and metric_names:
        _plot(Path(sweep_dir) / "comparison.png", swept, knobs_per_job, results, metric_names)
    return path


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table_markdown(header: list[str], rows: list[list], first_metric: int) -> list[str]:
    """Markdown lines of the table: metric columns (from `first_metric` on) that are the same in every
    job are named once above it instead of repeated in every row; the swept knobs always stay."""
    constant = [i for i in range(first_metric, len(header))
                if len(rows) > 1 and len({json.dumps(row[i]) for row in rows}) == 1]
    keep = [i for i in range(len(header)) if i not in constant]
    md = [f"Same in every job: {', '.join(f'{header[i]} {_fmt(rows[0][i])}' for i in constant)}", ""] if constant else []
    md += ["| " + " | ".join(header[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    return md + ["| " + " | ".join(_fmt(row[i]) for i in keep) + " |" for row in rows]


def _as_number(value: str):
    try:
        return float(value)
    except ValueError:
        return value


def x_axis(swept: list[str], knobs_per_job: list[dict], results: list[dict]) -> tuple[str, str, list, bool]:
    """(knob, axis label, x of each job, numeric) of the plot: the first numeric knob, else the first knob
    as a category. A swept vocabulary size is drawn at the size each tokenizer reached (the trainers stop
    short of the size asked for when the corpus has no more pieces to learn)."""
    numeric = [k for k in swept if all(isinstance(_as_number(j.get(k, "")), float) for j in knobs_per_job)]
    if not numeric:
        return swept[0], swept[0], [job.get(swept[0], "") for job in knobs_per_job], False
    key = numeric[0]
    if key == SIZE_KNOB and all("vocab/vocab_size" in r["metrics"] for r in results):
        return key, "vocabulary size (reached)", [float(r["metrics"]["vocab/vocab_size"]) for r in results], True
    return key, key, [_as_number(job[key]) for job in knobs_per_job], True


def _panel_rank(metric: str) -> tuple[int, int]:
    """Plot order: the model's downstream scores first (what a sweep is judged by), then each stage's
    headline metrics in HEADLINE order, the untrained twins' downstream scores last."""
    stage, name = metric.split("/", 1)
    patterns = HEADLINE.get(stage, [])
    within = next((i for i, pattern in enumerate(patterns) if fnmatch.fnmatchcase(name, pattern)), len(patterns))
    if stage == "downstream":
        return (0 if within == 0 else 2, 0)
    return (1, within)


def _plot(path: Path, swept: list[str], knobs_per_job: list[dict], results: list[dict], metrics: list[str]):
    """One panel per metric that differs between jobs: lines over a numeric knob, bars in sweep order for a
    categorical one; one line (or bar colour) per value of the other knobs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, x_label, xs, numeric = x_axis(swept, knobs_per_job, results)
    others = [k for k in swept if k != x_key]
    # Metrics that differ between jobs, most telling first (HEADLINE order): constant ones teach nothing.
    varying = [m for m in metrics if len({json.dumps(r["metrics"].get(m)) for r in results}) > 1]
    shown = sorted(varying or metrics, key=_panel_rank)[:6]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.5), squeeze=False)
    groups: dict[str, list[int]] = {}
    for index, job in enumerate(knobs_per_job):
        groups.setdefault(", ".join(f"{k}={job.get(k)}" for k in others) or "all", []).append(index)
    categories = list(dict.fromkeys(xs))  # sweep order, never alphabetical
    width = 0.8 / len(groups)
    for ax, metric in zip(axes[0], shown):
        for offset, (label, indices) in enumerate(groups.items()):
            points = [(xs[i], results[i]["metrics"][metric]) for i in indices if metric in results[i]["metrics"]]
            if numeric:
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
            else:
                ax.bar([categories.index(x) + (offset - (len(groups) - 1) / 2) * width for x, _ in points],
                       [p[1] for p in points], width=width, label=label)
        if not numeric:
            ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(x_label)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3, axis="y" if not numeric else "both")
    if len(groups) > 1:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class SweepComparison(Callback):
    """Hydra callback (configured in conf/base.yaml) that writes the comparison after a multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        tolerance = config.tokenizer.recommend_within_percent if "tokenizer" in config else 2.0
        path = write_comparison(Path(config.hydra.sweep.dir), tolerance)
        if path:
            print(f"\nsweep comparison: {path}\n{path.read_text()}")
