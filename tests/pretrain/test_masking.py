"""Masking, tested by its statistics on real Irish text: ratio, 80/10/10, whole words for WordPiece,
byte-level BPE and Unigram vocabularies, spans, and the fixed count that keeps shapes static; the
`Masker` that carries a run's settings draws exactly those masks."""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from pretrain.config import MaskingConfig
from pretrain.masking import IGNORE_INDEX, Masker, mask_fixed_count, masked_per_row, unit_starts
from pretrain.word_starts import word_start_table
from tests.conftest import ud_sentences

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPECIAL = torch.arange(5)
SPECIAL_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
CLS, SEP, MASK_ID = 2, 3, 4
SEQ = 128


@pytest.fixture(scope="module")
def irish_texts(data_dir):
    return ud_sentences(data_dir, "UD_Irish-IDT/ga_idt-ud-dev.conllu")


def _train(kind: str, texts) -> Tokenizer:
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=1000, special_tokens=SPECIAL_TOKENS, show_progress=False)
    elif kind == "bytelevel_bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=1000, special_tokens=SPECIAL_TOKENS, unk_token="[UNK]",
                                          show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


@pytest.fixture(scope="module")
def tokenizers_by_kind(irish_texts):
    return {kind: _train(kind, irish_texts) for kind in ("wordpiece", "bytelevel_bpe", "unigram")}


def packed_rows(tok: Tokenizer, texts, rows: int = 256) -> torch.Tensor:
    """Rows as the shards stage writes them: [CLS] then the document stream joined by [SEP]."""
    stream = []
    for encoding in tok.encode_batch(texts, add_special_tokens=False):
        stream += encoding.ids + [SEP]
    stream = np.resize(np.asarray(stream), rows * (SEQ - 1)).reshape(rows, SEQ - 1)  # (rows, seq-1)
    return torch.from_numpy(np.concatenate([np.full((rows, 1), CLS), stream], axis=1))


def maskable_share(ids: torch.Tensor) -> float:
    return (~torch.isin(ids, SPECIAL)).float().mean().item()


def test_fixed_count_hits_the_ratio_over_maskable_tokens(tokenizers_by_kind, irish_texts):
    ids = packed_rows(tokenizers_by_kind["wordpiece"], irish_texts)
    vocab = tokenizers_by_kind["wordpiece"].get_vocab_size()
    for ratio in (0.15, 0.3):
        k = masked_per_row(ratio, SEQ, maskable_share(ids))
        out = mask_fixed_count(ids, k, MASK_ID, vocab, SPECIAL, generator=torch.Generator().manual_seed(0))
        assert out.positions.shape == out.targets.shape == (ids.shape[0], k)  # static: depends on k only
        labels = out.dense_labels()
        assert ((labels != IGNORE_INDEX).sum(1) == k).all()  # positions distinct, exactly k per row
        chosen = labels != IGNORE_INDEX
        assert abs(chosen.sum().item() / (~torch.isin(ids, SPECIAL)).sum().item() - ratio) < 0.005
        assert not torch.isin(ids[chosen], SPECIAL).any()  # [CLS]/[SEP] never chosen
        assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(out.input_ids[~chosen], ids[~chosen])


