"""The whole path on real Irish text: the exported folder is a working transformers model."""

import json
from pathlib import Path

import pytest
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

from bertforge.common.stage_folder import read_manifest
from bertforge.run import run_all
from tests.conftest import QUICK

SECRET = "hf_THIS_IS_NOT_A_REAL_TOKEN_0123456789"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    import os

    from bertforge.experiment import load_config
    from tests.conftest import compose_raw

    work = tmp_path_factory.mktemp("e2e")
    os.environ["HF_TOKEN"] = os.environ["WANDB_API_KEY"] = SECRET  # must never be written anywhere
    try:
        overrides = [o for o in QUICK if o != "logger=csv"] + ["logger=offline"]  # wandb (offline) for real here
        cfg = load_config(compose_raw("run", [f"paths.data_dir={data_dir}", f"paths.work_dir={work}", *overrides]))
        folders = run_all(cfg)
    finally:
        del os.environ["HF_TOKEN"], os.environ["WANDB_API_KEY"]
    return cfg, {k: Path(v) for k, v in folders.items()}, work


def test_exported_folder_loads_and_fills_masks(finished):
    _, folders, _ = finished
    model_dir = folders["publish"] / "model"
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.model_type == "bert" and model.config.vocab_size % 64 == 0
    fill = pipeline("fill-mask", model=str(model_dir), device="cpu")
    predictions = fill(f"Tá an {tokenizer.mask_token} go maith.", top_k=5)
    assert len(predictions) == 5 and all(p["token_str"] for p in predictions)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in model_dir.iterdir()}
    modes = {p.name: p.stat().st_mode & 0o777 for p in model_dir.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"], modes  # not left private (0600) to its writer


def test_loss_fell_and_training_beat_no_training(finished):
    _, folders, _ = finished
    train = read_manifest(folders["pretrain"])["counts"]
    assert train["steps"] == 60 and train["last_loss"] < train["first_loss"] - 0.5
    scores = json.loads((folders["evaluate"] / "metrics.json").read_text())
    assert scores["trained"]["accuracy"] > scores["untrained"]["accuracy"] + 0.02
    assert scores["trained"]["loss"] < scores["untrained"]["loss"]
    assert (folders["pretrain"] / "loss_curve.png").stat().st_size > 1000
    assert list((folders["pretrain"] / "checkpoints").glob("*.ckpt"))
    assert list((folders["pretrain"] / "wandb").glob("offline-run-*"))


def test_model_card_states_data_vocab_and_training(finished):
    cfg, folders, _ = finished
    card = (folders["publish"] / "model" / "README.md").read_text()
    for fact in ("ud_irish", "wordpiece", "60 steps", "language: ga", "fertility", "untrained"):
        assert fact in card


def test_secrets_reach_no_file(finished):
    _, _, work = finished
    for path in work.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path


def test_second_run_reuses_every_stage(finished):
    cfg, folders, _ = finished
    started = {k: read_manifest(v)["started_at"] for k, v in folders.items()}
    again = run_all(cfg)
    assert {k: read_manifest(Path(v))["started_at"] for k, v in again.items()} == started
