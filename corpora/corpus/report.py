"""The corpus report: what was kept, what each rule removed (with examples), duplicate clusters,
skipped input records and where the time went. Built from the written files (the removed
documents, cut lines and skipped records themselves; for the kept documents, the totals the task
that wrote them recorded alongside), so it cannot disagree with them."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import orjson

EXAMPLE_CHARS = 300
MAX_LISTED_SKIPS = 100
MEMBER_TEXTS = 3  # removed copies of a cluster quoted with their text


def _scan(folder: Path):
    for path in sorted(folder.glob("**/*.jsonl.gz")):
        with gzip.open(path, "rb") as handle:
            for line in handle:
                yield orjson.loads(line)


def _removed(out: Path, examples_per_rule: int, quoted_members: set[str]):
    """Per rule: documents and characters removed, and examples; and the text of `quoted_members`."""
    rules: dict = defaultdict(lambda: {"documents": 0, "characters": 0, "step": "", "examples": []})
    member_text: dict[str, str] = {}
    for step_dir in sorted(p for p in (out / "removed").glob("*") if p.is_dir()):
        for doc in _scan(step_dir):
            meta = doc.get("metadata", {})
            rule = rules[meta.get("filter_reason", "unknown")]
            rule["documents"] += 1
            rule["characters"] += len(doc["text"])
            rule["step"] = step_dir.name
            if "duplicate_dropped_by" in meta:  # its kept copy fell to a cap or weight: the text is in no output
                rule["kept_copy_dropped"] = rule.get("kept_copy_dropped", 0) + 1
            if len(rule["examples"]) < examples_per_rule:
                example = {"id": doc["id"], "text": doc["text"][:EXAMPLE_CHARS]}
                if "language" in meta:
                    example["language"] = [meta["language"], meta.get("language_score")]
                rule["examples"].append(example)
            if doc["id"] in quoted_members:
                member_text[doc["id"]] = doc["text"][:EXAMPLE_CHARS]
    return dict(rules), member_text


def _kept(out: Path) -> tuple[dict, Counter, Counter, dict[str, str]]:
    """Totals over the kept documents, from the summary each apply task wrote next to its output."""
    kept = {"documents": 0, "words": 0, "characters": 0, "copies": 0}
    sources: Counter = Counter()
    languages: Counter = Counter()
    quotes: dict[str, str] = {}
    for path in sorted((out / "kept").glob("[0-9]*.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        for key in kept:
            kept[key] += summary[key]
        sources.update(summary["sources"])
        languages.update(summary["languages"])
        quotes |= summary["quotes"]
    return kept, sources, languages, quotes


def _cut_lines(out: Path) -> dict[str, dict]:
    """Lines cut out of kept documents, per rule (a line rule's name, or `boilerplate`): totals and
    the most frequent lines."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for path in sorted((out / "removed_lines").glob("*/*.jsonl.gz")):
        with gzip.open(path, "rb") as handle:
            for line in handle:
                record = orjson.loads(line)
                counts[record["rule"]][record["line"]] += 1
    return {rule: {"lines": sum(c.values()), "characters": sum(len(k) * v for k, v in c.items()),
                   "distinct_lines": len(c),
                   "most_frequent": [{"line": line[:EXAMPLE_CHARS], "documents": n} for line, n in c.most_common(10)]}
            for rule, c in sorted(counts.items())}


def _skipped(out: Path, extra: list[dict]) -> list[dict]:
    records = list(extra)
    for path in sorted((out / "skipped").glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return records


def _timing(out: Path) -> dict[str, float]:
    """Seconds per datatrove step, summed over tasks (from each pipeline's stats.json)."""
    seconds: dict[str, float] = {}
    for stats_file in sorted((out / "datatrove").glob("*/stats.json")):
        for step in json.loads(stats_file.read_text()):
            time_stats = step.get("time_stats")  # readers report 0: their time is not tracked
            total = time_stats.get("total") if isinstance(time_stats, dict) else None
            if total is not None:
                key = f"{stats_file.parent.name}/{step['name']}"
                seconds[key] = round(seconds.get(key, 0.0) + total, 3)
    return seconds


def corpus_report(out: Path, examples_per_rule: int = 3, extra_skipped: list[dict] | None = None) -> dict:
    """Counts of kept and removed documents, per rule and per source, read from the written files.

    `documents_kept` counts each kept input document once; `copies_written` the extra copies a source
    weight above 1 wrote (`documents_written` = both; `kept` and `sources` total what was written)."""
    clusters_file = out / "kept" / "clusters.json"
    clusters = json.loads(clusters_file.read_text(encoding="utf-8")) if clusters_file.exists() else []
    rules, member_text = _removed(out, examples_per_rule,
                                  {m["id"] for c in clusters for m in c["removed"][:MEMBER_TEXTS]})
    kept, sources, languages, quotes = _kept(out)
    removed = sum(rule["documents"] for rule in rules.values())
    skipped = _skipped(out, extra_skipped or [])
    # A source weight above 1 writes extra copies of kept documents: they are written, not kept
    # input, so documents_kept + documents_removed = documents_in and kept_share stays within 0..1.
    kept_once = kept["documents"] - kept["copies"]
    documents_in = kept_once + removed
    return {
        "documents_in": documents_in,
        "documents_kept": kept_once,
        "documents_removed": removed,
        "copies_written": kept["copies"],
        "documents_written": kept["documents"],
        "kept_share": round(kept_once / documents_in, 4) if documents_in else 0.0,
        "kept": kept,
        "sources": dict(sources),
        "languages": dict(languages),
        "removed_by_rule": rules,
        "duplicate_clusters": [{"kept_id": c["kept_id"], "kept_text": quotes.get(c["kept_id"], "")[:EXAMPLE_CHARS],
                                "size": c["size"],
                                "removed": [m | ({"text": member_text[m["id"]]} if m["id"] in member_text else {})
                                            for m in c["removed"]]}
                               for c in clusters],
        "lines_cut_by_rule": _cut_lines(out),
        "skipped_records": len(skipped),
        "skipped": skipped[:MAX_LISTED_SKIPS],
        "skipped_by_file": dict(Counter(r["file"] for r in skipped)),
        "timing_s": _timing(out),
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:160]


def copies_note(report: dict) -> str:
    """` (+N copies written for source weights)`, or nothing where no input is weighted above 1."""
    copies = report.get("copies_written", 0)
    return f" (+{copies} copies written for source weights)" if copies else ""


def report_markdown(report: dict) -> str:
    """The report as Markdown: totals, per-rule table with examples, clusters, skipped records."""
    lines = [
        "# Corpus report", "",
        f"{report['documents_kept']} of {report['documents_in']} documents kept{copies_note(report)} "
        f"({report['kept']['words']} words, {report['kept']['characters']} characters written).", "",
        "| rule | step | documents removed | characters removed |", "|---|---|---:|---:|",
    ]
    for rule, stats in sorted(report["removed_by_rule"].items(), key=lambda kv: -kv[1]["documents"]):
        lines.append(f"| {rule} | {stats['step']} | {stats['documents']} | {stats['characters']} |")
    orphans = sum(stats.get("kept_copy_dropped", 0) for stats in report["removed_by_rule"].values())
    if orphans:
        lines += ["", f"{orphans} duplicate(s) removed whose kept copy a source cap or weight then dropped: their "
                      "text is in no output (`duplicate_dropped_by` in removed/dedup/; list the input whose copy "
                      "should stay first, or raise its cap or weight)."]
    lines += ["", "| source | documents kept |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in sorted(report["sources"].items())]
    lines += ["", "| language | documents kept |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in sorted(report["languages"].items(), key=lambda kv: -kv[1])]
    lines += ["", "## Examples of removed documents", ""]
    for rule, stats in sorted(report["removed_by_rule"].items()):
        lines.append(f"**{rule}**")
        lines += [f"- `{ex['id']}`: {_cell(ex['text'])}" for ex in stats["examples"]]
        lines.append("")
    if report["duplicate_clusters"]:
        lines += ["## Largest near-duplicate clusters", ""]
        for cluster in report["duplicate_clusters"]:
            lines.append(f"- kept `{cluster['kept_id']}` ({cluster['size']} documents): {_cell(cluster['kept_text'])}")
            lines += [f"  - removed `{m['id']}` (estimated Jaccard {m['similarity']}): {_cell(m.get('text', ''))}"
                      for m in cluster["removed"]]
        lines.append("")
    for rule, cut in report["lines_cut_by_rule"].items():
        lines += [f"## Lines cut by {rule} ({cut['lines']} lines, {cut['characters']} characters, "
                  f"{cut['distinct_lines']} distinct)", "", "| line | times |", "|---|---:|"]
        lines += [f"| {_cell(item['line'])} | {item['documents']} |" for item in cut["most_frequent"]]
        lines.append("")
    if report["skipped_records"]:
        lines += [f"## Skipped input records ({report['skipped_records']})", "",
                  "| file | line | problem |", "|---|---:|---|"]
        lines += [f"| {r['file']} | {r['line']} | {_cell(r['problem'])} |" for r in report["skipped"]]
        lines.append("")
    if report["timing_s"]:
        lines += ["## Time per step (seconds, summed over tasks)", "", "| step | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(report["timing_s"].items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) + "\n"
