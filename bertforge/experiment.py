"""One experiment: every config section of both sides, validated once where Hydra hands it over.

Code below the command line receives these dataclasses (each stage only the sections it uses),
never a raw DictConfig, so a misspelt key fails once, at start-up, with its full name.

Where a key lives decides what it does to the stage folders: the stage graph
(`bertforge.stages`) hashes the sections that change an artefact; `trainer` (hardware), `impl`
(speed), `logger`, `checkpoint`, `corpus` (how the corpus stage runs) and `paths` are never
hashed, so switching them reuses or resumes the same work.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import MISSING as MISSING_FIELD, dataclass, field, fields, is_dataclass
from typing import get_args, get_origin, get_type_hints

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, MissingMandatoryValue, ValidationError

from bertforge.common.errors import ConfigError
from corpora.config import CorpusConfig, FiltersConfig, ShardsConfig, SourceConfig, TokenizerConfig
from pretrain.config import (CheckpointConfig, DownstreamConfig, EvaluateConfig, ImplConfig, LoggerConfig,
                             MaskingConfig, ModelConfig, OptimConfig, PublishConfig, TrainerConfig, TrainingConfig)


@dataclass
class PathsConfig:
    data_dir: str = MISSING
    """Folder of raw data (the demo reads ud/UD_Irish-IDT from it); set BERTFORGE_DATA."""
    work_dir: str = MISSING
    """Where stage folders go; set BERTFORGE_WORK or override paths.work_dir."""


@dataclass
class ExperimentConfig:
    name: str = "default"
    paths: PathsConfig = field(default_factory=PathsConfig)
    # data side
    source: SourceConfig = field(default_factory=SourceConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    # model side: the maths
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # model side: where and how fast it runs, and what it records
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    impl: ImplConfig = field(default_factory=ImplConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # later stages
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)


SCHEMA_FILES = "corpora/config.py, pretrain/config.py and bertforge/experiment.py"


def load_config(cfg: DictConfig | dict) -> ExperimentConfig:
    """Validate a composed config against `ExperimentConfig` and return the typed object.

    Unknown keys, wrong types and missing values raise `ConfigError` naming the full key.
    """
    raw = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    raw = OmegaConf.masked_copy(raw, [k for k in raw if k != "hydra"]) if "hydra" in raw else raw
    raw = _absolute_data_dir(raw)
    unknown = _unknown_keys(OmegaConf.to_container(raw, resolve=False), ExperimentConfig)
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}: check its spelling against conf/ "
                          f"(the known keys of each section are in {SCHEMA_FILES})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), raw)
        typed = OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        raise ConfigError(f"unknown config key {err.full_key!r}: check its spelling against conf/ "
                          f"(the known keys of each section are in {SCHEMA_FILES})") from None
    except MissingMandatoryValue as err:
        hint = " (set the environment variable BERTFORGE_DATA to the data folder)" \
            if err.full_key == "paths.data_dir" else ""
        raise ConfigError(f"config key {err.full_key!r} has no value{hint}") from None
    except ValidationError as err:
        raise ConfigError(f"config key {err.full_key!r}: {err.msg}") from None
    except InterpolationResolutionError as err:  # e.g. ${oc.env:X} without X: Hydra would print a traceback
        reason = err.msg.splitlines()[0]
        unset = re.search(r"Environment variable '([^']+)' not found", reason)
        if unset:  # e.g. a model card's reproduce config reads a local model.init_from so (the card says from where)
            reason = f"the environment variable {unset[1]} is not set: set it before the command"
        raise ConfigError(f"config key {err.full_key!r}: {reason}") from None
    return typed


def _absolute_data_dir(raw: DictConfig) -> DictConfig:
    """A copy with paths.data_dir made absolute and normalised, before the paths built from it are resolved.
    Stage folders hash those paths (source inputs, downstream task files), so `../shared/data`,
    `$PWD/../shared/data` and `/abs/shared/data` must name one folder, not three."""
    data_dir = OmegaConf.select(raw, "paths.data_dir", default=None, throw_on_missing=False)
    if not isinstance(data_dir, str) or not data_dir or "://" in data_dir:  # unset, or a remote file system
        return raw
    canonical = os.path.abspath(os.path.expanduser(data_dir))
    if canonical == data_dir:
        return raw
    raw = copy.deepcopy(raw)
    raw.paths.data_dir = canonical
    return raw


def _unknown_keys(node, schema, prefix: str = "") -> list[str]:
    """Dotted names of keys in `node` that the dataclass `schema` (recursively) does not define."""
    if not (is_dataclass(schema) and isinstance(node, dict)):
        if isinstance(node, list) and get_origin(schema) is list:
            item = get_args(schema)[0]
            return [k for i, child in enumerate(node) for k in _unknown_keys(child, item, f"{prefix[:-1]}[{i}].")]
        return []
    types = get_type_hints(schema)
    found = []
    for key, child in node.items():
        if key not in types:
            found.append(f"{prefix}{key}")
        else:
            found += _unknown_keys(child, types[key], f"{prefix}{key}.")
    return found


def used(rule: tuple, switch_value) -> bool:
    """Whether a field with `metadata={"used_when": rule}` is used, its section's switch holding `switch_value`.
    `rule` is (switch, allowed values), or (switch, "set") / (switch, "unset") for a switch that is used only
    when it is non-empty / empty (e.g. the size keys of `model`, which `model.init_from` replaces)."""
    allowed = rule[1]
    if allowed in ("set", "unset"):
        return bool(switch_value) == (allowed == "set")
    return switch_value in allowed


def _when(section_name: str, rule: tuple, chosen) -> str:
    switch, allowed = rule
    if allowed in ("set", "unset"):
        return f"used only when {section_name}.{switch} is {'' if allowed == 'set' else 'not '}set"
    return f"used only when {section_name}.{switch} is {' or '.join(map(str, allowed))}, not {chosen}"


def unused_keys(section_name: str, schema, values: dict) -> list[str]:
    """Keys of one section set in `values` that its own choice does not use.

    A field says when it is used with `metadata={"used_when": (switch, allowed values)}`, e.g.
    `model.local_attention_window` only with `model.arch=modernbert` (see `used`). `values` is what a YAML file
    or override sets; the switch is read from it, or from the schema default when it is not set.
    """
    defaults = schema()
    found = []
    for f in fields(schema):
        rule = f.metadata.get("used_when")
        if rule is None or f.name not in values:
            continue
        chosen = values.get(rule[0], getattr(defaults, rule[0]))
        if not used(rule, chosen):
            found.append(f"{section_name}.{f.name} ({_when(section_name, rule, chosen)})")
    return found


def unused_settings(cfg: ExperimentConfig, sections: set[str]) -> list[str]:
    """'key=value (used only when ...)' for each key of `sections` set away from its default that the
    section's own choice never reads: it changes nothing, and names no stage folder."""
    found = []

    def walk(value, name: str) -> None:
        for f in fields(value):
            child, rule = getattr(value, f.name), f.metadata.get("used_when")
            default = f.default_factory() if f.default_factory is not MISSING_FIELD else f.default
            if rule is not None and child != default and not used(rule, getattr(value, rule[0])):
                found.append(f"{name}.{f.name}={child} ({_when(name, rule, getattr(value, rule[0]))})")
            elif is_dataclass(child) and not isinstance(child, type):
                walk(child, f"{name}.{f.name}")

    for section in sorted(sections):
        walk(getattr(cfg, section), section)
    return found


def register_schema() -> None:
    """Make `ExperimentConfig` the base of every primary config (conf/base.yaml names it), so every
    key exists with its default and Hydra rejects a misspelt override while composing."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="bertforge_schema", node=ExperimentConfig)


register_schema()
