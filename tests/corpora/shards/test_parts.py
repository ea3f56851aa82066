"""The shards stage's tokenising as datatrove tasks: the same rows for any number of tasks, and a killed
run that resumes its finished tasks."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tokenizers import Tokenizer

from bertforge.common.errors import TasksFailed
from bertforge.common.stage_folder import StageOutput, read_manifest
from bertforge.stages import run_stages
from corpora.config import ShardsConfig
from corpora.documents import document_files, is_heldout, iter_documents, read_documents
from corpora.shards.parts import task_files
from corpora.vocab.special_tokens import special_token_ids
from corpora.shards.stage import build_shards
from tests.conftest import estonian_jsonl, experiment


def rows_of_one_process(texts, tokenizer, seq_len: int) -> tuple[bytes, int]:
    """The training rows by their definition, the reference for any split of the work: every document
    encoded alone, ended by [SEP], one stream cut into [CLS] + seq_len - 1 tokens; and the documents."""
    ids = special_token_ids(tokenizer)
    stream, documents = [], 0
    for text in texts:
        stream += tokenizer.encode(text, add_special_tokens=False).ids + [ids["sep"]]
        documents += 1
    full = len(stream) // (seq_len - 1)
    rows = np.full((full, seq_len), ids["cls"], np.uint16)
    rows[:, 1:] = np.asarray(stream[:full * (seq_len - 1)], np.uint16).reshape(full, seq_len - 1)
    return rows.tobytes(), documents


@pytest.fixture(scope="module")
def four_file_corpus(tmp_path_factory, data_dir):
    """A corpus stage folder with four document files (corpus.tasks=4) and its vocabulary."""
    work = tmp_path_factory.mktemp("parts")
    src = estonian_jsonl(data_dir, work / "in", files=4, docs_per_file=150)
    cfg = experiment("vocab", data_dir, work / "w", ["source=jsonl", f"source.inputs.0.path={src}", "corpus.tasks=4",
                                                     "tokenizer.vocab_size=2000"])
    return run_stages(cfg, "vocab")


def _build(folders, work, tasks: int, lengths=(64, 32)):
    out = StageOutput(work, "shards", {}, {})  # the folder a config names: shards.tasks is not hashed
    build_shards(ShardsConfig(seq_len=lengths[0], heldout_percent=10.0, encode_batch_docs=50, tasks=tasks),
                 list(lengths), folders["corpus"], folders["vocab"], out)
    return out.folder


def test_rows_are_the_same_bytes_for_any_number_of_tasks(four_file_corpus, tmp_path):
    assert len(document_files(four_file_corpus["corpus"])) == 4
    built = {tasks: _build(four_file_corpus, tmp_path / f"t{tasks}", tasks) for tasks in (1, 3, 0)}
    manifests = {tasks: read_manifest(folder) for tasks, folder in built.items()}
    assert manifests[0]["counts"] == manifests[1]["counts"] == manifests[3]["counts"]
    assert [len(list((f / "datatrove" / "tokenise" / "completions").iterdir())) for f in built.values()] == [1, 3, 4]
    for name in ("train-64.bin", "train-32.bin", "heldout-64.bin", "heldout-32.bin"):
        assert len({(folder / name).read_bytes() for folder in built.values()}) == 1, name
    assert not (built[3] / "parts").exists()  # the token streams go once the rows are packed

    # ... and they are the rows of one process encoding the split's documents one after the other
    tokenizer = Tokenizer.from_file(str(four_file_corpus["vocab"] / "tokenizer.json"))
    rows, documents = rows_of_one_process((d["text"] for d in iter_documents(four_file_corpus["corpus"], "train", 10.0)),
                                          tokenizer, 64)
    assert rows == (built[3] / "train-64.bin").read_bytes()
    assert documents == manifests[3]["counts"]["train"]["documents"]


def test_pairs_and_static_masks_are_the_same_bytes_for_any_number_of_tasks(four_file_corpus, tmp_path, monkeypatch):
    """Sentence pairs are built by the tokenise tasks file by file, and static masks drawn by mask tasks
    chunk by chunk (chunks of 256 rows here, so three tasks share several): any split gives the same bytes.
    A random next segment comes from another document of the same file."""
    import corpora.shards.static_masks as static_masks
    from corpora.shards.pairs import PairSettings, load_pairs
    from corpora.shards.sentences import split_sentences
    from corpora.shards.static_masks import StaticMasking

    monkeypatch.setattr(static_masks, "CHUNK_ROWS", 256)
    pairs = PairSettings("mlm_nsp", 0.1, 0.5, seed=0)
    static = StaticMasking(0.15, 0.8, 0.1, True, 2, 0, seed=0)
    built = {}
    for tasks in (1, 3, 0):
        out = StageOutput(tmp_path / f"t{tasks}", "shards", {}, {})
        build_shards(ShardsConfig(seq_len=64, heldout_percent=10.0, encode_batch_docs=50, tasks=tasks), [64, 32],
                     four_file_corpus["corpus"], four_file_corpus["vocab"], out, static, pairs)
        built[tasks] = out.folder
    fmts = [read_manifest(folder)["format"] for folder in built.values()]
    for key in ("pairs", "static_masks"):
        assert fmts[0][key] == fmts[1][key] == fmts[2][key]
    examples = fmts[0]["pairs"]["by_seq_len"]["32"]["examples"]
    assert examples > 4 * 256 and fmts[0]["pairs"]["documents"]["documents"] > 500
    assert [len(list((f / "datatrove" / "mask" / "completions").iterdir())) for f in built.values()] == [1, 3, 4]
    for length in (64, 32):
        for suffix in ("pairs.bin", "pairs_info.bin", "mask_positions.bin", "mask_inputs.bin"):
            assert len({(f / f"train-{length}.{suffix}").read_bytes() for f in built.values()}) == 1, suffix

    # every random next of file i is text of file i's training documents, and so is its first segment
    tokenizer = Tokenizer.from_file(str(four_file_corpus["vocab"] / "tokenizer.json"))
    files = []
    for path in document_files(four_file_corpus["corpus"]):
        docs = [d for d in read_documents(path) if not is_heldout(d["id"], 10.0)]
        files.append("," + ",".join(str(t) for d in docs for e in tokenizer.encode_batch(
            split_sentences(d["text"], d["metadata"])[0], add_special_tokens=False) for t in e.ids) + ",")
    rows, info = load_pairs(built[3], 64, fmts[0])
    place = []
    for row, (len_a, len_b, label) in zip(np.asarray(rows), np.asarray(info)):
        a, b = ("," + ",".join(map(str, row[s:s + n])) + "," for s, n in ((1, len_a), (len_a + 2, len_b)))
        holding_a = [i for i, text in enumerate(files) if a in text]
        if len(holding_a) == 1 and len_a >= 8 and len_b >= 8 and label:  # a random next, from a known file
            place.append(b in files[holding_a[0]])
    assert len(place) > 100 and all(place)


def test_nsp_names_a_document_file_with_a_single_training_document(four_file_corpus, tmp_path):
    """NSP draws random next segments within a file: a file with one training document is named in the error,
    with what to do, and no shards folder is left behind."""
    import gzip
    import shutil

    from bertforge.common.errors import CorpusInputError
    from corpora.shards.pairs import PairSettings

    corpus = tmp_path / "corpus"
    shutil.copytree(four_file_corpus["corpus"], corpus)
    last = document_files(corpus)[-1]
    first_training = next(d for d in read_documents(last) if not is_heldout(d["id"], 10.0))
    with gzip.open(last, "wt", encoding="utf-8") as handle:  # the last file keeps one training document
        handle.write(json.dumps(first_training) + "\n")
    out = StageOutput(tmp_path / "w", "shards", {}, {})
    with pytest.raises(CorpusInputError, match=f"{last.name}.*another document of the same file.*corpus.tasks"):
        build_shards(ShardsConfig(seq_len=64, heldout_percent=10.0), [64], corpus, four_file_corpus["vocab"], out,
                     pairs=PairSettings("mlm_nsp", 0.1, 0.5, seed=0))
    assert not list((tmp_path / "w" / "shards").iterdir())


def test_a_killed_mask_task_is_the_only_one_drawn_again(four_file_corpus, tmp_path, monkeypatch):
    """One of three static-masking tasks fails, the build stops with TasksFailed and keeps its work; the rerun
    draws only that task's chunks, into the files the others already filled, and the masks equal those of one
    task."""
    import corpora.shards.static_masks as static_masks
    from corpora.shards.static_masks import DrawMasks, StaticMasking

    monkeypatch.setattr(static_masks, "CHUNK_ROWS", 256)
    static = StaticMasking(0.15, 0.8, 0.1, False, 2, 0, seed=0)
    reference = StageOutput(tmp_path / "reference", "shards", {}, {})
    build_shards(ShardsConfig(seq_len=32, heldout_percent=10.0, tasks=1), [32], four_file_corpus["corpus"],
                 four_file_corpus["vocab"], reference, static)
    real_run = DrawMasks.run

    def dies_on_the_last_task(self, data=None, rank=0, world_size=1):
        if rank == 2:
            time.sleep(1.0)  # the other two finish first
            raise MemoryError("Unable to allocate 3.1 GiB")
        return real_run(self, data, rank, world_size)

    monkeypatch.setattr(DrawMasks, "run", dies_on_the_last_task)  # the workers are forked: they see it
    out = StageOutput(tmp_path / "w", "shards", {}, {})
    shards = ShardsConfig(seq_len=32, heldout_percent=10.0, tasks=3)
    with pytest.raises(TasksFailed, match="step mask: 1 of 3 task.*MemoryError"):
        build_shards(shards, [32], four_file_corpus["corpus"], four_file_corpus["vocab"], out, static)
    [work] = list((tmp_path / "w" / "shards").glob(".shards-*.work"))
    done = {p.name: p.stat().st_mtime_ns for p in (work / "datatrove" / "mask" / "completions").iterdir()}
    assert sorted(done) == ["00000", "00001"]
    monkeypatch.setattr(DrawMasks, "run", real_run)
    build_shards(shards, [32], four_file_corpus["corpus"], four_file_corpus["vocab"], out, static)
    after = {p.name: p.stat().st_mtime_ns for p in (out.folder / "datatrove" / "mask" / "completions").iterdir()}
    assert len(after) == 3 and all(after[name] == mtime for name, mtime in done.items())
    for name in ("train-32.mask_positions.bin", "train-32.mask_inputs.bin"):
        assert (out.folder / name).read_bytes() == (reference.folder / name).read_bytes()


def test_tasks_take_contiguous_ranges_of_files(tmp_path):
    (tmp_path / "documents").mkdir()
    for i in range(5):
        (tmp_path / "documents" / f"{i:05d}.jsonl.gz").write_bytes(b"")
    shares = [[(i, p.name[:5]) for i, p in task_files(tmp_path, rank, 3)] for rank in range(3)]
    assert shares == [[(0, "00000")], [(1, "00001"), (2, "00002")], [(3, "00003"), (4, "00004")]]


def test_killed_run_resumes_its_finished_tokenise_tasks(data_dir, tmp_path):
    """SIGKILL a real `bertforge shards` once its first tokenise task has finished; the same command again
    runs only the tasks that had not, and the rows equal those of a run never killed."""
    src = estonian_jsonl(data_dir, tmp_path / "in", files=8, docs_per_file=600, sentences_per_doc=12)
    env = dict(os.environ, BERTFORGE_WORK=str(tmp_path / "w"), BERTFORGE_DATA=str(data_dir))
    args = ["source=jsonl", f"source.inputs.0.path={src}", "corpus.tasks=8", "tokenizer.vocab_size=2000",
            "shards.encode_batch_docs=20", "filters=none"]
    subprocess.run([sys.executable, "-m", "bertforge", "vocab", *args], env=env, check=True, capture_output=True,
                   timeout=600)
    command = [sys.executable, "-m", "bertforge", "shards", *args]
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    shards_dir = tmp_path / "w" / "shards"
    markers = ".shards-*.work/datatrove/tokenise/completions/*"
    deadline = time.time() + 300
    while time.time() < deadline and not list(shards_dir.glob(markers)) and run.poll() is None:
        time.sleep(0.005)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    done = {p.name: p.stat().st_mtime_ns for p in shards_dir.glob(markers)}
    print(f"tokenise tasks finished before the kill: {len(done)} of 8")
    assert 0 < len(done) < 8 and not list(shards_dir.glob("shards-*"))

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    # datatrove's own log (its summary of the tasks, two workers here) goes to the stage's console.log
    assert "Stats" not in rerun.stdout + rerun.stderr and "shards: " in rerun.stdout
    [folder] = list(shards_dir.glob("shards-*"))
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "datatrove" / "tokenise" / "completions").iterdir()}
    assert len(after) == 8 and all(after[name] == mtime for name, mtime in done.items())  # not run again

    corpus = next((tmp_path / "w" / "corpus").glob("corpus-*"))
    vocab = next((tmp_path / "w" / "vocab").glob("vocab-*"))
    tokenizer = Tokenizer.from_file(str(vocab / "tokenizer.json"))
    heldout_percent = read_manifest(folder)["config"]["shards"]["heldout_percent"]
    rows, documents = rows_of_one_process((d["text"] for d in iter_documents(corpus, "train", heldout_percent)),
                                          tokenizer, 128)
    assert rows == (folder / "train-128.bin").read_bytes()  # as if never killed, and as one process
    assert documents == read_manifest(folder)["counts"]["train"]["documents"] > 4000


def test_a_rerun_with_another_split_of_the_work_tokenises_again_and_says_so(four_file_corpus, tmp_path, monkeypatch,
                                                                           caplog):
    import logging

    import corpora.shards.stage as stage

    reference = _build(four_file_corpus, tmp_path / "reference", tasks=1)
    real_pack = stage.pack_parts

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # killed after every task finished, before the rows were packed

    monkeypatch.setattr(stage, "pack_parts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(four_file_corpus, tmp_path / "w", tasks=3)
    [work] = list((tmp_path / "w" / "shards").glob(".shards-*.work"))
    assert len(list((work / "datatrove" / "tokenise" / "completions").iterdir())) == 3
    monkeypatch.setattr(stage, "pack_parts", real_pack)
    with caplog.at_level(logging.WARNING, logger="bertforge"):
        folder = _build(four_file_corpus, tmp_path / "w", tasks=2)
    assert "split the tokenise step" in caplog.text and "running it again" in caplog.text
    assert len(list((folder / "datatrove" / "tokenise" / "completions").iterdir())) == 2
    assert (folder / "train-64.bin").read_bytes() == (reference / "train-64.bin").read_bytes()


def test_a_rerun_goes_on_from_the_first_step_an_interrupted_build_did_not_finish(four_file_corpus, tmp_path,
                                                                                  monkeypatch, caplog):
    """Killed while drawing the static masks: the rerun neither tokenises, nor packs, nor builds the
    sentence pairs again, and draws the masks."""
    import logging

    import corpora.shards.stage as stage
    from corpora.shards.pairs import PairSettings, load_pairs
    from corpora.shards.static_masks import StaticMasking

    real_masks = stage._draw_static_masks

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    shards = ShardsConfig(seq_len=64, heldout_percent=10.0, tasks=2)
    pairs = PairSettings("mlm_nsp", 0.1, 0.5, seed=0)
    static = StaticMasking(0.15, 0.8, 0.1, False, 2, 0, seed=0)
    out = StageOutput(tmp_path, "shards", {}, {})
    monkeypatch.setattr(stage, "_draw_static_masks", killed)
    with pytest.raises(KeyboardInterrupt):
        build_shards(shards, [64], four_file_corpus["corpus"], four_file_corpus["vocab"], out, static, pairs)
    monkeypatch.setattr(stage, "_draw_static_masks", real_masks)
    for done in ("pack_parts", "join_pair_parts"):
        monkeypatch.setattr(stage, done, lambda *args, name=done, **kwargs: pytest.fail(f"{name} ran again"))
    with caplog.at_level(logging.INFO, logger="bertforge"):
        build_shards(shards, [64], four_file_corpus["corpus"], four_file_corpus["vocab"], out, static, pairs)
    assert "packed was finished by an earlier, interrupted attempt" in caplog.text
    assert "pairs was finished by an earlier, interrupted attempt" in caplog.text
    fmt = read_manifest(out.folder)["format"]
    assert fmt["pairs"]["by_seq_len"]["64"]["examples"] > 0 and fmt["static_masks"]["dupe_factor"] == 2
    rows, _ = load_pairs(out.folder, 64, fmt)  # the training rows are the pairs; no packed ones are written
    assert read_manifest(out.folder)["counts"]["train"]["rows"] == len(rows)
    assert not (out.folder / "train-64.bin").exists()
    assert not (out.folder / "parts").exists()


@pytest.mark.parametrize("step", ["dropout_copies", "pairs"])
def test_a_rerun_with_another_task_count_reads_every_part_of_the_packed_attempt(four_file_corpus, tmp_path,
                                                                                monkeypatch, step):
    """Killed after the packed step with shards.tasks=3, rerun with shards.tasks=1 (not hashed): the rerun takes
    the packed rows as they are and joins all three tasks' dropout copies or sentence pairs, so the rows are those
    of a build never killed."""
    import shutil

    import corpora.shards.stage as stage
    from corpora.shards.pairs import PairSettings

    # The plain tokenizer stands in for the dropout one, so the copies are deterministic and compared byte for byte.
    vocab = tmp_path / "vocab"
    shutil.copytree(four_file_corpus["vocab"], vocab)
    shutil.copy(vocab / "tokenizer.json", vocab / "tokenizer_dropout.json")
    pairs = PairSettings("mlm_nsp", 0.1, 0.5, seed=0) if step == "pairs" else None
    copies = 2 if step == "dropout_copies" else 0

    def build(work, tasks):
        out = StageOutput(work, "shards", {}, {})
        build_shards(ShardsConfig(seq_len=64, heldout_percent=10.0, encode_batch_docs=50, tasks=tasks,
                                  dropout_copies=copies), [64], four_file_corpus["corpus"], vocab, out, pairs=pairs)
        return out.folder

    reference = build(tmp_path / "reference", tasks=3)
    joined = {"dropout_copies": "pack_dropout_copies", "pairs": "join_pair_parts"}[step]
    real_join = getattr(stage, joined)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # after the packed step was kept, before the join

    monkeypatch.setattr(stage, joined, killed)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "w", tasks=3)
    monkeypatch.setattr(stage, joined, real_join)
    folder = build(tmp_path / "w", tasks=1)
    names = ["train-64.dropout-0.bin", "train-64.dropout-1.bin"] if copies else ["train-64.pairs.bin",
                                                                                "train-64.pairs_info.bin"]
    for name in names:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    assert read_manifest(folder)["counts"] == read_manifest(reference)["counts"]


def test_the_special_token_roles_come_from_the_vocab_folder(four_file_corpus, tmp_path):
    """A vocabulary whose roles only its transformers files name (ALBERT-style [CLS] [SEP] <pad> <unk> [MASK], as
    the vocab stage writes when it extends such a base): the shards take the ids of those roles."""
    from transformers import PreTrainedTokenizerFast

    spec = (four_file_corpus["vocab"] / "tokenizer.json").read_text(encoding="utf-8")
    albert = Tokenizer.from_str(spec.replace('"[PAD]"', '"<pad>"').replace('"[UNK]"', '"<unk>"'))
    vocab = tmp_path / "vocab"
    PreTrainedTokenizerFast(tokenizer_object=albert, unk_token="<unk>", pad_token="<pad>", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(str(vocab))
    out = StageOutput(tmp_path / "w", "shards", {}, {})
    build_shards(ShardsConfig(seq_len=64, heldout_percent=10.0, tasks=2), [64], four_file_corpus["corpus"], vocab, out)
    ids = read_manifest(out.folder)["format"]["special_ids"]
    assert ids == {"cls": albert.token_to_id("[CLS]"), "sep": albert.token_to_id("[SEP]"),
                   "pad": albert.token_to_id("<pad>"), "unk": albert.token_to_id("<unk>"),
                   "mask": albert.token_to_id("[MASK]")}
    rows = np.fromfile(out.folder / "train-64.bin", dtype=np.uint16).reshape(-1, 64)
    assert len(rows) > 100 and (rows[:, 0] == ids["cls"]).all() and (rows == ids["sep"]).any()
