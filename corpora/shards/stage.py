"""The shards stage: documents + tokenizer -> fixed-length packed token rows in memory-mapped files.

Layout of a shards folder:
  train-<L>.bin, heldout-<L>.bin   rows of L token ids, C order, dtype from the manifest, one pair
                                   per row length L (the main `shards.seq_len`, the lengths of
                                   `training.phases`, and `shards.extra_seq_lens`); with sentence pairs
                                   (NSP/SOP) or BPE-dropout copies, training reads those and no train-<L>.bin
                                   is written (`corpora.shards.pairs`, `dropout_copies`)
  manifest.json                    rows per split and length, dtype, vocab size, tokenizer hash,
                                   special ids, share of maskable (non-special) tokens
  datatrove/tokenise/, mask/       the tokenising and static-masking tasks' logs, stats and completion markers
  tasks.json, mask_tasks.json      how the tokenising and the static masking were split between tasks
  steps/*.json                     each finished step's result (packed rows, dropout copies, pairs, static
                                   masks): what a rerun resumes from

The row format is in `corpora.shards.rows`. Every length is packed from one tokenisation of the
corpus, done in batches by the tokenizers library's Rust encoder (parallel over all cores) in
datatrove tasks (`corpora.shards.parts`); the training loop never tokenises.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import orjson
from tokenizers import Tokenizer

from bertforge.common.errors import CorpusInputError, TasksFailed
from bertforge.common.stage_folder import StageOutput, write_json_atomic
from corpora.config import ExecutorConfig, ShardsConfig
from corpora.executors import run_chain
from corpora.documents import document_files
from corpora.shards.dropout_copies import pack_dropout_copies
from corpora.shards.parts import TokeniseFiles, pack_parts, packed_splits, remove_parts, task_counts
from corpora.shards.rows import file_sha256
from corpora.shards.pairs import PairSettings, join_pair_parts, pair_files
from corpora.shards.static_masks import DrawMasks, StaticMasking, allocate_mask_files, chunk_count, mask_files, per_row
from corpora.vocab.special_tokens import special_token_ids, special_tokens

log = logging.getLogger("bertforge.shards")


def shard_seq_lens(shards: ShardsConfig, phase_seq_lens: list[int]) -> list[int]:
    """Every row length an experiment needs (its training phases' lengths given), main length first."""
    wanted = [*shards.extra_seq_lens, *phase_seq_lens]
    bad = [length for length in [shards.seq_len, *wanted] if length < 8]
    if bad:
        raise CorpusInputError("config", f"sequence length {bad[0]} is too short for packed rows",
                               "Use shards.seq_len / training.phases[].seq_len of at least 8.")
    return [shards.seq_len, *sorted(set(wanted) - {shards.seq_len})]


def build_shards(shards: ShardsConfig, lengths: list[int], corpus_dir: Path, vocab_dir: Path,
                 out: StageOutput, static: StaticMasking | None = None, pairs: PairSettings | None = None,
                 executor: ExecutorConfig | None = None) -> None:
    """Tokenise the corpus folder's documents with the vocab folder's tokenizer into rows of every
    length in `lengths` (main length first), train and held-out splits, in `out`; with `pairs`, also
    sentence-pair examples of the training documents (`corpora.shards.pairs`, built by the same tasks);
    with `static`, the static maskings of every training row (of the pair rows when there are pairs: what
    training reads), drawn by tasks too.

    The tokenising runs as `shards.tasks` datatrove tasks on `executor` (`corpora.shards.parts`); the
    folder is resumable: a rerun of a killed build, or of one whose tasks failed, skips the tasks and the steps
    that finished (`_once`)."""
    for settings in (static, pairs):
        if settings is not None:
            settings.check()
    files = document_files(corpus_dir)
    if not files:
        raise CorpusInputError(str(corpus_dir / "documents"), "holds no *.jsonl.gz documents",
                               "Rebuild the corpus stage (delete its folder and rerun).")
    tokenizer = Tokenizer.from_file(str(vocab_dir / "tokenizer.json"))
    # The roles the vocab stage wrote (tokenizer_config.json): an extended base may name its own, e.g. ALBERT's
    # [CLS] [SEP] <pad> <unk> [MASK], which the bare tokenizer.json cannot tell.
    ids = special_token_ids(tokenizer, special_tokens(vocab_dir))
    dtype = np.uint16 if tokenizer.get_vocab_size() <= np.iinfo(np.uint16).max + 1 else np.uint32
    with out.build(resumable=True, keep_on_error=(TasksFailed,)) as build:  # bad input starts over
        tasks = min(shards.tasks or len(files), len(files))
        by_len = _once(build.tmp, "packed", lambda: _packed_rows(
            shards, lengths, corpus_dir, vocab_dir, ids, dtype, executor or ExecutorConfig(), tasks,
            len(files), build.tmp, pairs))
        parts_tasks = _tokenised_tasks(build.tmp, tasks)  # the later steps read every part the tokenising wrote
        dropout = _once(build.tmp, "dropout_copies", lambda: pack_dropout_copies(
            build.tmp / "parts", parts_tasks, shards.dropout_copies, lengths, ids, dtype, build.tmp,
            str(corpus_dir))) if shards.dropout_copies else None
        pair_counts = _once(build.tmp, "pairs", lambda: _join_pairs(
            pairs, lengths, parts_tasks, build.tmp, str(corpus_dir))) if pairs is not None else None
        if (build.tmp / "parts").exists():  # once the steps that read them are kept: a rerun needs only the rows
            remove_parts(build.tmp / "parts")
        # The share of maskable tokens in plain packed rows: the training rows', or the held-out rows' where those
        # are the only ones (pairs have their own share, below).
        shares = {k: maskable_share(v.get("train", v["heldout"]), int(k)) for k, v in by_len.items()}
        for length, counts in by_len.items():  # the training rows are what training reads
            if pair_counts is not None:
                counts["train"] = pair_row_counts(pair_counts, length)
            elif dropout:
                counts["train"] = dropout["train"][length]
        main = by_len[str(lengths[0])]
        build.manifest["counts"] = {"train": main["train"], "heldout": main["heldout"], "by_seq_len": by_len}
        build.manifest["format"] = fmt = {
            "seq_len": lengths[0], "seq_lens": lengths, "dtype": np.dtype(dtype).name,
            "vocab_size": tokenizer.get_vocab_size(),
            "tokenizer_sha256": file_sha256(vocab_dir / "tokenizer.json"),
            "special_ids": ids,  # by role: BERT and RoBERTa styles alike
            "maskable_share": shares,
        }
        if dropout:
            fmt["dropout_copies"] = dropout
        if pairs is not None:
            fmt["pairs"] = pairs.payload() | pair_counts | {
                "maskable_share": {k: v["maskable_share"] for k, v in pair_counts["by_seq_len"].items()}}
        if static is not None:
            fmt["static_masks"] = _once(build.tmp, "static_masks", lambda: _draw_static_masks(
                static, vocab_dir, build.tmp, fmt, executor or ExecutorConfig(), tasks))
    train = f"{pairs.objective} pairs" if pairs is not None else \
        f"rows in each of {shards.dropout_copies} dropout copies" if shards.dropout_copies else "rows"
    log.info("shards: %d train %s, %d held-out rows of %s tokens -> %s", main["train"]["rows"], train,
             main["heldout"]["rows"], "/".join(map(str, lengths)), out.folder)


def maskable_share(counts: dict, length: int) -> float:
    """The share of maskable (non-special) tokens in packed rows of `length` with these counts."""
    return 1 - counts["special_tokens"] / (counts["rows"] * length)


def pair_row_counts(pair_counts: dict, length: str) -> dict:
    """The manifest's train counts when the training rows are sentence pairs: rows, the documents they come
    from, their tokens, and their special tokens ([CLS], [SEP]s and padding)."""
    counts = pair_counts["by_seq_len"][length]
    rows, tokens = counts["examples"], counts["segment_tokens"]
    return {"rows": rows, "documents": pair_counts["documents"]["documents"], "tokens": tokens,
            "special_tokens": rows * int(length) - tokens}


def _once(folder: Path, step: str, run) -> dict:
    """`run()`'s result (a manifest entry, JSON data), run once across the attempts of a build: kept in
    `steps/<step>.json` when it finishes, so a rerun after a kill takes it from there and goes on with the
    next step. A killed step runs again from the start (each writes its files afresh)."""
    done = folder / "steps" / f"{step}.json"
    if done.exists():
        log.info("shards: %s was finished by an earlier, interrupted attempt; going on from there", step)
        return orjson.loads(done.read_bytes())
    done.parent.mkdir(exist_ok=True)
    write_json_atomic(done, run())
    return orjson.loads(done.read_bytes())  # the same JSON data whether run now or before


def _tokenised_tasks(folder: Path, tasks: int) -> int:
    """How many tokenise tasks wrote the parts in `folder/parts`, as tasks.json recorded it. A rerun with
    another `shards.tasks` that takes the packed rows from an interrupted attempt reads that attempt's parts:
    reading only its own count's would silently lose the other tasks' dropout copies and sentence pairs."""
    plan_file = folder / "tasks.json"
    if not plan_file.exists():
        return tasks
    recorded = orjson.loads(plan_file.read_bytes())["tasks"]
    if recorded != tasks:
        log.info("shards: the tokenising was split into %d tasks by an earlier attempt (this run: %d); "
                 "reading its %d parts", recorded, tasks, recorded)
    return recorded


def _same_plan(plan_file: Path, step: str, plan: dict) -> bool:
    """Whether an interrupted attempt split `step`'s work as `plan` too (or nothing was split before), kept
    in `plan_file`. When it differs, the caller removes the step's finished tasks, which covered other
    shares of the work: this says so."""
    same = not plan_file.exists() or orjson.loads(plan_file.read_bytes()) == plan
    if not same:
        log.warning("shards: an interrupted attempt split the %s step as %s, this run as %s: running it again",
                    step, plan_file.read_text().strip(), plan)
    write_json_atomic(plan_file, plan)
    return same


def _packed_rows(shards: ShardsConfig, lengths: list[int], corpus_dir: Path, vocab_dir: Path, ids: dict[str, int],
                 dtype, executor: ExecutorConfig, tasks: int, files: int, folder: Path, pairs: PairSettings | None
                 ) -> dict[str, dict]:
    """Tokenise in `tasks` tasks (with the BPE-dropout copies and the sentence pairs, if any), then pack
    every split and length; {"<length>": {split: counts}} (`ids`: the special token ids by role, `files`: the
    corpus's document files).
    Resumable: finished tasks are not run again."""
    parts, logs = folder / "parts", folder / "datatrove"
    plan = {"tasks": tasks, "files": files, "dropout_copies": shards.dropout_copies, "pairs": pairs is not None}
    if not _same_plan(folder / "tasks.json", "tokenise", plan):
        shutil.rmtree(parts, ignore_errors=True)
        shutil.rmtree(logs / "tokenise", ignore_errors=True)
    step = TokeniseFiles(str(corpus_dir), str(vocab_dir / "tokenizer.json"), str(parts), tasks,
                         shards.heldout_percent, np.dtype(dtype).name, shards.encode_batch_docs,
                         str(vocab_dir / "tokenizer_dropout.json"), shards.dropout_copies, pairs, tuple(lengths), ids)
    run_chain(executor, [("tokenise", [step], tasks)], logs, stage="shards")
    by_len = {length: {} for length in lengths}
    for split in packed_splits(pairs is not None, shards.dropout_copies):
        paths = {length: folder / f"{split}-{length}.bin" for length in lengths}
        for length, counts in pack_parts(parts, tasks, split, paths, ids["cls"], ids["sep"], dtype).items():
            if counts["rows"] == 0:
                raise CorpusInputError(str(corpus_dir), f"yields no full {split} row of {length} tokens",
                                       "Add text, lower the sequence length or change shards.heldout_percent.")
            by_len[length][split] = counts
    return {str(length): counts for length, counts in by_len.items()}


def _draw_static_masks(static: StaticMasking, vocab_dir: Path, folder: Path, fmt: dict, executor: ExecutorConfig,
                       tasks: int) -> dict:
    """Static maskings of the training rows of every length (of the pair rows when there are pairs: what
    training reads), drawn by up to `tasks` datatrove tasks into files beside the rows; their manifest entry.
    Resumable: a rerun skips the tasks that finished."""
    ids = fmt["special_ids"]
    counts, sources, chunks = {}, [], 1
    for length in fmt["seq_lens"]:
        if fmt.get("pairs"):
            rows_path, share = pair_files(folder, "train", length)[0], fmt["pairs"]["maskable_share"][str(length)]
        else:
            rows_path, share = folder / f"train-{length}.bin", fmt["maskable_share"][str(length)]
        rows = rows_path.stat().st_size // (length * np.dtype(fmt["dtype"]).itemsize)
        counts[str(length)] = count = per_row(static.ratio, length, share, static.max_predictions_per_seq)
        paths = mask_files(folder, "train", length)
        allocate_mask_files(rows, count, static.dupe_factor, fmt["dtype"], *paths)
        sources.append((str(rows_path), length, count, *map(str, paths)))
        chunks = max(chunks, chunk_count(rows))
    tasks = min(tasks, chunks)
    if not _same_plan(folder / "mask_tasks.json", "mask", {"tasks": tasks}):
        shutil.rmtree(folder / "datatrove" / "mask", ignore_errors=True)
    step = DrawMasks(static, sources, sorted(set(ids.values())), ids["mask"], fmt["vocab_size"], fmt["dtype"],
                     str(vocab_dir / "tokenizer.json"), tasks)
    run_chain(executor, [("mask", [step], tasks)], folder / "datatrove", stage="shards")
    log.info("shards: %d static maskings of every training row (%s masked per row)", static.dupe_factor,
             ", ".join(f"{k} of {length}" for length, k in counts.items()))
    return static.payload() | {"per_row": counts}


def _join_pairs(pairs: PairSettings, lengths: list[int], tasks: int, folder: Path, where: str) -> dict:
    """The tokenise tasks' sentence-pair examples joined into the training pair files of every length; their counts."""
    counts = join_pair_parts([task["pairs"] for task in task_counts(folder / "parts", tasks)], pairs, lengths,
                             folder / "parts", folder, where)
    main = counts["by_seq_len"][str(lengths[0])]
    log.info("shards: %d %s pairs of %d tokens, %.1f %% %s (sentences from: %s)", main["examples"],
             pairs.objective, lengths[0], 100 * main["label_share"],
             "random next" if pairs.objective == "mlm_nsp" else "swapped", counts["sentences_from"])
    return counts
