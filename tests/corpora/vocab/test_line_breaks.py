"""A line break separates words for every tokenizer family, as a space does: one-sentence-per-line text
(ToS sentences, txt_unit=file) gets no [UNK] or "\\n" pieces, and the next line's first word starts a word."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from corpora.config import TokenizerConfig
from corpora.vocab.build import build_untrained, finish
from corpora.vocab.sentencepiece_train import train_sentencepiece
from corpora.vocab.stage import save_hf_tokenizer
from corpora.vocab.word_starts import word_start_table
from tests.conftest import ud_sentences

# option name -> the config the vocab stage's tokenizer=<option> gives
FAMILIES = {"bpe": dict(model="bpe"), "unigram": dict(model="unigram"),
            "sp_bpe": dict(model="bpe", trainer="sentencepiece"),
            "sp_unigram": dict(model="unigram", trainer="sentencepiece"),
            "wordpiece": dict(model="wordpiece")}


def one_sentence_per_line(data_dir) -> list[str]:
    """Documents of 20 English sentences each, one per line (and a blank line, a tab, a Windows line end)."""
    sentences = ud_sentences(data_dir, "UD_English-EWT/en_ewt-ud-dev.conllu")[:600]
    docs = ["\n".join(sentences[i:i + 20]) for i in range(0, len(sentences), 20)]
    return docs + ["The terms apply.\n\nThe terms\r\napply.\tThe end."]


def trained(option: str, docs: list[str], workdir) -> Tokenizer:
    """A small vocabulary trained on `docs` as the vocab stage trains `tokenizer=<option>`."""
    cfg = TokenizerConfig(vocab_size=600, **FAMILIES[option])
    if cfg.trainer == "sentencepiece":
        tokenizer = train_sentencepiece(docs, cfg, workdir)
    else:
        tokenizer, trainer = build_untrained(cfg)
        tokenizer.train_from_iterator(docs, trainer=trainer)
    save_hf_tokenizer(tokenizer, workdir, finish(tokenizer, cfg))
    return tokenizer


@pytest.mark.parametrize("option", list(FAMILIES))
def test_a_line_break_is_a_word_boundary(data_dir, tmp_path, option):
    docs = one_sentence_per_line(data_dir)
    tokenizer = trained(option, docs, tmp_path)
    assert not [t for t in tokenizer.get_vocab() if "\n" in t or "\r" in t or "\t" in t]
    text = "The terms apply.\nThe terms\r\napply.\n\n\tThe end."
    encoding = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.token_to_id("[UNK]") not in encoding.ids
    # Every word ("The" after each line break too) begins with one token the word-start table marks.
    starts = word_start_table(tokenizer)[encoding.ids]
    periods = text.count(".") if option == "wordpiece" else 0  # WordPiece splits "." off as a word of its own
    assert starts.sum() == len(text.split()) + periods, encoding.tokens
    # What transformers loads from the saved folder segments the same way.
    assert AutoTokenizer.from_pretrained(str(tmp_path))(text, add_special_tokens=False)["input_ids"] == encoding.ids
    unks = sum(e.ids.count(tokenizer.token_to_id("[UNK]"))
               for e in tokenizer.encode_batch(docs, add_special_tokens=False))
    assert unks == 0
