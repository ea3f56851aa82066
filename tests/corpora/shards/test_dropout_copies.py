"""BPE-dropout in training (shards.dropout_copies with tokenizer.bpe_dropout): each pass over the data reads a
differently segmented copy of the same text; held-out rows never see dropout."""

import shutil

import numpy as np
import pytest
from tokenizers import Tokenizer

from bertforge.common.errors import ConfigError
from bertforge.common.stage_folder import read_manifest
from bertforge.stages import run_stages
from corpora.shards.dropout_copies import load_dropout_copies
from corpora.shards.rows import load_rows
from tests.conftest import stages_to

DROPOUT = ["experiment=demo_ga", "tokenizer=bpe", "tokenizer.bpe_dropout=0.1", "shards.dropout_copies=2"]



@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir):
    return stages_to("shards", data_dir, tmp_path_factory.mktemp("dropout"), DROPOUT)


def _text(rows, tokenizer, ids) -> str:
    """The token stream of packed rows ([CLS] per row left out, [SEP] as a newline) decoded."""
    stream = np.asarray(rows)[:, 1:].ravel().tolist()
    docs, current = [], []
    for token in stream:
        if token == ids["sep"]:
            docs.append(tokenizer.decode(current))
            current = []
        else:
            current.append(token)
    return "\n".join(docs)


def test_every_pass_reads_the_same_text_segmented_anew(built):
    folder = built["shards"]
    fmt = read_manifest(folder)["format"]
    tokenizer = Tokenizer.from_file(str(built["vocab"] / "tokenizer.json"))
    copies = load_dropout_copies(folder, 64, fmt)
    assert len(copies) == 2 and copies[0].shape == copies[1].shape
    assert read_manifest(folder)["counts"]["train"]["rows"] == len(copies[0])  # the rows training reads
    texts = [_text(rows, tokenizer, fmt["special_ids"]) for rows in copies]
    shortest = min(len(t) for t in texts)
    assert shortest > 10_000 and len({t[:shortest - 200] for t in texts}) == 1  # the same text...
    assert (np.asarray(copies[0]) != np.asarray(copies[1])).any(axis=1).mean() > 0.9  # ...cut differently
    assert not (folder / "train-64.bin").exists()  # training reads the copies: no plain training rows


def test_held_out_rows_never_use_dropout(built, tmp_path, data_dir):
    for stage in ("corpus", "vocab"):
        shutil.copytree(built[stage], tmp_path / stage / built[stage].name)
    plain = stages_to("shards", data_dir, tmp_path, [*DROPOUT, "shards.dropout_copies=0"])["shards"]
    assert plain.name != built["shards"].name
    assert (plain / "heldout-64.bin").read_bytes() == (built["shards"] / "heldout-64.bin").read_bytes()
    assert not list(plain.glob("*.dropout-*"))
    # the copies hold the plain training text; dropout skips merges: more, shorter pieces than plain gives
    fmt = read_manifest(built["shards"])["format"]
    tokenizer = Tokenizer.from_file(str(built["vocab"] / "tokenizer.json"))
    plain_text = _text(load_rows(plain, "train"), tokenizer, fmt["special_ids"])
    copy_text = _text(load_dropout_copies(built["shards"], 64, fmt)[0], tokenizer, fmt["special_ids"])
    shortest = min(len(plain_text), len(copy_text))
    assert plain_text[:shortest - 200] == copy_text[:shortest - 200]
    assert fmt["dropout_copies"]["rows"]["64"] > len(load_rows(plain, "train"))


@pytest.mark.parametrize("override,key", [("tokenizer.bpe_dropout=0.0", "tokenizer.bpe_dropout"),
                                          ("masking.static=true", "masking.static=false"),
                                          ("training.objective=mlm_nsp", "training.objective=mlm")])
def test_dropout_copies_need_a_dropout_tokenizer_and_packed_rows(make_cfg, tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        run_stages(make_cfg("shards", [*DROPOUT, override]), "shards")
    assert not (tmp_path / "work" / "corpus").exists()
