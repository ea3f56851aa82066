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


@pytest.mark.parametrize("option", list(FAMILIES) + ["bpe_bytelevel"])
def test_whole_word_units_never_join_the_words_around_a_line_break(data_dir, tmp_path, option):
    """Whole-word masking takes a word-start token and the tokens up to the next one as one unit. Byte-level BPE
    gives "\\n" and "\\t" tokens of their own ("Ċ", "ĉ") and the word after them no "Ġ": that word must still get
    a unit of its own, not join the word before the break ("Ġanseo . Ċ BhÃŃ" as one unit)."""
    docs = one_sentence_per_line(data_dir)
    if option == "bpe_bytelevel":
        tokenizer, trainer = build_untrained(TokenizerConfig(vocab_size=600, model="bpe", byte_level=True))
        tokenizer.train_from_iterator(docs, trainer=trainer)
    else:
        tokenizer = trained(option, docs, tmp_path)
    table = word_start_table(tokenizer)
    for text in ["The terms apply.\nThe terms\r\napply.\n\n\tThe end.", *docs[:20]]:
        encoding = tokenizer.encode(text, add_special_tokens=False)
        starts = [i for i, token_id in enumerate(encoding.ids) if i == 0 or table[token_id]]
        units = [text[encoding.offsets[a][0]:encoding.offsets[b - 1][1]]
                 for a, b in zip(starts, starts[1:] + [len(encoding.ids)])]
        assert [unit for unit in units if len(unit.split()) > 1] == []
