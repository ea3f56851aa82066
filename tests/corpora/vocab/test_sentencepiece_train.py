"""sentencepiece-trained vocabularies become tokenizer.json files that segment text as sentencepiece does."""

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer

from corpora.documents import iter_documents
from corpora.vocab.sentencepiece_train import _chunks, bpe_merges
from bertforge.stages import run_stage
@pytest.mark.parametrize("option", ["sp_unigram", "sp_bpe"])
def test_converted_tokenizer_matches_sentencepiece(make_cfg, tmp_path, option):
    folder = run_stage(make_cfg("vocab", [f"tokenizer={option}", "tokenizer.vocab_size=2000"]), "vocab")
    ours = Tokenizer.from_file(str(folder / "tokenizer.json"))
    theirs = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    assert ours.get_vocab_size() == theirs.get_piece_size() == 2000
    assert [theirs.id_to_piece(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    corpus = next((tmp_path / "work" / "corpus").iterdir())
    texts = [d["text"] for d in iter_documents(corpus, "heldout", 5.0)]
    words = [w for text in texts for w in text.split()]
    assert len(words) > 300
    # Same ids (so the same pieces, an unknown character being [UNK] on both sides) for every word and text.
    assert [ours.encode(w, add_special_tokens=False).ids for w in words] == theirs.encode(words)
    assert [e.ids for e in ours.encode_batch(texts, add_special_tokens=False)] == theirs.encode(texts)


def test_merges_rebuild_pieces_in_learning_order():
    vocab = {"<unk>": 0, "▁a": 1, "▁ab": 2, "▁abc": 3, "▁": 4, "a": 5, "b": 6, "c": 7, "bc": 8}
    merges = bpe_merges(vocab, special_ids={0})
    assert merges == [("▁", "a"), ("▁a", "b"), ("▁a", "bc"), ("▁ab", "c"), ("b", "c")]


def test_long_lines_are_cut_below_sentencepiece_limit():
    line = " ".join(["focal"] * 2000)  # 12 kB
    chunks = list(_chunks(line))
    assert len(chunks) > 1 and all(len(c.encode()) <= 4000 for c in chunks)
    assert " ".join(chunks) == line


def test_character_coverage_leaves_the_rarest_characters_to_unk(make_cfg, tmp_path):
    """gaBERT's sentencepiece.sh covers 99.99 % of the characters (tokenizer=sp_wordpiece does too): the rarest
    characters of the Irish text get no piece of their own, where full coverage gives each one."""
    def characters(coverage: str) -> set[str]:
        folder = run_stage(make_cfg("vocab", ["tokenizer=sp_bpe", "tokenizer.vocab_size=2000",
                                              f"tokenizer.character_coverage={coverage}"], tmp_path / "work"), "vocab")
        pieces = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab()
        return {piece.lstrip("▁") for piece in pieces if len(piece.lstrip("▁")) == 1}

    every, most = characters("1.0"), characters("0.9999")
    assert most < every and len(every - most) >= 3, sorted(every - most)
