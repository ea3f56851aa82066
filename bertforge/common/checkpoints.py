"""Where a starting checkpoint is: a local Hugging Face folder, an earlier bertforge stage, or a hub id.

Both sides need it: the vocab stage reads the checkpoint's tokenizer (`model.vocab_mode=keep` or
`extend`), the pretrain stage its weights, the evaluate and downstream stages both. Its identity (the
hash of its config and weights, the hash of its tokenizer files, and for a bertforge stage folder the hash
of the stage that made it) goes into their stage hashes, so a changed checkpoint is a changed input and a
sweep can branch from one base model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from bertforge.common.errors import ConfigError
from bertforge.common.stage_folder import MANIFEST, is_complete

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
STAGE_EXPORTS = {"pretrain": "hf", "publish": "model"}  # where a bertforge stage folder keeps its HF model
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "spm.model", "sentencepiece.bpe.model",
                   "sentencepiece.model", "tokenizer.model")
"""The files a Hugging Face tokenizer is loaded from (whichever a folder has): they decide the input ids."""


@dataclass(frozen=True)
class Checkpoint:
    """A resolved starting checkpoint: the HF folder to load and what identifies it."""

    requested: str
    """What the config said (path or hub id)."""
    folder: Path
    """A local folder with config.json and weights."""
    identity: dict
    """{"sha256": ...} of config and weights, {"tokenizer_sha256": ...} of the tokenizer files (when it has
    any), plus {"stage", "stage_hash"} for a bertforge stage folder."""

    @property
    def has_tokenizer(self) -> bool:
        return (self.folder / "tokenizer.json").is_file() or (self.folder / "vocab.txt").is_file()


def resolve_checkpoint(value: str, key: str = "model.init_from") -> Checkpoint:
    """The checkpoint `value` names; `ConfigError` naming `key` when there is none to load.

    `value` is a folder holding config.json and weights, a bertforge `pretrain` or `publish` stage
    folder (its HF export is used), or a hub id (`org/name`), fetched with huggingface_hub where the
    network allows.
    """
    path = Path(value).expanduser()
    if path.exists():
        return _local(value, path, key)
    if is_hub_id(value):
        return _local(value, _download(value, key), key)
    raise ConfigError(f"{key}={value!r}: no such folder, and it is not a hub id (org/name): give a folder with "
                      "config.json and model weights, a bertforge pretrain/publish stage folder, or a hub id")


def _local(requested: str, path: Path, key: str) -> Checkpoint:
    identity: dict = {}
    if (path / MANIFEST).is_file() and is_complete(path):
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        stage = manifest.get("stage")
        if stage not in STAGE_EXPORTS:
            raise ConfigError(f"{key}={requested!r} is a bertforge {stage} folder: start from a pretrain or "
                              "publish stage folder (or the HF folder inside it)")
        identity = {"stage": stage, "stage_hash": manifest["hash"]}
        path = path / STAGE_EXPORTS[stage]
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ConfigError(f"{key}={requested!r}: {path} holds no config.json: give a Hugging Face model folder "
                          "(config.json and weights), or a bertforge pretrain/publish stage folder")
    weights = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
    if not weights:
        raise ConfigError(f"{key}={requested!r}: {path} has config.json but no weights ({', '.join(WEIGHT_FILES)})")
    identity |= {"sha256": _files_sha256([path / "config.json", *weights])} | _tokenizer_identity(path)
    return Checkpoint(requested, path.resolve(), identity)


def _tokenizer_identity(folder: Path) -> dict:
    """{"tokenizer_sha256": ...} of the tokenizer files `folder` has; {} when it has none."""
    # The tokenizer decides the input ids the weights see: a changed one beside the same weights is another
    # model to score (and another start to continue from). A folder without one keeps the identity it had.
    files = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    return {"tokenizer_sha256": _named_files_sha256(files)} if files else {}


def _files_sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _named_files_sha256(files: list[Path]) -> str:
    # Each file's name with its own hash, so content moved from one file to another (vocab.txt to
    # tokenizer.json) is a change too.
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{_files_sha256([file])}\n".encode())
    return digest.hexdigest()[:16]


def is_hub_id(value: str) -> bool:
    """Whether `value` names a hub repository (`org/name`) rather than a local path."""
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and not value.startswith((".", "~")) and not Path(value).expanduser().exists()


def _download(repo_id: str, key: str) -> Path:
    """The hub snapshot of `repo_id` (from huggingface_hub's cache when it is there already)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise ConfigError(f"{key}={repo_id!r}: not a local folder, and the hub could not give it "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). Offline, download the model "
                          "elsewhere and give its folder") from None


ROBERTA_STYLE = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm", "data2vec-text",
                 "mpnet", "longformer", "ibert", "luke", "xmod"}
"""model_type values whose position ids start after pad_token_id (fairseq's numbering)."""


def usable_positions(folder: Path) -> int | None:
    """The longest input, in tokens, the HF encoder in `folder` takes (from its config.json); None when the
    config does not say (no max_position_embeddings). RoBERTa-style models number positions from
    pad_token_id + 1, so pad_token_id + 1 rows of their table are never used."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return None
    if config.get("model_type") in ROBERTA_STYLE:
        positions -= config.get("pad_token_id", 1) + 1
    return positions
