"""The shards stage: full rows starting with [CLS], documents ended by [SEP], every length packed from
one token stream, held-out split apart, and a manifest that says all of it."""

import numpy as np
import pytest
from tokenizers import Tokenizer

from corpora.documents import iter_documents
from bertforge.common.errors import CorpusInputError
from bertforge.common.stage_folder import read_manifest
from bertforge.stages import run_stages
from corpora.shards.rows import load_rows


@pytest.fixture(scope="module")
def stages(tmp_path_factory, data_dir):
    from bertforge.experiment import load_config
    from tests.conftest import compose_raw

    work = tmp_path_factory.mktemp("shards")
    overrides = [f"paths.data_dir={data_dir}", f"paths.work_dir={work}", "shards.seq_len=64",
                 "tokenizer.vocab_size=3000", "shards.extra_seq_lens=[32]",
                 "training.phases=[{seq_len:64,fraction:0.5},{seq_len:128,fraction:0.5}]"]
    return run_stages(load_config(compose_raw("shards", overrides)), "shards")


@pytest.fixture(scope="module")
def shards(stages):
    return stages["shards"]


def test_rows_are_packed_token_streams(shards, stages):
    manifest = read_manifest(shards)
    fmt, counts = manifest["format"], manifest["counts"]
    assert fmt["seq_lens"] == [64, 32, 128] and fmt["seq_len"] == 64
    train, heldout = load_rows(shards, "train"), load_rows(shards, "heldout")
    assert train.dtype == np.uint16 and train.shape == (counts["train"]["rows"], 64)
    assert heldout.shape[0] == counts["heldout"]["rows"] > 0
    assert (train[:, 0] == fmt["special_ids"]["cls"]).all()
    assert int(train.max()) < fmt["vocab_size"]
    # every token of the stream is in a row except the dropped tail
    body = counts["train"]["tokens"] + counts["train"]["documents"]  # tokens plus one [SEP] per document
    assert body == counts["train"]["rows"] * 63 + counts["train"]["tokens_dropped"]
    # the first row decodes back to the first training document's opening words
    tok = Tokenizer.from_file(str(stages["vocab"] / "tokenizer.json"))
    first_doc = next(iter_documents(stages["corpus"], "train", manifest["config"]["shards"]["heldout_percent"]))
    decoded = tok.decode(train[0, 1:20].tolist())
    assert first_doc["text"].startswith(decoded[:30])


def test_every_length_packs_the_same_token_stream(shards):
    fmt = read_manifest(shards)["format"]
    streams = {}
    for length in fmt["seq_lens"]:
        rows = load_rows(shards, "train", length)
        assert rows.shape[1] == length and (rows[:, 0] == fmt["special_ids"]["cls"]).all()
        streams[length] = rows[:, 1:].reshape(-1)  # the stream without the row-leading [CLS]
    shortest = min(len(s) for s in streams.values())
    assert all(np.array_equal(s[:shortest], streams[64][:shortest]) for s in streams.values())


def test_document_boundaries_and_maskable_share_are_recorded(shards):
    manifest = read_manifest(shards)
    fmt, by_len = manifest["format"], manifest["counts"]["by_seq_len"]
    rows = load_rows(shards, "train", 128)
    sep = fmt["special_ids"]["sep"]
    seps = int((rows == sep).sum())
    # one [SEP] per document, every one of them in a row except those in the dropped tail
    assert by_len["128"]["train"]["documents"] - 1 <= seps <= by_len["128"]["train"]["documents"]
    special = len(rows) + seps  # the [CLS] of each row and the [SEP]s
    assert fmt["maskable_share"]["128"] == pytest.approx(1 - special / rows.size)
    assert fmt["maskable_share"]["32"] < fmt["maskable_share"]["128"]  # one [CLS] per 32 tokens costs more


def test_missing_length_is_named(shards):
    with pytest.raises(CorpusInputError, match="no rows of length 512"):
        load_rows(shards, "train", 512)


def test_encoding_ahead_packs_exactly_the_documents_in_order(stages, tmp_path):
    """Batches encoded in a worker thread while the last is packed: the rows are those of encoding
    each document alone, in order; an error while reading the documents still stops the stage."""
    from corpora.shards.rows import RowPacker, document_stream, encoded_ahead
    from corpora.vocab.special_tokens import special_token_ids

    tok = Tokenizer.from_file(str(stages["vocab"] / "tokenizer.json"))
    ids = special_token_ids(tok)
    texts = [d["text"] for d in iter_documents(stages["corpus"])]
    packer = RowPacker(tmp_path / "rows.bin", 16, ids["cls"], ids["sep"], np.uint16)
    for _, encodings in encoded_ahead(iter(texts), tok, 7):
        packer.add(document_stream([e.ids for e in encodings], ids["sep"], np.uint16))
    counts = packer.close()
    stream = [t for text in texts for t in tok.encode(text, add_special_tokens=False).ids + [ids["sep"]]]
    rows = np.fromfile(tmp_path / "rows.bin", dtype=np.uint16).reshape(-1, 16)
    assert len(texts) > 50 and rows.shape[0] == counts["rows"] == len(stream) // 15
    assert rows[:, 1:].ravel().tolist() == stream[:rows.shape[0] * 15] and (rows[:, 0] == ids["cls"]).all()

    def failing():
        yield from texts[:20]
        raise CorpusInputError("part-3.jsonl.gz", "is truncated", "Rebuild the corpus.")

    with pytest.raises(CorpusInputError, match="part-3.jsonl.gz"):
        for _ in encoded_ahead(failing(), tok, 7):
            pass
