"""A tiny BERT with a real WordPiece vocabulary (trained here on the task texts), made in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ud_sentences


def task_texts(data_dir: Path) -> list[str]:
    texts = ud_sentences(data_dir, "UD_Irish-IDT/ga_idt-ud-dev.conllu")
    ner = (data_dir / "science/ner/NCBI-disease-IOB/train.tsv").read_text(encoding="utf-8").splitlines()
    texts += [" ".join(line.split("\t")[0] for line in ner[i:i + 30]) for i in range(0, 20000, 30)]
    tos = data_dir / "legal/tos_unfair_clauses_en/sentences"
    texts += [line for f in sorted(tos.iterdir())[:10] for line in f.read_text(encoding="utf-8").splitlines()]
    return texts


@pytest.fixture(scope="session")
def tiny_encoder(data_dir, tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_encoder")
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    raw.train_from_iterator(task_texts(data_dir), trainers.WordPieceTrainer(vocab_size=2000, special_tokens=special))
    tokenizer = BertTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    from tokenizers import processors
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))])
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    BertForMaskedLM(config).save_pretrained(folder)
    return folder
