"""Intrinsic vocabulary metrics, defined independently of any tokenizer's own idea of a word.

On running text a word is a whitespace-separated string; on a treebank it is a gold word (CoNLL-U
column 2). Every tokenizer, ours or a reference, is scored on exactly the same words:

- fertility: subword tokens per word (lower is better; 1.0 means every word is one token)
- continued_word_share: share of words split into more than one token
- unk_rate: share of tokens that are the unknown token
- chars_per_token: characters of the text per token
- vocab_used_share (running text): share of the non-special vocabulary seen at least once
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np
from datatrove.utils.batching import batched
from tokenizers import Tokenizer

from bertforge.common.errors import ConfigError, CorpusInputError
from corpora.vocab.special_tokens import special_tokens

_WORD = re.compile(r"\S+")
_ENCODE_BATCH_TEXTS = 512  # bounds the memory of Encoding objects alive at once


def unk_id(tokenizer: Tokenizer, path: str | Path | None = None) -> int | None:
    """Id of the unknown token, or None when the tokenizer has none (byte-level BPE never needs one)."""
    try:
        return tokenizer.token_to_id(special_tokens(path if path else tokenizer)["unk"])
    except ValueError:
        return None


def text_metrics(tokenizer: Tokenizer, texts: Iterable[str], unk: int | None) -> dict:
    """Metrics of `tokenizer` on running text, words being whitespace-separated strings."""
    spans = ((text, np.array([m.end() for m in _WORD.finditer(text)], dtype=np.int64)) for text in texts)
    return _score(tokenizer, spans, unk)


def gold_metrics(tokenizer: Tokenizer, sentences: list[tuple[str, list[str]]], unk: int | None) -> dict:
    """Metrics of `tokenizer` on gold words, each sentence tokenised as running text (so every word is
    in its real context) and its tokens assigned to the gold words they fall in."""
    aligned = [(text, ends) for text, words in sentences if (ends := align_words(text, words)) is not None]
    metrics = _score(tokenizer, aligned, unk)
    metrics.pop("vocab_used_share")
    metrics["sentences"] = metrics.pop("documents")
    metrics["sentences_unaligned"] = len(sentences) - len(aligned)
    return metrics


def align_words(text: str, words: list[str]) -> np.ndarray | None:
    """End offsets of `words` found in order in `text`, or None when one is missing (e.g. a word of a
    contraction whose form differs from the surface text)."""
    ends, position = [], 0
    for word in words:
        start = text.find(word, position)
        if start < 0 or text[position:start].strip():  # skipped non-space text: not the same sentence
            return None
        position = start + len(word)
        ends.append(position)
    return np.array(ends, dtype=np.int64)


def _score(tokenizer: Tokenizer, spans: Iterable[tuple[str, np.ndarray]], unk: int | None) -> dict:
    """Token counts per word for (text, word end offsets) pairs, summed into the metrics."""
    words = tokens = continued = unks = chars = docs = 0
    used = np.zeros(tokenizer.get_vocab_size(with_added_tokens=True), dtype=bool)
    ordinary = np.ones_like(used)  # the vocabulary text can use: all but special (and reserved) tokens
    ordinary[[i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special and i < len(used)]] = False
    for batch in batched(spans, _ENCODE_BATCH_TEXTS):
        encodings = tokenizer.encode_batch([text for text, _ in batch], add_special_tokens=False)
        for (text, ends), encoding in zip(batch, encodings):
            ids = np.array(encoding.ids, dtype=np.int64)
            docs, chars = docs + 1, chars + len(text)
            if len(ends) == 0:
                continue
            offsets = np.array(encoding.offsets, dtype=np.int64).reshape(-1, 2)  # (tokens, start/end)
            # A token belongs to the word holding its last character; a token made only of the space
            # before a word (a lone "▁") belongs to that next word.
            last_char = np.where(offsets[:, 1] > offsets[:, 0], offsets[:, 1] - 1, offsets[:, 0])
            owner = np.minimum(np.searchsorted(ends, last_char, side="right"), len(ends) - 1)
            per_word = np.bincount(owner, minlength=len(ends))
            words, tokens = words + len(ends), tokens + len(ids)
            continued += int((per_word > 1).sum())
            unks += int((ids == unk).sum()) if unk is not None else 0
            used[ids] = True
    return {
        "documents": docs, "words": words, "tokens": tokens,
        "fertility": tokens / max(words, 1),
        "continued_word_share": continued / max(words, 1),
        "unk_rate": unks / max(tokens, 1),
        "chars_per_token": chars / max(tokens, 1),
        "vocab_used_share": int(used[ordinary].sum()) / max(int(ordinary.sum()), 1),
    }


def conllu_files(paths: list[str], key: str = "tokenizer.gold_conllu") -> list[Path]:
    """The .conllu files named by `paths` (files, or folders searched recursively); errors name `key`."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(path.rglob("*.conllu"))
            if not found:
                raise ConfigError(f"{key}: {path} holds no .conllu files")
            files += found
        else:
            raise ConfigError(f"{key}: {path} does not exist (give CoNLL-U files or folders of them)")
    return files


