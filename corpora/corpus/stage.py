"""The corpus stage: raw sources -> cleaned, deduplicated documents + a report of every removal.

Four datatrove pipelines run one after the other (locally or on SLURM, see `corpora.executors`):

1. filter (N tasks): readers -> normalise -> quality rules -> URL/blocklist -> language -> stop
   words -> signatures; survivors go to an intermediate folder, removals to removed/<step>/.
2. index (`corpus.index_tasks` tasks, each a hash range of the duplicate keys): duplicate pairs;
   merge (1 task): clusters over the pairs, source caps/weights over the whole corpus.
3. apply (N tasks): drop the duplicates, write documents/, removed/dedup/ and kept/ (totals for the report).

The folder is built by `StageOutput.build` in a working folder that a killed run, or one whose tasks
failed (`TasksFailed`), leaves behind: the rerun skips the datatrove tasks that finished, unless the
work is split another way (`corpus.tasks`, `corpus.index_tasks`), when it starts over. Bad input or
config removes it. The stage graph (`bertforge.stages`) reuses a finished folder without calling this.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path


from bertforge.common.errors import ConfigError, CorpusInputError, TasksFailed
from bertforge.common.stage_folder import StageOutput, write_json_atomic
from corpora.config import CorpusConfig, FiltersConfig, InputConfig, SourceConfig
from corpora.corpus.report import copies_note, corpus_report, report_markdown
from corpora.executors import run_chain
from corpora.corpus.rules.chain import describe_stopword_lists, filter_steps, stopword_lists
from corpora.corpus.duplicate_index import MAX_COPIES, IndexTask, MergeDecisions
from corpora.corpus.whole_corpus import DecisionApplier, SignatureWriter
from corpora.corpus.normalise import normalise_text
from corpora.corpus.readers import BAD_RECORD_MODES, FORMATS, TXT_UNITS, make_reader, split_inputs
from corpora.corpus.text_batch import char_tables
from corpora.corpus.writers import DocumentWriter

log = logging.getLogger("bertforge.corpus")

WORK_SPLIT = "work_split.json"  # how the working folder's tasks were split, recorded when it is started


@dataclass(frozen=True)
class CheckedInputs:
    """The source's inputs after every path was found to hold files."""

    specs: list
    fingerprint: list
    """[path, size, mtime] of every input file: a changed file is a changed corpus."""
    empty_files: list[dict]
    """Empty files listed as skipped records (only with source.on_bad_record=skip)."""


def build_corpus(source: SourceConfig, filters: FiltersConfig, run: CorpusConfig, out: StageOutput) -> None:
    """Clean and deduplicate `source` with `filters` into the folder `out` (run by `run.executor`)."""
    check_work_split(run)
    inputs = checked_inputs(source)
    # Resumable: the folder of a killed run, or of one whose tasks failed, is kept, and the rerun skips the
    # datatrove tasks that finished.
    with out.build(resumable=True, keep_on_error=(TasksFailed,)) as build:
        _resume_or_start_over(build.tmp, _work_split(run))
        _run_pipelines(source, filters, run, inputs.specs, build.tmp)
        report = corpus_report(build.tmp, run.examples_per_rule, extra_skipped=inputs.empty_files)
        if report["documents_in"] == 0:
            raise CorpusInputError(", ".join(s.path for s in inputs.specs), "contains no documents with text",
                                   "Check the format and text_key of each input.")
        write_json_atomic(build.tmp / "report.json", report)
        (build.tmp / "report.md").write_text(report_markdown(report), encoding="utf-8")
        shutil.rmtree(build.tmp / "work", ignore_errors=True)  # only now: a rerun of an interrupted report needs it
        build.manifest["counts"] = {k: report[k] for k in (
            "documents_in", "documents_kept", "documents_removed", "skipped_records")}
        build.manifest["counts"] |= {"lines_cut": sum(c["lines"] for c in report["lines_cut_by_rule"].values()),
                                     "kept_words": report["kept"]["words"],
                                     "kept_characters": report["kept"]["characters"],
                                     "kept_share": report["kept_share"]}
        if report["copies_written"]:  # only where a source weight wrote copies: else every sweep table shows 0
            build.manifest["counts"]["copies_written"] = report["copies_written"]
        build.manifest["timing_s"] = report["timing_s"]
    log.info("corpus: kept %d of %d documents%s -> %s", report["documents_kept"], report["documents_in"],
             copies_note(report), out.folder)


