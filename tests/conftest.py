"""Shared fixtures: the real data folder, and configs composed exactly as the CLI composes them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from bertforge.experiment import ExperimentConfig, load_config

REPO = Path(__file__).resolve().parents[1]
PRIMARY_CONFIGS = ["corpus", "vocab", "shards", "pretrain", "evaluate", "publish", "run", "demo"]

os.environ.setdefault("WANDB_MODE", "offline")  # tests run wandb for real, offline
os.environ.setdefault("WANDB_SILENT", "true")


def find_data_dir() -> Path | None:
    for candidate in (os.environ.get("BERTFORGE_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "ud" / "UD_Irish-IDT").is_dir():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = find_data_dir()
    if found is None:
        pytest.fail("real test data not found: set BERTFORGE_DATA to the folder holding ud/UD_Irish-IDT "
                    "(in the bertforge workspace, ../shared/data)")
    return found


def compose_raw(stage: str, overrides: list[str] | None = None):
    with initialize_config_module(config_module="bertforge_conf", version_base=None):
        return compose(config_name=stage, overrides=overrides or [])


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """Compose a stage config with overrides, pointed at real data and a fresh work folder."""

    def make(stage: str = "run", overrides: list[str] | None = None, work_dir: Path | None = None
             ) -> ExperimentConfig:
        base = [f"paths.data_dir={data_dir}", f"paths.work_dir={work_dir or tmp_path / 'work'}"]
        return load_config(compose_raw(stage, base + (overrides or [])))

    return make


# A few steps of the demo experiment: enough to see the loss fall, quick on 2 CPU cores.
QUICK = ["experiment=demo_ga", "training.max_steps=60", "optim.warmup_steps=10", "logger.log_every_n_steps=5",
         "checkpoint.every_n_steps=60", "logger=csv"]
