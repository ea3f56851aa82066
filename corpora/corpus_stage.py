"""The corpus stage: raw sources -> cleaned, deduplicated documents + a report of every removal."""

from __future__ import annotations

import gzip
import logging
from collections import Counter, defaultdict
from pathlib import Path

import orjson
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.writers import JsonlWriter

from corpora.errors import CorpusInputError
from corpora.filters import ExactDedupFilter, LengthFilter
from corpora.readers import make_reader
from corpora.stagedir import build_stage, stage_folder, reuse, write_json_atomic

log = logging.getLogger("bertforge.corpus")


def run_corpus(cfg) -> Path:
    """Build (or reuse) the corpus folder for `cfg` (an `ExperimentConfig`) and return its path."""
    from pretrain.config import section

    readers, fingerprint = _checked_readers(cfg)
    payload = section(cfg, "source", "filters") | {"files": fingerprint}
    folder = stage_folder(cfg.paths.work_dir, "corpus", payload, {})
    if reuse(folder, log):
        return folder
    _preflight(readers)
    with build_stage(cfg.paths.work_dir, "corpus", payload, {}) as build:
        _run_pipeline(cfg, readers, build.tmp)
        report = corpus_report(build.tmp, cfg.corpus.examples_per_rule)
        write_json_atomic(build.tmp / "report.json", report)
        (build.tmp / "report.md").write_text(report_markdown(report), encoding="utf-8")
        build.manifest["counts"] = {k: report[k] for k in ("documents_in", "documents_kept", "documents_removed")}
    log.info("corpus: kept %d of %d documents -> %s", report["documents_kept"], report["documents_in"], folder)
    return folder


def _checked_readers(cfg):
    """One reader per input, after checking every path exists and holds non-empty files."""
    if not cfg.source.inputs:
        raise CorpusInputError(f"source {cfg.source.name!r}", "has no inputs",
                               "Add at least one entry under source.inputs.")
    readers, fingerprint = [], []
    for index, spec in enumerate(cfg.source.inputs):
        spec.name = spec.name or cfg.source.name
        path = Path(spec.path)
        if not path.exists():
            hint = (" paths.data_dir is empty: set BERTFORGE_DATA to the data folder."
                    if not cfg.paths.data_dir and "ud/" in spec.path else "")
            raise CorpusInputError(spec.path, "does not exist",
                                   f"Fix source.inputs[{index}].path.{hint}")
        reader = make_reader(spec)
        files = reader.data_folder.list_files(recursive=True, glob_pattern=reader.glob_pattern)
        if not files:
            raise CorpusInputError(spec.path, f"holds no files matching {reader.glob_pattern!r}",
                                   f"Check source.inputs[{index}].format and .glob.")
        for name in files:
            full = Path(reader.data_folder.resolve_paths(name))
            if full.stat().st_size == 0:
                raise CorpusInputError(str(full), "is empty", "Remove it or give it text.")
            fingerprint.append([str(full), full.stat().st_size, int(full.stat().st_mtime)])
        readers.append(reader)
    return readers, fingerprint


def _preflight(readers) -> None:
    """Parse every input once before any output is written, so bad input fails fast and cleanly.

    The readers raise `CorpusInputError` naming file and line; an input with no text at all is
    an error too, because training on nothing silently is worse than stopping.
    """
    total = 0
    for reader in readers:
        files = reader.data_folder.list_files(recursive=True, glob_pattern=reader.glob_pattern)
        count = sum(1 for name in files for _ in reader.read_file(name))  # read_file: no stats
        if count == 0:
            raise CorpusInputError(reader.data_folder.path, "contains no documents with text",
                                   "Check the format and text_key of this input.")
        total += count
    log.info("corpus: %d documents in %d inputs passed the input check", total, len(readers))


def _run_pipeline(cfg, readers, out: Path) -> None:
    def removed_writer(rule: str) -> JsonlWriter:
        return JsonlWriter(str(out / "removed" / rule), output_filename="${rank}.jsonl.gz")

    filters = cfg.filters
    pipeline = [
        *readers,
        LengthFilter(filters.min_words, filters.max_words, filters.min_chars,
                     exclusion_writer=removed_writer("length")),
    ]
    if filters.exact_dedup:
        pipeline.append(ExactDedupFilter(exclusion_writer=removed_writer("exact_dedup")))
    pipeline.append(JsonlWriter(str(out / "documents"), output_filename="${rank}.jsonl.gz"))
    LocalPipelineExecutor(pipeline, tasks=cfg.corpus.tasks, logging_dir=str(out / "datatrove"),
                          skip_completed=False).run()


def _scan(folder: Path):
    for path in sorted(folder.glob("**/*.jsonl.gz")):
        with gzip.open(path, "rb") as handle:
            for line in handle:
                yield orjson.loads(line)


def corpus_report(out: Path, examples_per_rule: int = 3) -> dict:
    """Counts of kept and removed documents, per rule and per source, read from the written files."""
    kept = {"documents": 0, "words": 0, "characters": 0}
    sources: Counter = Counter()
    for doc in _scan(out / "documents"):
        kept["documents"] += 1
        kept["words"] += len(doc["text"].split())
        kept["characters"] += len(doc["text"])
        sources[doc.get("metadata", {}).get("source", "?")] += 1
    rules: dict = defaultdict(lambda: {"documents": 0, "characters": 0, "examples": []})
    for doc in _scan(out / "removed"):
        rule = rules[doc["metadata"].get("filter_reason", "unknown")]
        rule["documents"] += 1
        rule["characters"] += len(doc["text"])
        if len(rule["examples"]) < examples_per_rule:
            rule["examples"].append({"id": doc["id"], "text": doc["text"][:200]})
    removed = sum(rule["documents"] for rule in rules.values())
    return {
        "documents_in": kept["documents"] + removed,
        "documents_kept": kept["documents"],
        "documents_removed": removed,
        "kept": kept,
        "sources": dict(sources),
        "removed_by_rule": dict(rules),
    }


def report_markdown(report: dict) -> str:
    lines = [
        "# Corpus report", "",
        f"{report['documents_kept']} of {report['documents_in']} documents kept "
        f"({report['kept']['words']} words, {report['kept']['characters']} characters).", "",
        "| rule | documents removed | characters removed |", "|---|---:|---:|",
    ]
    for rule, stats in sorted(report["removed_by_rule"].items()):
        lines.append(f"| {rule} | {stats['documents']} | {stats['characters']} |")
    lines += ["", "| source | documents kept |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in sorted(report["sources"].items())]
    return "\n".join(lines) + "\n"
