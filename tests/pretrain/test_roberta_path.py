"""A RoBERTa-style path (byte-level BPE with <s> </s> <mask>, RoBERTa layout) runs end to end:
later stages find special tokens by role, not by BERT's names."""

import json
from pathlib import Path

from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

from bertforge.common.stage_folder import read_manifest
from bertforge.run import run_all
from tests.conftest import QUICK


def test_roberta_style_vocabulary_and_model(make_cfg):
    overrides = [*QUICK, "training.max_steps=10", "optim.warmup_steps=2", "checkpoint.every_n_steps=10",
                 "tokenizer=bpe_bytelevel", "tokenizer.vocab_size=1000", "model.arch=roberta",
                 "model.max_position_embeddings=128"]
    folders = run_all(make_cfg("run", overrides))
    fmt = read_manifest(Path(folders["shards"]))["format"]
    assert fmt["special_ids"] == {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 4}
    model_dir = Path(folders["publish"]) / "model"
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    assert model.config.model_type == "roberta" and model.config.pad_token_id == 1
    predictions = pipeline("fill-mask", model=str(model_dir), device="cpu")("Tá an <mask> go maith.", top_k=3)
    assert len(predictions) == 3
    # the tokenizer cuts where the model's positions end (RoBERTa's table is pad_token_id + 1 rows longer)
    assert model.config.max_position_embeddings == 128 + 2
    assert AutoTokenizer.from_pretrained(model_dir).model_max_length == 128
    # a class transformers 4.x has too (5.x writes its own TokenizersBackend, which 4.x cannot load)
    assert json.loads((model_dir / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
