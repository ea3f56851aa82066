"""Word tasks see each word as the model saw it in pretraining: the stage's word encoding is the running
text's, whatever the vocabulary, and every subword maps back to the word it spells."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from corpora.config import TokenizerConfig
from corpora.vocab.build import build_untrained, finish
from corpora.vocab.stage import save_hf_tokenizer
from pretrain.config import DownstreamTaskConfig
from pretrain.downstream.batches import encode_words
from pretrain.downstream.readers import read_split
from pretrain.downstream.stage import _tokenizer
from tests.conftest import ud_sentences


def project_tokenizer(data_dir: Path, folder: Path, **family):
    """A vocabulary built as the vocab stage builds it (on English EWT dev), loaded as the downstream
    stage loads a model's tokenizer."""
    cfg = TokenizerConfig(vocab_size=1500, **family)
    raw, trainer = build_untrained(cfg)
    raw.train_from_iterator(ud_sentences(data_dir, "UD_English-EWT/en_ewt-ud-dev.conllu"), trainer)
    save_hf_tokenizer(raw, folder, finish(raw, cfg))
    return _tokenizer(AutoTokenizer, folder)


@pytest.mark.parametrize("family", [
    dict(model="wordpiece"),
    dict(model="bpe", byte_level=True, style="roberta"),  # ByteLevel without a prefix space: "ĠGoogle" in text
    dict(model="unigram"),  # Metaspace
], ids=["wordpiece", "bpe_bytelevel", "unigram"])
def test_words_are_encoded_as_in_running_text(data_dir, tmp_path, family):
    tokenizer = project_tokenizer(data_dir, tmp_path, **family)
    task = DownstreamTaskConfig(name="en", path=str(data_dir / "ud/UD_English-EWT"), train="en_ewt-ud-dev.conllu",
                                test="en_ewt-ud-test.conllu")
    for sentence in read_split(task, "test")[:300]:
        cut = encode_words(tokenizer, sentence, {}, 32)  # and past max_length the running text's cut
        assert cut.input_ids == tokenizer(" ".join(sentence.words), truncation=True, max_length=32)["input_ids"]
        encoded = encode_words(tokenizer, sentence, {}, 512)
        assert encoded.input_ids == tokenizer(" ".join(sentence.words))["input_ids"], sentence.where
        assert encoded.reached == len(sentence.words)
        for i, word in enumerate(sentence.words):  # the subwords mapped to word i spell word i
            pieces = [t for t, w in zip(encoded.input_ids, encoded.word_of_token, strict=True) if w == i]
            # (WordPiece decodes "e-mail" as "e - mail": spaces are not compared)
            assert tokenizer.decode(pieces).replace(" ", "") == word, sentence.where
