"""Static masking (masking.static=true): maskings drawn once by the shards stage, as Google BERT's dupe_factor."""

import shutil

import numpy as np
import pytest
from tokenizers import Tokenizer

from bertforge.common.errors import ConfigError
from bertforge.common.stage_folder import read_manifest
from bertforge.stages import plan, run_stages
from corpora.shards.rows import load_rows
from corpora.shards.static_masks import load_static_masks
from corpora.vocab.word_starts import word_start_table
from tests.conftest import stages_to

STATIC = ["experiment=demo_ga", "masking.static=true", "masking.dupe_factor=3", "masking.whole_word=true"]



@pytest.fixture(scope="module")
def static(tmp_path_factory, data_dir):
    return stages_to("shards", data_dir, tmp_path_factory.mktemp("static"), STATIC)


def test_a_rebuild_draws_the_same_masks(static, tmp_path, data_dir):
    # The same corpus and vocabulary folders (a retrained WordPiece vocabulary can break ties differently),
    # the shards stage run again from scratch.
    for stage in ("corpus", "vocab"):
        shutil.copytree(static[stage], tmp_path / stage / static[stage].name)
    again = stages_to("shards", data_dir, tmp_path, STATIC)["shards"]
    assert again.name == static["shards"].name and again != static["shards"]
    assert (again / "train-64.bin").read_bytes() == (static["shards"] / "train-64.bin").read_bytes()
    for name in ("train-64.mask_positions.bin", "train-64.mask_inputs.bin"):
        assert (again / name).read_bytes() == (static["shards"] / name).read_bytes()


def test_every_copy_masks_differently_and_never_a_special_token(static):
    folder = static["shards"]
    fmt = read_manifest(folder)["format"]
    rows = np.asarray(load_rows(folder, "train"))
    positions, inputs = (np.asarray(a) for a in load_static_masks(folder, 64, fmt))
    k = fmt["static_masks"]["per_row"]["64"]
    assert positions.shape == inputs.shape == (3, len(rows), k) and k == round(0.15 * 64 * fmt["maskable_share"]["64"])
    for a, b in ((0, 1), (0, 2), (1, 2)):
        differs = (positions[a] != positions[b]).any(axis=1).mean()
        assert differs > 0.95, (a, b, differs)
    targets = np.take_along_axis(np.broadcast_to(rows, (3, *rows.shape)), positions.astype(np.int64), axis=2)
    special = sorted(set(fmt["special_ids"].values()))
    assert not np.isin(targets, special).any()
    assert (np.diff(np.sort(positions.astype(np.int64), axis=2), axis=2) > 0).all()  # distinct
    assert (np.diff(positions.astype(np.int64), axis=2) < 0).any()  # in draw order, not sorted
    # 80/10/10: [MASK], a random token, the original token.
    mask_share = (inputs == fmt["special_ids"]["mask"]).mean()
    kept_share = (inputs == targets).mean()
    assert 0.77 < mask_share < 0.83 and 0.08 < kept_share < 0.13


def test_whole_words_are_masked_together(static):
    folder = static["shards"]
    fmt = read_manifest(folder)["format"]
    rows = np.asarray(load_rows(folder, "train"))
    positions = np.asarray(load_static_masks(folder, 64, fmt)[0]).astype(np.int64)
    starts = word_start_table(Tokenizer.from_file(str(static["vocab"] / "tokenizer.json")))
    continuations = 0
    for copy in range(positions.shape[0]):
        for row, chosen in zip(rows, positions[copy]):
            chosen = set(chosen.tolist())
            # A masked continuation piece whose word start is not masked: only the one cut word of the row.
            orphans = [p for p in chosen if not starts[row[p]] and p - 1 not in chosen]
            assert len(orphans) <= 1
            continuations += sum(not starts[row[p]] for p in chosen)
    assert continuations > 100  # the test did see multi-piece words


def test_static_masking_is_opt_in_and_named_by_its_keys(make_cfg, tmp_path):
    default = {p.stage.name: p.output.folder.name for p in plan(make_cfg("run", ["experiment=demo_ga"]), "evaluate")}
    explicit = {p.stage.name: p.output.folder.name for p in plan(
        make_cfg("run", ["experiment=demo_ga", "masking.static=false", "masking.max_predictions_per_seq=0"]),
        "evaluate")}
    assert explicit == default  # a new key at its default leaves every folder name as it was
    static = {p.stage.name: p.output.folder.name for p in plan(make_cfg("run", STATIC), "evaluate")}
    other_dupes = {p.stage.name: p.output.folder.name for p in plan(
        make_cfg("run", [*STATIC, "masking.dupe_factor=5"]), "evaluate")}
    assert static["vocab"] == default["vocab"] and static["shards"] != default["shards"]
    assert static["pretrain"] != default["pretrain"] and other_dupes["shards"] != static["shards"]


def test_cap_on_predictions_per_row(tmp_path, data_dir):
    folder = stages_to("shards", data_dir, tmp_path, [*STATIC, "masking.max_predictions_per_seq=4"])["shards"]
    assert read_manifest(folder)["format"]["static_masks"]["per_row"] == {"64": 4}


@pytest.mark.parametrize("override,key", [("masking.dupe_factor=0", "masking.dupe_factor"),
                                          ("masking.span_mean_len=3", "masking.span_mean_len"),
                                          ("masking.max_predictions_per_seq=-1", "masking.max_predictions_per_seq")])
def test_bad_static_settings_fail_before_any_stage(make_cfg, tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        run_stages(make_cfg("shards", [*STATIC, override]), "shards")
    assert not (tmp_path / "work" / "corpus").exists()