def read_gold_sentences(path: Path) -> Iterable[tuple[str, list[str]]]:
    """(sentence text, gold words) per sentence of a CoNLL-U file: column 2 of word lines; the text is
    the `# text =` comment, or the words joined by spaces when there is none.

    Multiword-token ranges ("3-4") and empty nodes ("8.1") are skipped: the words inside a range
    are what the treebank segments, and empty nodes have no surface form.
    """
    text, words = "", []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line:
                if words:
                    yield text or " ".join(words), words
                text, words = "", []
            elif line.startswith("# text ="):
                text = line[len("# text ="):].strip()
            elif not line.startswith("#"):
                columns = line.split("\t")
                if len(columns) != 10:
                    raise CorpusInputError(str(path), f"has {len(columns)} tab-separated columns, CoNLL-U needs 10",
                                           "Check the file is CoNLL-U (tabs, not spaces).", line=number)
                if "-" in columns[0] or "." in columns[0]:
                    continue
                words.append(columns[1])
    if words:
        yield text or " ".join(words), words


def gold_sentences(files: list[Path], only_in: set[str] | None, max_words: int) -> list[tuple[str, list[str]]]:
    """Gold sentences of `files` up to about `max_words` words; with `only_in`, only the sentences in it."""
    sentences, n_words = [], 0
    for path in files:
        for text, words in read_gold_sentences(path):
            if only_in is not None and (not text or text not in only_in):
                continue
            sentences.append((text, words))
            n_words += len(words)
            if max_words and n_words >= max_words:
                return sentences
    return sentences


def load_reference(path: str, key: str = "tokenizer.reference", convert: bool = False) -> Tokenizer:
    """A tokenizer from a folder holding tokenizer.json, or the file itself; ConfigError naming `key`.

    `convert`: a model folder with only a slow tokenizer's files (vocab.txt, merges) is converted by
    transformers to the fast format."""
    location = Path(path)
    file = location / "tokenizer.json" if location.is_dir() else location
    if not location.exists():
        raise ConfigError(f"{key}={path!r} does not exist: give a folder with a tokenizer.json "
                          "(e.g. a downloaded model's folder) or the tokenizer.json itself")
    if not file.is_file() and convert:
        tokenizer = _converted(location, key)
    elif not file.is_file():
        raise ConfigError(f"{key}={path!r} is a folder without tokenizer.json: give the folder of a "
                          "Hugging Face fast tokenizer or its tokenizer.json")
    else:
        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as err:  # the Rust loader raises bare Exceptions with a serde message
            raise ConfigError(f"{key}={path!r}: {file} is not a tokenizers tokenizer.json ({err})") from None
    # Saved model tokenizers often pad and truncate to a fixed length; word counts need neither.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _converted(folder: Path, key: str) -> Tokenizer:
    from transformers import AutoTokenizer

    try:
        return Tokenizer.from_str(AutoTokenizer.from_pretrained(str(folder), use_fast=True).backend_tokenizer.to_str())
    except Exception as err:  # transformers raises many kinds here: no files, unknown class, no converter
        raise ConfigError(f"{key}={str(folder)!r} has no tokenizer that can be read ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200]}): it needs tokenizer.json or a slow tokenizer's "
                          "files (vocab.txt, merges.txt...) next to config.json") from None
