"""Pretrain runs on the demo's shards, built once: each test gets a work folder with its own copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import QUICK


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory, data_dir) -> Path:
    """A work folder with the corpus, vocab and shards stages of QUICK (the demo experiment)."""
    from bertforge.stages import run_stage
    from tests.conftest import experiment

    work = tmp_path_factory.mktemp("pretrain-upstream")
    run_stage(experiment("shards", data_dir, work, QUICK), "shards")
    return work


@pytest.fixture
def shards_work(demo_shards, tmp_path) -> Path:
    """A fresh work folder holding a copy of `demo_shards`' stages: pretrain runs start at once."""
    work = tmp_path / "work"
    for stage in ("corpus", "vocab", "shards"):
        shutil.copytree(demo_shards / stage, work / stage)
    return work


SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
SMALL = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, dropout=0.0)


def small_model(arch: str, attention: str = "sdpa", **overrides):
    """A two-layer model of `arch` with fixed initial weights, over a 300-token vocabulary."""
    import torch

    from pretrain.config import ModelConfig
    from pretrain.model import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, **(SMALL | overrides))
    return build_model(cfg, vocab_size=300, pad_token_id=0, seq_len=64, special_ids=SPECIAL, attention=attention)