def checked_inputs(source: SourceConfig) -> CheckedInputs:
    """Every input of `source` checked to exist and hold files, before any work starts.

    An empty file is an error unless source.on_bad_record is skip, when it is listed among the
    skipped records instead.
    """
    if not source.inputs:
        raise CorpusInputError(f"source {source.name!r}", "has no inputs",
                               "Add at least one entry under source.inputs.")
    check_source_settings(source)
    fingerprint, empty = [], []
    for index, spec in enumerate(source.inputs):
        _check_mixing(spec, index)
        path = Path(spec.path)
        if not path.exists():
            hint = " (paths.data_dir comes from BERTFORGE_DATA: is it set?)" if "ud/" in spec.path else ""
            raise CorpusInputError(spec.path, "does not exist", f"Fix source.inputs[{index}].path{hint}.")
        reader = make_reader(spec, source.name, index)
        files = reader.data_folder.list_files(recursive=True, glob_pattern=reader.glob_pattern)
        if not files:
            raise CorpusInputError(spec.path, f"holds no files matching {reader.glob_pattern!r}",
                                   f"Check source.inputs[{index}].format and .glob.")
        for name in files:
            full = Path(reader.data_folder.resolve_paths(name))
            if full.stat().st_size == 0:
                if source.on_bad_record != "skip":
                    raise CorpusInputError(str(full), "is empty",
                                           "Remove it or give it text (or set source.on_bad_record=skip).")
                empty.append({"file": str(full), "line": None, "problem": "empty file",
                              "input": spec.name or source.name})
            fingerprint.append([str(full), full.stat().st_size, int(full.stat().st_mtime)])
    return CheckedInputs(list(source.inputs), fingerprint, empty)


def check_work_split(run: CorpusConfig) -> None:
    """ConfigError naming the key for a split of the work that cannot run (not hashed: planning asks too)."""
    if run.index_tasks < 1:
        raise ConfigError(f"corpus.index_tasks={run.index_tasks}: give at least 1 (each index task holds about "
                          "525 bytes per document / index_tasks)")


def check_source_settings(source: SourceConfig) -> None:
    """ConfigError naming the key for a `source` value the readers would refuse (a traceback once the corpus
    build starts, or at planning) or that makes every record bad: from the config alone, while planning."""
    if source.on_bad_record not in BAD_RECORD_MODES:
        raise ConfigError(f"source.on_bad_record={source.on_bad_record!r}: choose error (stop at the first bad "
                          "record) or skip (leave it out and list it)")
    if not source.max_record_mib > 0:  # also refuses NaN
        raise ConfigError(f"source.max_record_mib={source.max_record_mib}: give the longest record in MiB, above 0 "
                          "(default 16); every record would be too long")
    for index, spec in enumerate(source.inputs):
        if spec.format not in FORMATS:
            raise ConfigError(f"source.inputs.{index}.format={spec.format!r}: choose one of {', '.join(FORMATS)}")
        if spec.format == "txt" and spec.txt_unit not in TXT_UNITS:
            raise ConfigError(f"source.inputs.{index}.txt_unit={spec.txt_unit!r}: choose one of {', '.join(TXT_UNITS)}")
        if spec.format == "conllu" and spec.sentences_per_doc < 1:
            raise ConfigError(f"source.inputs.{index}.sentences_per_doc={spec.sentences_per_doc}: give at least 1 "
                              "(sentences per document when no `# newdoc` marker comes first)")


def _check_mixing(spec: InputConfig, index: int) -> None:
    """ConfigError, naming the key, for a weight or cap of input `index` that cannot work."""
    if not 0 <= spec.weight <= MAX_COPIES:  # also refuses NaN
        raise ConfigError(f"source.inputs.{index}.weight={spec.weight}: give a value from 0 to {MAX_COPIES} "
                          f"(0.5 keeps half of the input's documents, 2 writes each twice; a document is written "
                          f"at most {MAX_COPIES} times)")
    if spec.max_docs < 0:
        raise ConfigError(f"source.inputs.{index}.max_docs={spec.max_docs}: give 0 (no cap) or the most documents "
                          "to keep from this input")


def _work_split(run: CorpusConfig) -> dict:
    """How the work is split, which shapes the intermediate files though never the output: each filter
    and apply task has its own files, and each filter task one key file per index task."""
    return {"corpus.tasks": max(1, run.tasks), "corpus.index_tasks": run.index_tasks}


