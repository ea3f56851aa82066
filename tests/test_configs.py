"""Every primary config and every option of every group composes and validates."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from bertforge.common.errors import ConfigError
from bertforge.experiment import ExperimentConfig, load_config
from tests.conftest import PRIMARY_CONFIGS, compose_raw

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUP_OPTIONS = sorted(
    (group.name, option.stem) for group in CONF.iterdir() if group.is_dir() and not group.name.startswith("_")
    for option in group.glob("*.yaml")
)


@pytest.mark.parametrize("stage", PRIMARY_CONFIGS)
def test_primary_config_composes(stage):
    cfg = load_config(compose_raw(stage, ["paths.data_dir=/data"]))
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.source.inputs and cfg.model.hidden_size % cfg.model.num_heads == 0


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_every_group_option_composes(group, option):
    overrides = ["paths.data_dir=/data", f"{group}={option}"]
    if group in ("source",) and option in ("jsonl", "txt", "parquet", "hf"):
        overrides.append("source.inputs.0.path=/data/x")
    cfg = load_config(compose_raw("run", overrides))
    assert isinstance(cfg, ExperimentConfig)


def test_demo_selects_the_irish_experiment():
    cfg = load_config(compose_raw("demo", ["paths.data_dir=/data"]))
    assert cfg.name == "demo_ga" and cfg.source.name == "ud_irish"
    assert cfg.source.inputs[0].path == "/data/ud/UD_Irish-IDT"


def test_misspelt_override_is_named_while_composing():
    with pytest.raises(ConfigCompositionException, match="tokenizer.vocab_szie"):
        compose_raw("run", ["paths.data_dir=/data", "tokenizer.vocab_szie=100"])


def test_misspelt_key_forced_in_is_named_at_validation():
    raw = compose_raw("run", ["paths.data_dir=/data", "+tokenizer.vocab_szie=100"])
    with pytest.raises(ConfigError, match="tokenizer.vocab_szie"):
        load_config(raw)


def test_misspelt_key_in_a_yaml_file_is_named():
    with pytest.raises(ConfigError, match=r"source.inputs\[0\].txt_unti"):
        load_config({"paths": {"data_dir": "/d", "work_dir": "/w"},
                     "source": {"name": "s", "inputs": [{"path": "/x", "txt_unti": "line"}]}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigCompositionException) as err:
        compose_raw("run", ["paths.data_dir=/data", "training.max_steps=many"])
    assert "training.max_steps" in str(err.value.__cause__)


def test_missing_input_path_is_named():
    raw = compose_raw("run", ["paths.data_dir=/data", "source=jsonl"])
    with pytest.raises(ConfigError, match=r"source.inputs\[0\].path|source.inputs.0.path"):
        load_config(raw)
