"""The typed experiment config. Every entry point validates Hydra's composed config against it.

Code below the entry points receives these dataclasses, never a raw DictConfig, so a misspelt
key fails once, at start-up, with its full name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass
from typing import get_args, get_origin, get_type_hints

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, ValidationError

from corpora.config import CorpusConfig, FiltersConfig, ShardsConfig, SourceConfig, TokenizerConfig
from corpora.errors import ConfigError


@dataclass
class PathsConfig:
    data_dir: str = MISSING
    """Folder of raw data (the demo reads ud/UD_Irish-IDT from it); set BERTFORGE_DATA."""
    work_dir: str = MISSING
    """Where stage folders go; set BERTFORGE_WORK or override paths.work_dir."""


@dataclass
class ModelConfig:
    """Architecture, built with transformers so every checkpoint is a plain HF model."""

    name: str = "tiny"
    arch: str = "bert"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    dropout: float = 0.1
    pad_vocab_to_multiple_of: int = 64
    """Embedding rows rounded up so matmuls hit tensor-core friendly shapes."""


@dataclass
class MaskingConfig:
    """Dynamic masking, drawn anew for every batch."""

    ratio: float = 0.15
    replace_with_mask: float = 0.8
    replace_with_random: float = 0.1
    """The rest of the chosen tokens are left unchanged (BERT's 80/10/10)."""


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    """Decoupled; not applied to biases and LayerNorm weights."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: str = "linear"
    """linear: warmup then linear decay to zero at max_steps."""
    grad_clip: float = 1.0


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    batch_size: int = 32
    """Sequences per optimiser step."""
    accelerator: str = "auto"
    devices: int = 1
    """Devices (one process each) per node; -1: every visible GPU (or CPU core)."""
    num_nodes: int = 1
    """Machines in the run; more than one needs torchrun or SLURM (launch/)."""
    strategy: str = "auto"
    """auto (one device), ddp (a model copy per device) or fsdp (sharded parameters, GPUs only)."""
    cluster: str = "auto"
    """Who starts the processes: auto (detect), local (Lightning), torchrun, slurm (srun; requeue on SIGUSR1)."""
    fsdp_sharding: str = "FULL_SHARD"
    """fsdp only: FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD or NO_SHARD (torch's ShardingStrategy)."""
    log_data_positions: bool = False
    """Each rank appends the stream positions it trained on to data_positions/rank<r>.tsv (an audit)."""
    precision: str = "32"
    """32 on CPU; bf16-mixed on GPUs that support it."""
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 500
    seed: int = 1234


@dataclass
class ImplConfig:
    """Speed switches. They must not change the maths beyond numerical tolerance."""

    name: str = "default"
    compile: bool = False
    attention: str = "sdpa"
    num_workers: int = 0
    matmul_precision: str = "high"


@dataclass
class LoggerConfig:
    wandb: bool = True
    """wandb runs offline unless WANDB_MODE says otherwise; a CSV log is always written beside it."""
    project: str = "bertforge"


@dataclass
class EvaluateConfig:
    checkpoint: str = ""
    """An HF MLM folder to score instead of this experiment's own model; it must share the vocabulary."""
    mask_ratio: float = 0.15
    seed: int = 0
    """Fixed masking seed so every checkpoint is scored on the same masked positions."""
    batch_size: int = 64
    max_rows: int = 0
    """0 means every held-out row."""


@dataclass
class PublishConfig:
    model_name: str = ""
    """Name in the model card; defaults to the experiment name."""
    language: str = ""
    license: str = "apache-2.0"


@dataclass
class ExperimentConfig:
    name: str = "default"
    paths: PathsConfig = field(default_factory=PathsConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    impl: ImplConfig = field(default_factory=ImplConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)


def load_config(cfg: DictConfig | dict) -> ExperimentConfig:
    """Validate a composed config against `ExperimentConfig` and return the typed object.

    Unknown keys, wrong types and missing values raise `ConfigError` naming the full key.
    """
    raw = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    raw = OmegaConf.masked_copy(raw, [k for k in raw if k != "hydra"]) if "hydra" in raw else raw
    unknown = _unknown_keys(OmegaConf.to_container(raw, resolve=False), ExperimentConfig)
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}: check its spelling against conf/ "
                          f"(the known keys of each section are in pretrain/config.py)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), raw)
        typed = OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        raise ConfigError(f"unknown config key {err.full_key!r}: check its spelling against conf/ "
                          f"(the known keys of that section are in pretrain/config.py)") from None
    except MissingMandatoryValue as err:
        hint = " (set the environment variable BERTFORGE_DATA to the data folder)" \
            if err.full_key == "paths.data_dir" else ""
        raise ConfigError(f"config key {err.full_key!r} has no value{hint}") from None
    except ValidationError as err:
        raise ConfigError(f"config key {err.full_key!r}: {err.msg}") from None
    return typed


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


def section(cfg: ExperimentConfig, *names: str) -> dict:
    """Plain-dict copy of some config sections, for hashing stage folders and writing manifests."""
    return {name: OmegaConf.to_container(OmegaConf.structured(getattr(cfg, name))) for name in names}


def register_schema() -> None:
    """Make `ExperimentConfig` the base of every primary config (conf/base.yaml names it), so every
    key exists with its default and Hydra rejects a misspelt override while composing."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="bertforge_schema", node=ExperimentConfig)


register_schema()
