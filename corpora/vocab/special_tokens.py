"""Which token plays which role (cls, sep, pad, unk, mask) in a tokenizer, for BERT- and RoBERTa-style models.

Later stages should ask `special_tokens(...)` / `special_token_ids(...)` instead of looking up "[CLS]"
by name, so a RoBERTa-style vocabulary (<s> </s> <pad> <unk> <mask>) works as well as a BERT one.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

ROLES = ("cls", "sep", "pad", "unk", "mask")

# Each style lists its tokens in id order: that order fixes the ids of a freshly trained vocabulary.
# BERT: [PAD]=0 matches BertConfig's default pad_token_id. RoBERTa: <s>=0 <pad>=1 </s>=2 <unk>=3 as
# RobertaConfig expects (pad_token_id=1).
STYLES: dict[str, dict[str, str]] = {
    "bert": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "roberta": {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"},
}


def style_tokens(style: str) -> list[str]:
    """The special tokens of a style in id order (see STYLES)."""
    return list(STYLES[style].values())


def special_tokens(tokenizer: Tokenizer | str | Path) -> dict[str, str]:
    """Role -> token string (keys cls, sep, pad, unk, mask) for a tokenizer object or a saved one.

    A saved folder is read from its transformers files (special_tokens_map.json or
    tokenizer_config.json) when present; otherwise the vocabulary is matched against the known
    styles. Raises ValueError when no role mapping can be found.
    """
    if isinstance(tokenizer, (str, Path)):
        path = Path(tokenizer)
        folder = path if path.is_dir() else path.parent
        from_files = _roles_from_transformers_files(folder)
        if from_files:
            return from_files
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    for roles in STYLES.values():
        if all(token in vocab for token in roles.values()):
            return dict(roles)
    raise ValueError("the tokenizer has neither BERT-style ([CLS] [SEP] [PAD] [UNK] [MASK]) nor RoBERTa-style "
                     "(<s> </s> <pad> <unk> <mask>) special tokens")


def special_token_ids(tokenizer: Tokenizer, roles: dict[str, str] | None = None) -> dict[str, int]:
    """Role -> id in `tokenizer` (roles found with `special_tokens` unless given)."""
    roles = roles or special_tokens(tokenizer)
    return {role: tokenizer.token_to_id(token) for role, token in roles.items()}


def _roles_from_transformers_files(folder: Path) -> dict[str, str]:
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        roles = {}
        for role in ROLES:
            value = data.get(f"{role}_token")
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                roles[role] = value
        if len(roles) == len(ROLES):
            return roles
    return {}
