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
from bertforge.common.errors import ConfigError


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
    """bert (BertForMaskedLM), roberta (RobertaForMaskedLM) or modernbert (ModernBertForMaskedLM)."""
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    """Longest usable sequence; every shards length must fit."""
    dropout: float = 0.1
    pad_vocab_to_multiple_of: int = 64
    """Embedding rows rounded up so matmuls hit tensor-core friendly shapes."""
    local_attention_window: int = 128
    """modernbert only: tokens seen by its sliding-window attention layers."""


@dataclass
class MaskingConfig:
    """Dynamic masking, drawn anew for every batch on the device."""

    ratio: float = 0.15
    """Share of non-special tokens masked in training (a fixed count per row, so shapes stay static)."""
    replace_with_mask: float = 0.8
    replace_with_random: float = 0.1
    """The rest of the chosen tokens are left unchanged (BERT's 80/10/10)."""
    whole_word: bool = False
    """Mask whole words, using the vocabulary's word-start table (WordPiece ##, Metaspace, ByteLevel)."""
    span_mean_len: float = 1.0
    """Above 1: mask spans of this geometric mean length (in words when whole_word is on); SpanBERT ~3.8."""
    eval_ratio: float = 0.15
    """Ratio for the held-out loss logged during training (val/loss), independent of the training ratio."""


@dataclass
class OptimConfig:
    name: str = "adamw"
    """adamw (fused where the device supports it) or lamb (layer-wise trust ratio, for large batches)."""
    lr: float = 1e-3
    """Peak learning rate (phases may scale it with their own lr)."""
    weight_decay: float = 0.01
    """Decoupled; not applied to biases and normalisation weights."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: str = "linear"
    """After linear warmup: linear (to min_lr_ratio at max_steps), cosine, wsd (warmup-stable-decay),
    inverse_sqrt, or constant."""
    min_lr_ratio: float = 0.0
    """Floor of the decay as a fraction of the peak (linear, cosine, wsd)."""
    decay_fraction: float = 0.1
    """wsd: share of max_steps spent in the final linear decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 turns clipping off (the norm is still logged)."""


@dataclass
class PhaseConfig:
    """One training phase: e.g. 90% of steps at length 128, then 512 (BERT, EstBERT, gaBERT)."""

    seq_len: int = 128
    """Rows of this length; the shards stage builds every phase's length from the same corpus."""
    fraction: float = 1.0
    """Share of trainer.max_steps; the fractions of all phases add up to 1."""
    batch_size: int = 0
    """Sequences per optimiser step in this phase; 0 means trainer.batch_size."""
    tokens_per_batch: int = 0
    """Alternative to batch_size: tokens per optimiser step (must be a multiple of seq_len)."""
    lr: float = 0.0
    """Peak learning rate of this phase; 0 means optim.lr."""
    warmup_steps: int = 0
    """Extra linear re-warm-up at the start of this phase (e.g. after a change of length)."""


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    """Optimiser steps over all phases."""
    batch_size: int = 32
    """Sequences per optimiser step over all devices (the global batch)."""
    tokens_per_batch: int = 0
    """Alternative to batch_size: tokens per optimiser step; 0 means use batch_size."""
    micro_batch_size: int = 0
    """Sequences per device per forward pass; gradients accumulate up to the global batch. 0: no accumulation."""
    phases: list[PhaseConfig] = field(default_factory=list)
    """Empty: one phase at shards.seq_len with the settings above."""
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
    """Metrics are read from the device (one host sync) only this often."""
    val_every_n_steps: int = 0
    """Held-out masked loss/accuracy at masking.eval_ratio every this many steps (and at the end); 0: never."""
    val_batches: int = 4
    """Held-out batches per validation (always the same rows and masks)."""
    checkpoint_every_n_steps: int = 500
    seed: int = 1234
    peak_tflops: float = 989.0
    """Peak dense TFLOP/s of one device for throughput/mfu (989: H100 SXM bf16)."""
    progress_bar: bool = True
    """A progress bar over optimiser steps with loss, tokens/s and ETA."""


@dataclass
class ImplConfig:
    """Speed switches. They must not change the maths beyond numerical tolerance."""

    name: str = "default"
    compile: bool = False
    """torch.compile the forward and loss with static shapes (one compile per phase length)."""
    compile_backend: str = "inductor"
    attention: str = "sdpa"
    """sdpa (fused kernels, flash on GPUs) or eager (the reference implementation)."""
    num_workers: int = 0
    matmul_precision: str = "high"
    """torch.set_float32_matmul_precision: high allows TF32 on GPUs."""
    cpu_threads: int = 0
    """torch intra-op threads; 0 keeps torch's default (all cores). 1 avoids thread thrashing on a busy, shared CPU."""


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
    mask_draws: int = 8
    """Independent maskings of every held-out row (more masked tokens, a steadier score)."""


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