def _resume_or_start_over(folder: Path, split: dict) -> None:
    """Record `split` in a new working folder. In one left by an earlier run that split the work another
    way, the finished tasks' files would be read as this split's (losing documents or duplicates, or
    failing on missing files): discard them, saying so, and start the folder over."""
    record = folder / WORK_SPLIT
    left = [path for path in folder.iterdir() if path.name != WORK_SPLIT]
    earlier = json.loads(record.read_text(encoding="utf-8")) if record.exists() else None
    if left and earlier != split:
        log.warning("corpus: %s holds the work of an earlier run split as %s, and this run's is split as %s: "
                    "discarding its finished tasks, whose files were split the other way, and starting over",
                    folder, _described(earlier) if earlier else "unrecorded (an older bertforge)", _described(split))
        for path in left:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if earlier != split:
        write_json_atomic(record, split)


def _described(split: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(split.items()))


def _readers(source: SourceConfig, skipped_folder: str, tasks: int = 0) -> list:
    """One reader per input; with `tasks`, each task's share of the whole input set (`split_inputs`)."""
    readers = [make_reader(spec, source.name, index, source.on_bad_record, source.max_record_mib, skipped_folder)
               for index, spec in enumerate(source.inputs)]
    if tasks:
        split_inputs(readers, tasks)
    return readers


def _sample_texts(source: SourceConfig, filters: FiltersConfig):
    """(source tag, text) of documents from the start of every input (an equal share each), the text
    normalised as the pipeline will: for deriving stop words (per input where language ID is off)."""
    norm = filters.normalise

    def sample(count: int):
        per_input = max(1, count // len(source.inputs))

        def docs():
            for reader in _readers(source, ""):
                reader.on_bad_record = "skip"  # a sample: bad records are the pipeline's to report
                files = reader.data_folder.list_files(recursive=True, glob_pattern=reader.glob_pattern)
                # the input's tag, not the record's: a JSONL record's own `source` field overrides the tag
                read = (d for name in files for d in reader.read_file(name))
                yield from ((reader.source, d) for d in itertools.islice(read, per_input))
        return ((tag, normalise_text(d.text, norm.unicode_form, norm.remove_control_chars,
                                     norm.collapse_spaces)) for tag, d in docs())

    return sample


def _run_pipelines(source: SourceConfig, filters: FiltersConfig, run: CorpusConfig, specs, out: Path) -> None:
    work = out / "work"  # intermediate files; removed when the stage succeeds

    def removed_writer(step: str) -> DocumentWriter:
        return DocumentWriter(str(out / "removed" / step))

    stopwords = stopword_lists(filters, _sample_texts(source, filters))
    if stopwords:
        (out / "stopwords.txt").write_text(describe_stopword_lists(stopwords), encoding="utf-8")
    tasks = max(1, run.tasks)
    filter_pipeline = [
        *_readers(source, str(out / "skipped"), tasks),
        *filter_steps(filters, removed_writer, stopwords, str(out / "removed_lines" / "lines")),
        SignatureWriter(str(work / "signatures"), filters.near_dedup, exact=filters.exact_dedup,
                        boilerplate_lines=filters.min_repeated_line_docs > 0, index_tasks=run.index_tasks),
        DocumentWriter(str(work / "filtered"), compress=False),
    ]
    index_pipeline = [IndexTask(str(work / "signatures"), str(work / "pairs"), filters.near_dedup)]
    merge_pipeline = [MergeDecisions(str(work / "signatures"), str(work / "pairs"), str(work / "decisions"),
                                     filters.near_dedup, exact=filters.exact_dedup,
                                     inputs=[{"weight": s.weight, "max_docs": s.max_docs} for s in specs],
                                     min_repeated_line_docs=filters.min_repeated_line_docs)]
    apply_pipeline = [DecisionApplier(str(work / "filtered"), str(work / "signatures"), str(work / "decisions"), str(out))]
    char_tables()  # built once here (0.1-0.5 s): workers forked from this process inherit it
    run_chain(run.executor, [("filter", filter_pipeline, tasks), ("index", index_pipeline, run.index_tasks),
                             ("merge", merge_pipeline, 1), ("apply", apply_pipeline, tasks)], out / "datatrove")
    clusters = work / "decisions" / "clusters.json"
    if clusters.exists():  # absent only where an interrupted run had written the report, and copied it, already
        (out / "kept").mkdir(exist_ok=True)
        write_json_atomic(out / "kept" / "clusters.json", json.loads(clusters.read_text(encoding="utf-8")))