def test_eighty_ten_ten_split(tokenizers_by_kind, irish_texts):
    ids = packed_rows(tokenizers_by_kind["wordpiece"], irish_texts, rows=1024)
    vocab = tokenizers_by_kind["wordpiece"].get_vocab_size()
    out = mask_fixed_count(ids, 19, MASK_ID, vocab, SPECIAL, generator=torch.Generator().manual_seed(1))
    after = out.input_ids.gather(1, out.positions)
    to_mask = (after == MASK_ID).float().mean().item()
    unchanged = (after == out.targets).float().mean().item()
    assert abs(to_mask - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01  # random draws equal to the original are rare
    assert abs(1 - to_mask - unchanged - 0.1) < 0.01
    assert not torch.isin(after[(after != MASK_ID) & (after != out.targets)], SPECIAL).any()


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_word_start_table_matches_the_tokenizers_words(tokenizers_by_kind, irish_texts, kind):
    tok = tokenizers_by_kind[kind]
    table = word_start_table(tok)
    for encoding in tok.encode_batch(irish_texts[:100], add_special_tokens=False):
        first = [i == 0 or w != encoding.word_ids[i - 1] for i, w in enumerate(encoding.word_ids)]
        assert table[encoding.ids].tolist() == first
    assert table[:5].all()  # special tokens count as starts


def test_word_start_table_for_byte_level_bpe_follows_spaces(tokenizers_by_kind, irish_texts):
    tok = tokenizers_by_kind["bytelevel_bpe"]
    table = word_start_table(tok, padded_size=1024)
    assert table.shape == (1024,)
    agree = total = 0
    for text in irish_texts[:100]:
        encoding = tok.encode(text, add_special_tokens=False)
        for token_id, (start, _) in zip(encoding.ids, encoding.offsets):
            after_space = start == 0 or text[start].isspace() or text[start - 1].isspace()
            agree += table[token_id] == after_space
            total += 1
    assert agree / total > 0.99  # the rest: punctuation pre-split from its word with no space before it


def _partial_words(ids, chosen, starts):
    """Per row: how many words have some but not all of their tokens chosen."""
    counts = []
    for row_ids, row_chosen, row_starts in zip(ids.tolist(), chosen.tolist(), starts.tolist()):
        word, partial = [], 0
        for flag, start, token in zip(row_chosen, row_starts, row_ids):
            if (start or token in (CLS, SEP)) and word:
                partial += 0 < sum(word) < len(word)
                word = []
            if token not in (CLS, SEP):
                word.append(flag)
        partial += bool(word) and 0 < sum(word) < len(word)
        counts.append(partial)
    return counts


@pytest.mark.parametrize("kind", ["wordpiece", "bytelevel_bpe", "unigram"])
def test_whole_word_masking_takes_whole_words(tokenizers_by_kind, irish_texts, kind):
    tok = tokenizers_by_kind[kind]
    ids = packed_rows(tok, irish_texts, rows=64)
    starts = torch.from_numpy(word_start_table(tok))
    out = mask_fixed_count(ids, 19, MASK_ID, tok.get_vocab_size(), SPECIAL, word_starts=starts,
                           generator=torch.Generator().manual_seed(2))
    chosen = out.dense_labels() != IGNORE_INDEX
    assert (chosen.sum(1) == 19).all()
    # At most one word per row is cut, where the fixed count ends; multi-token words are common here.
    assert max(_partial_words(ids, chosen, starts[ids])) <= 1
    plain = mask_fixed_count(ids, 19, MASK_ID, tok.get_vocab_size(), SPECIAL, generator=torch.Generator().manual_seed(2))
    assert sum(_partial_words(ids, plain.dense_labels() != IGNORE_INDEX, starts[ids])) > 3 * len(ids)


def _mean_run_length(chosen: torch.Tensor) -> float:
    runs = lengths = 0
    for row in chosen.int().tolist():
        text = "".join(map(str, row))
        pieces = [p for p in text.split("0") if p]
        runs += len(pieces)
        lengths += sum(map(len, pieces))
    return lengths / runs


def test_span_masking_masks_contiguous_spans_of_the_mean_length(tokenizers_by_kind, irish_texts):
    ids = packed_rows(tokenizers_by_kind["wordpiece"], irish_texts)
    vocab = tokenizers_by_kind["wordpiece"].get_vocab_size()
    runs = {}
    for span in (1.0, 3.0, 6.0):
        out = mask_fixed_count(ids, 19, MASK_ID, vocab, SPECIAL, span_mean_len=span,
                               generator=torch.Generator().manual_seed(3))
        chosen = out.dense_labels() != IGNORE_INDEX
        assert (chosen.sum(1) == 19).all()
        runs[span] = _mean_run_length(chosen)
        if span > 1.0:  # unit lengths are geometric with the configured mean
            starts = unit_starts(ids, None, span, torch.Generator().manual_seed(4))
            assert abs(starts.numel() / starts.sum().item() - span) < 0.1 * span
    # Token masking: runs are mostly single tokens. Spans: runs near the mean; the fixed count cuts the
    # last span of a row and [SEP] cuts others, so long spans come out shorter.
    assert runs[1.0] < 1.3
    assert 2.4 < runs[3.0] < 4.5 and runs[6.0] > runs[3.0] + 0.8


def test_same_seed_same_masks(tokenizers_by_kind, irish_texts):
    ids = packed_rows(tokenizers_by_kind["wordpiece"], irish_texts, rows=8)

    def draw(seed):
        return mask_fixed_count(ids, 19, MASK_ID, 1000, SPECIAL, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7).input_ids, draw(7).input_ids)
    assert not torch.equal(draw(7).input_ids, draw(8).input_ids)


def test_masker_draws_the_runs_masks_at_the_count_it_decides(tokenizers_by_kind, irish_texts):
    tok = tokenizers_by_kind["wordpiece"]
    ids = packed_rows(tok, irish_texts, rows=32)
    starts = torch.from_numpy(word_start_table(tok))
    vocab, share = tok.get_vocab_size(), maskable_share(ids)
    cfg = MaskingConfig(ratio=0.3, replace_with_mask=0.7, replace_with_random=0.2, whole_word=True,
                        span_mean_len=3.0)
    masker = Masker.from_config(cfg, SPECIAL_IDS, vocab, {str(SEQ): share}, starts)  # keys as in the manifest
    assert masker.per_row(SEQ) == masked_per_row(0.3, SEQ, share)
    assert masker.per_row(2 * SEQ) == masked_per_row(0.3, 2 * SEQ, 1.0)  # a length the shards do not list
    for ratio, drawn in ((0.3, masker), (0.15, masker.at_ratio(0.15))):
        expected = mask_fixed_count(ids, masked_per_row(ratio, SEQ, share), MASK_ID, vocab, SPECIAL, 0.7, 0.2,
                                    starts, 3.0, torch.Generator().manual_seed(5))
        got = drawn(ids, torch.Generator().manual_seed(5))
        assert torch.equal(got.positions, expected.positions) and torch.equal(got.input_ids, expected.input_ids)
        assert got.positions.shape[1] == masked_per_row(ratio, SEQ, share)


def test_masker_uses_the_word_table_only_for_whole_word_masking(tokenizers_by_kind, irish_texts):
    tok = tokenizers_by_kind["wordpiece"]
    ids = packed_rows(tok, irish_texts, rows=32)
    starts = torch.from_numpy(word_start_table(tok))
    plain = Masker.from_config(MaskingConfig(), SPECIAL_IDS, tok.get_vocab_size(), {SEQ: 1.0}, starts)
    expected = mask_fixed_count(ids, plain.per_row(SEQ), MASK_ID, tok.get_vocab_size(), SPECIAL,
                                generator=torch.Generator().manual_seed(6))
    assert torch.equal(plain(ids, torch.Generator().manual_seed(6)).positions, expected.positions)
    with pytest.raises(ValueError, match="masking.whole_word=true needs the vocabulary's word-start table"):
        Masker.from_config(MaskingConfig(whole_word=True), SPECIAL_IDS, tok.get_vocab_size(), {SEQ: 1.0})
