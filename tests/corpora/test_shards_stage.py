"""The shards stage: full rows starting with [CLS], documents joined by [SEP], held-out split apart."""

import numpy as np
from tokenizers import Tokenizer

from corpora.documents import iter_documents
from corpora.shards_stage import load_rows, run_shards
from corpora.stagedir import lineage, read_manifest


def test_rows_are_packed_token_streams(make_cfg):
    folder = run_shards(make_cfg("shards", ["shards.seq_len=64", "tokenizer.vocab_size=3000"]))
    manifest = read_manifest(folder)
    fmt, counts = manifest["format"], manifest["counts"]
    train, heldout = load_rows(folder, "train"), load_rows(folder, "heldout")
    assert train.dtype == np.uint16 and train.shape == (counts["train"]["rows"], 64)
    assert heldout.shape[0] == counts["heldout"]["rows"] > 0
    assert (train[:, 0] == fmt["special_ids"]["[CLS]"]).all()
    assert int(train.max()) < fmt["vocab_size"]
    # every token of the stream is in a row except the dropped tail
    body = counts["train"]["tokens"] + counts["train"]["documents"]  # tokens plus one [SEP] per document
    assert body == counts["train"]["rows"] * 63 + counts["train"]["tokens_dropped"]
    # the first row decodes back to the first training document's opening words
    stages = lineage(folder)
    tok = Tokenizer.from_file(stages["vocab"] + "/tokenizer.json")
    first_doc = next(iter_documents(stages["corpus"], "train", manifest["config"]["shards"]["heldout_percent"]))
    decoded = tok.decode(train[0, 1:20].tolist())
    assert first_doc["text"].startswith(decoded[:30])
