"""Every primary config and every option of every group composes and validates."""

import os
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


# --- The experiment is hardware-free ------------------------------------------------------------

HARDWARE = sorted(option.stem for option in (CONF / "trainer").glob("*.yaml"))


def test_every_hardware_option_trains_the_same_experiment(data_dir):
    """One experiment on every `trainer=` option: the same steps, global batch and stage folders."""
    from bertforge.stages import plan

    seen = {}
    for hardware in HARDWARE:
        cfg = load_config(compose_raw("run", [f"paths.data_dir={data_dir}", "paths.work_dir=/w",
                                              "experiment=demo_ga", f"trainer={hardware}"]))
        folders = {step.stage.name: step.output.folder for step in plan(cfg, "publish")}
        seen[hardware] = (cfg.training, folders)
    first = next(iter(seen.values()))
    assert first[0].max_steps == 500 and first[0].batch_size == 32
    assert all(value == first for value in seen.values()), {k: v[0] for k, v in seen.items()}
    assert len(HARDWARE) >= 6 and "gpu" in HARDWARE and "multinode_fsdp" in HARDWARE


def test_a_key_of_the_experiment_changes_the_model_folder_and_hardware_keys_do_not(data_dir):
    from bertforge.stages import plan

    def pretrain_folder(*overrides):
        cfg = load_config(compose_raw("pretrain", [f"paths.data_dir={data_dir}", "paths.work_dir=/w", *overrides]))
        return {step.stage.name: step.output.folder for step in plan(cfg, "pretrain")}

    base = pretrain_folder()
    for hardware_or_bookkeeping in ("trainer.micro_batch_size=8", "trainer.precision=bf16-mixed", "impl=fast",
                                    "logger.log_every_n_steps=1", "checkpoint.every_n_steps=7", "corpus.tasks=4"):
        assert pretrain_folder(hardware_or_bookkeeping) == base, hardware_or_bookkeeping
    changed = pretrain_folder("training.max_steps=999")
    assert changed["pretrain"] != base["pretrain"] and changed["shards"] == base["shards"]
    phased = pretrain_folder("training=two_phase")
    assert phased["shards"] != base["shards"]  # the 512 phase needs rows of 512


def test_the_data_folder_however_spelled_names_the_same_stage_folders(data_dir, monkeypatch, tmp_path):
    """BERTFORGE_DATA=../shared/data, $PWD/../shared/data and the absolute path are one folder, so one corpus."""
    from bertforge.stages import plan

    absolute = Path(data_dir).resolve()
    monkeypatch.chdir(tmp_path)
    spellings = [str(absolute), os.path.relpath(absolute, tmp_path), f"{tmp_path}/{os.path.relpath(absolute, tmp_path)}",
                 f"{absolute}/ud/../"]
    seen = set()
    for spelled in spellings:
        cfg = load_config(compose_raw("run", [f"paths.data_dir={spelled}", "paths.work_dir=/w", "experiment=demo_ga",
                                              "downstream=ud_irish"]))
        assert cfg.paths.data_dir == str(absolute) and cfg.source.inputs[0].path.startswith(str(absolute))
        seen.add(tuple(str(step.output.folder) for step in plan(cfg, "downstream")))
    assert len(seen) == 1


# --- One source of defaults --------------------------------------------------------------------

def _section_schemas() -> dict[str, type]:
    """Config group -> the dataclass of the section it fills (`executor` fills corpus.executor)."""
    from dataclasses import fields

    from corpora.config import ExecutorConfig

    schemas = {f.name: f.type for f in fields(ExperimentConfig)}
    resolved = {name: getattr(ExperimentConfig(), name).__class__ for name in schemas}
    return resolved | {"executor": ExecutorConfig}


def _group_files():
    schemas = _section_schemas()
    for group in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name in schemas):
        for path in sorted(group.glob("*.yaml")):
            yield group.name, schemas[group.name], path


def _option_values(path: Path) -> tuple[dict, dict]:
    """(what this file sets, what it inherits from the options it names in `defaults`), unresolved."""
    from omegaconf import OmegaConf

    own = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    inherited: dict = {}
    for parent in own.pop("defaults", []):
        if isinstance(parent, str) and parent != "_self_":
            parent_own, parent_inherited = _option_values(path.parent / f"{parent}.yaml")
            inherited = OmegaConf.to_container(OmegaConf.merge(inherited, parent_inherited, parent_own))
    return own, inherited


def repeated_defaults(values: dict, schema: type, base: dict | None = None, prefix: str = "") -> list[str]:
    """Keys in `values` whose value equals the one `base` (default: `schema`'s defaults) already has."""
    from typing import get_args, get_origin, get_type_hints

    from omegaconf import OmegaConf

    base = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False) if base is None else base
    types = get_type_hints(schema)
    found = []
    for key, value in values.items():
        if key == "name":  # an option's name says which option it is
            continue
        kind, expected = types[key], base.get(key)
        if isinstance(value, dict) and hasattr(kind, "__dataclass_fields__"):
            found += repeated_defaults(value, kind, expected, f"{prefix}{key}.")
        elif isinstance(value, list) and get_origin(kind) is list and \
                hasattr(get_args(kind)[0], "__dataclass_fields__"):
            for index, entry in enumerate(value):
                found += repeated_defaults(entry, get_args(kind)[0], None, f"{prefix}{key}[{index}].")
        elif expected == value and value != "???":  # ??? marks a value the user must give
            found.append(f"{prefix}{key}: {value!r}")
    return found


@pytest.mark.parametrize("group,schema,path", list(_group_files()),
                         ids=[f"{g}/{p.stem}" for g, _, p in _group_files()])
def test_group_option_states_only_what_it_changes(group, schema, path):
    from omegaconf import OmegaConf

    from bertforge.experiment import unused_keys

    own, inherited = _option_values(path)
    base = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), inherited), resolve=False)
    repeated = repeated_defaults(own, schema, base, f"{group}.")
    assert not repeated, f"{path.relative_to(CONF)} repeats values it already has (the schema's or its parent's): " \
                         f"{repeated}"
    everything = OmegaConf.to_container(OmegaConf.merge(inherited, own))
    assert not unused_keys(group, schema, everything), \
        f"{path.relative_to(CONF)} sets keys its own choice never reads: {unused_keys(group, schema, everything)}"


def test_the_defaults_check_catches_a_repeated_default_and_an_unused_key():
    from bertforge.experiment import unused_keys
    from pretrain.config import ModelConfig

    assert repeated_defaults({"hidden_size": 128, "num_layers": 4}, ModelConfig, prefix="model.") == \
        ["model.hidden_size: 128"]
    assert unused_keys("model", ModelConfig, {"arch": "bert", "local_attention_window": 64})
    assert not unused_keys("model", ModelConfig, {"arch": "modernbert", "local_attention_window": 64})
