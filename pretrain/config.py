"""Typed configs of the model side: architecture, masking, optimiser, the training schedule, the
hardware it runs on, and the evaluate and publish stages.

Each section is one Hydra config group or key block; `bertforge.experiment` composes them with the
data side's sections into the one experiment the command line validates.
"""

from __future__ import annotations

from dataclasses import dataclass, field


FROM_SCRATCH = ("init_from", "unset")  # keys a continued run takes from its checkpoint instead
CONTINUED = ("init_from", "set")


@dataclass
class ModelConfig:
    """Architecture, built with transformers so every checkpoint is a plain HF model."""

    name: str = field(default="tiny", metadata={"hashed": False})
    """A label (the model config group's name): the keys below decide the model."""
    arch: str = field(default="bert", metadata={"used_when": FROM_SCRATCH})
    """bert (BertForMaskedLM), roberta (RobertaForMaskedLM) or modernbert (ModernBertForMaskedLM)."""
    hidden_size: int = field(default=128, metadata={"used_when": FROM_SCRATCH})
    num_layers: int = field(default=2, metadata={"used_when": FROM_SCRATCH})
    num_heads: int = field(default=2, metadata={"used_when": FROM_SCRATCH})
    intermediate_size: int = field(default=512, metadata={"used_when": FROM_SCRATCH})
    max_position_embeddings: int = field(default=512, metadata={"used_when": FROM_SCRATCH})
    """Longest usable sequence; every shards length must fit."""
    dropout: float = field(default=0.1, metadata={"used_when": FROM_SCRATCH})
    attention_dropout: float | None = field(default=None, metadata={"hashed_if_set": True,
                                                                    "used_when": FROM_SCRATCH})
    """Dropout on the attention probabilities; empty (null): model.dropout."""
    pad_vocab_to_multiple_of: int = 64
    """Embedding rows rounded up so matmuls hit tensor-core friendly shapes."""
    local_attention_window: int = field(default=128, metadata={"used_when": ("arch", ("modernbert",))})
    """modernbert only: tokens seen by its sliding-window attention layers."""
    init_from: str = field(default="", metadata={"hashed": False})
    """Continued pretraining: start from this checkpoint, a Hugging Face model folder, a bertforge pretrain or
    publish stage folder, or a hub id (org/name). Its architecture, size and dropout replace the keys above;
    empty: train from scratch. (Its weights' identity, not this spelling of where they are, names the
    pretrain folder.)"""
    vocab_mode: str = field(default="replace", metadata={"used_when": CONTINUED})
    """With init_from: keep the checkpoint's vocabulary, extend it with tokenizer.extend_tokens domain words,
    or replace it with the vocabulary the vocab stage trains (tokenizer=...)."""
    vocab_transfer: str = field(default="mean", metadata={"used_when": CONTINUED})
    """With init_from, rows of the new embedding matrix: copy (tokens both vocabularies hold copied, the
    rest drawn from the old embeddings' distribution), mean (as copy, and other tokens from the mean of the
    old pieces the old tokenizer splits them into: FVT), or random (every row drawn afresh)."""


@dataclass
class MaskingConfig:
    """Masking: dynamic (drawn anew for every batch on the device) unless `static`."""

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
    static: bool = field(default=False, metadata={"hashed_if_set": True})
    """Google BERT's static masking (gaBERT, LEGAL-BERT): the shards stage draws `dupe_factor` maskings of
    every training row once and stores them; pass p over the data reads masking p mod dupe_factor.
    False (the default): dynamic masking, drawn anew for every batch. Held-out scoring is dynamic either way."""
    dupe_factor: int = field(default=10, metadata={"hashed_if_set": True, "used_when": ("static", (True,))})
    """static only: differently masked copies of every training row (Google's default 10)."""
    max_predictions_per_seq: int = field(default=0, metadata={"hashed_if_set": True})
    """Cap on masked tokens per training row (Google's max_predictions_per_seq: gaBERT 20 at 128, 77 at 512);
    0: no cap, the ratio alone sets the count."""


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
    max_bad_steps: int = 20
    """A step whose gradient norm is not finite (a NaN or inf loss or gradient) is skipped: no update,
    counted in train/skipped_steps. This many in a row stop the run (checked at each log interval)."""
    on_divergence: str = "stop"
    """After max_bad_steps bad steps in a row: stop (with a message naming the step and the last checkpoint),
    or rollback: reload the newest checkpoint from before the bad steps and go on with the learning rate
    times rollback_lr_factor, at most max_rollbacks times (hashed: a rollback changes the weights)."""
    rollback_lr_factor: float = field(default=0.5, metadata={"used_when": ("on_divergence", ("rollback",))})
    max_rollbacks: int = field(default=3, metadata={"used_when": ("on_divergence", ("rollback",))})


@dataclass
class PhaseConfig:
    """One training phase: e.g. 90% of steps at length 128, then 512 (BERT, EstBERT, gaBERT)."""

    seq_len: int = 0
    """Rows of this length (0: shards.seq_len); the shards stage builds every phase's length from the same corpus."""
    fraction: float = 1.0
    """Share of training.max_steps; the fractions of all phases add up to 1."""
    batch_size: int = 0
    """Sequences per optimiser step in this phase; 0 means training.batch_size."""
    tokens_per_batch: int = 0
    """Alternative to batch_size: tokens per optimiser step (must be a multiple of seq_len)."""
    lr: float = 0.0
    """Peak learning rate of this phase; 0 means optim.lr."""
    warmup_steps: int = 0
    """Extra linear re-warm-up at the start of this phase (e.g. after a change of length)."""


@dataclass
class TrainingConfig:
    """What is trained: the experiment's steps, global batch, phases and seed, the same on any hardware."""

    max_steps: int = 1000
    """Optimiser steps over all phases."""
    batch_size: int = 32
    """Sequences per optimiser step over all devices (the global batch)."""
    tokens_per_batch: int = 0
    """Alternative to batch_size: tokens per optimiser step; 0 means use batch_size."""
    phases: list[PhaseConfig] = field(default_factory=list)
    """Empty: one phase at shards.seq_len with the settings above."""
    seed: int = 1234
    """Seeds the initial weights, the data order and every micro-batch's masks and dropout."""
    objective: str = field(default="mlm", metadata={"hashed_if_set": True})
    """mlm (packed rows, masked-LM only), mlm_nsp (BERT: sentence pairs, half with a random next segment,
    + next-sentence prediction) or mlm_sop (ALBERT: pairs, half swapped, + sentence-order prediction). The
    pair objectives train a BertForPreTraining (arch=bert only); the shards stage builds the pairs."""
    embedding_warmup_steps: int = 0
    """Continued pretraining: for this many first steps only the embeddings and the MLM head learn (the
    encoder body stays frozen, its learning rate 0), then everything trains."""


@dataclass
class TrainerConfig:
    """Where training runs: devices, strategy, precision and the micro-batch. Never what is trained,
    so it is left out of the stage hash: switching hardware reuses or resumes the same model."""

    accelerator: str = "cpu"
    """cpu, gpu, or auto (gpu when CUDA is visible)."""
    devices: int = 1
    """Devices (one process each) per node; -1: every visible GPU (or CPU core)."""
    num_nodes: int = 1
    """Machines in the run; more than one needs torchrun or SLURM (launch/)."""
    strategy: str = "auto"
    """auto (one device), ddp (a model copy per device) or fsdp (sharded parameters, GPUs only)."""
    cluster: str = "auto"
    """Who starts the processes: auto (detect), local (Lightning), torchrun, slurm (srun; requeue on SIGUSR1)."""
    fsdp_sharding: str = field(default="FULL_SHARD", metadata={"used_when": ("strategy", ("fsdp",))})
    """fsdp only: FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD or NO_SHARD (torch's ShardingStrategy)."""
    micro_batch_size: int = 0
    """Sequences per device per forward pass; gradients accumulate up to training.batch_size. 0: no accumulation."""
    precision: str = "32"
    """32 on CPU; bf16-mixed on GPUs that support it."""
    peak_tflops: float = 989.0
    """Peak dense TFLOP/s of one device for throughput/mfu (989: H100 SXM bf16)."""
    deterministic: bool = False
    """Deterministic kernels (torch.use_deterministic_algorithms, and CUBLAS_WORKSPACE_CONFIG=:4096:8 for
    cuBLAS where unset), so a resumed GPU run can repeat the uninterrupted one bit for bit; slower on GPUs.
    CPU runs are deterministic without it."""


@dataclass
class CheckpointConfig:
    """When the pretrain stage saves its resumable state (left out of the stage hash)."""

    every_n_steps: int = 500
    keep_last: int = 2
    """Periodic checkpoints kept (the newest ones; last.ckpt besides): a corrupt newest one falls back to
    the one before it."""
    pin_steps: list[int] = field(default_factory=list)
    """Steps whose checkpoint is kept for good as checkpoints/pinned-step<N>.ckpt, whatever keep_last says
    (e.g. [10000, 50000] to continue or compare from there later)."""
    resume: bool = True
    """A rerun of the same command resumes an interrupted run from its newest checkpoint; false starts over
    (the interrupted attempt's folder is set aside, not deleted)."""


@dataclass
class ImplConfig:
    """Speed switches. They must not change the maths beyond numerical tolerance."""

    name: str = "default"
    compile: bool = False
    """torch.compile the forward and loss with static shapes (one compile per phase length)."""
    compile_backend: str = "inductor"
    attention: str = "sdpa"
    """sdpa: fused kernels (flash/cuDNN on GPUs), called outside torch.compile's graph; sdpa_compiled: SDPA traced
    into the compiled graph; eager: the reference implementation. Both SDPA options pass no mask for rows without
    padding, so the flash kernel can run."""
    bf16_layer_norm: bool = False
    """Under bf16-mixed precision, layer norms take and return bf16 instead of autocast's fp32, so the residual
    stream stays in bf16 and the memory-bound norm, dropout and residual kernels move half the bytes (the norm
    itself still computes in fp32). It changes rounding, not the model; its checkpoints are the same format."""
    num_workers: int = 0
    matmul_precision: str = "high"
    """torch.set_float32_matmul_precision: high allows TF32 on GPUs."""
    cpu_threads: int = 0
    """torch intra-op threads; 0 keeps torch's default (all cores). 1 avoids thread thrashing on a busy, shared CPU."""


@dataclass
class LoggerConfig:
    """What a run records and how often: metrics, held-out checks, the progress bar (left out of the hash)."""

    wandb: bool = False
    """Also log to wandb (logger=offline): offline unless a WANDB_API_KEY is set; a CSV log is always written."""
    project: str = "bertforge"
    log_every_n_steps: int = 10
    """Metrics are read from the device (one host sync) only this often."""
    val_every_n_steps: int = 0
    """Held-out masked loss/accuracy at masking.eval_ratio every this many steps (and at the end); 0: never."""
    val_batches: int = 4
    """Held-out rows per validation, in global batches (training.batch_size rows each, the first phase's; scored a
    micro-batch at a time): always the same rows and masks, on any hardware. 0: every held-out row."""
    progress_bar: bool = True
    """A progress bar over optimiser steps with loss, tokens/s and ETA."""
    log_data_positions: bool = False
    """Each rank appends the stream positions it trained on to data_positions/rank<r>.tsv (an audit)."""


@dataclass
class EvaluateConfig:
    checkpoint: str = ""
    """An HF MLM folder to score instead of this experiment's own model; it must share the vocabulary."""
    mask_ratio: float = 0.15
    seed: int = 0
    """Fixed masking seed so every checkpoint is scored on the same masked positions."""
    batch_size: int = field(default=64, metadata={"hashed": False})
    """Rows per forward pass: memory only (the masks, and so the scores, do not depend on it), so not hashed."""
    max_rows: int = 0
    """0 means every held-out row."""
    mask_draws: int = 8
    """Independent maskings of every held-out row (more masked tokens, a steadier score)."""


@dataclass
class DownstreamTaskConfig:
    """One fine-tuning task: what to predict, from which files, scored how (see conf/downstream/)."""

    name: str = ""
    """Names the task in metrics.json, the model card and sweep tables (e.g. ga_upos)."""
    type: str = "upos"
    """upos, xpos or feats (word tagging, accuracy), parse (biaffine heads and labels, UAS/LAS),
    ner (entity-level F1) or classify (one label or several per text, macro and micro F1)."""
    format: str = "conllu"
    """conllu (UD treebank), iob (token<sep>...<sep>tag per line, blank line between sentences),
    tos (CLAUDETTE unfair-clause folders: sentences/, tags/, fold lists) or jsonl (a text and a label field)."""
    path: str = ""
    """The file or folder holding the data; the split keys below are relative to it."""
    train: str = ""
    """conllu/iob: the file; tos: the fold list of documents; jsonl: the value of `split_field`."""
    dev: str = ""
    """As `train`; empty: no dev split, so a fixed number of epochs and no early stopping."""
    test: str = ""
    scheme: str = field(default="iob2", metadata={"used_when": ("format", ("iob",))})
    """iob2 (B- opens every entity; an I- after O or another type is an error) or iob1 (I- opens one,
    B- only splits adjacent entities of one type: converted to iob2 when read)."""
    text_field: str = field(default="text", metadata={"used_when": ("format", ("jsonl",))})
    label_field: str = field(default="label", metadata={"used_when": ("format", ("jsonl",))})
    split_field: str = field(default="split", metadata={"used_when": ("format", ("jsonl",))})
    multi_label: bool = field(default=False, metadata={"used_when": ("type", ("classify",))})
    """Each text carries a list of labels (sigmoid per label) instead of exactly one (softmax)."""
    unseen_labels: str = "error"
    """A dev/test label that train never has: error (naming file and line), or score_as_wrong (kept, can never
    be predicted, counted in metrics.json)."""


@dataclass
class DownstreamConfig:
    """Fine-tune the model on real tasks and score it on their test splits, beside an untrained twin."""

    tasks: list[DownstreamTaskConfig] = field(default_factory=list)
    checkpoint: str = ""
    """Any HF encoder folder with a fast tokenizer to score instead of this experiment's own model."""
    references: dict[str, str] = field(default_factory=dict)
    """name -> another HF encoder (folder, bertforge stage folder or hub id) scored with the same recipe,
    e.g. an existing BERT for the language: +downstream.references.minilm=/path/to/model."""
    random_init: bool = True
    """Also score the same architecture and tokenizer untrained: the floor every score is read against."""
    seeds: int = 3
    """Fine-tuning runs per model and task (seeds 0..n-1): mean and standard deviation."""
    epochs: int = 10
    lr: float = 5e-5
    head_lr: float = 1e-3
    """The task head starts from nothing and learns faster than the pretrained encoder."""
    batch_size: int = 16
    max_length: int = 128
    """Subword tokens per example; words beyond it are scored as wrong and counted, texts cut."""
    warmup_share: float = 0.1
    weight_decay: float = 0.01
    patience: int = 3
    """Epochs without a better dev score before stopping (tasks with a dev split)."""
    pooling: str = "first"
    """A word's vector: its first subword (first) or the mean of its subwords (mean)."""
    max_train_examples: int = 0
    """0 means all; a cap for quick looks, stated in metrics.json."""
    max_eval_examples: int = 0


@dataclass
class PublishConfig:
    """The model card (hashed: it is part of the published folder) and where the folder is pushed (not hashed:
    pushing uploads a finished folder, so `publish.push_to_hub=true` after a local publish reuses it)."""

    model_name: str = ""
    """Name in the model card; defaults to the experiment name."""
    language: str = ""
    license: str = "apache-2.0"
    datasets: list[str] = field(default_factory=list)
    """Hub dataset ids the model was trained on, for the card's front matter."""
    tags: list[str] = field(default_factory=list)
    """Extra card tags (bertforge, masked-lm and the language are always there)."""
    widget_examples: int = 3
    """Fill-mask widget sentences on the card: held-out sentences with one word masked."""
    # -- pushing: none of these change the published folder
    push_to_hub: bool = False
    """Upload the published folder (and, with push_every_n_steps, pretrain checkpoints) to `repo_id`. The
    token comes only from huggingface_hub's own sources: HF_TOKEN or `hf auth login`."""
    repo_id: str = ""
    """org/name on the hub."""
    private: bool = True
    """Visibility of a repo this run creates (an existing repo keeps its own)."""
    revision: str = "main"
    """Branch the final model goes to (created from main when it does not exist)."""
    endpoint: str = ""
    """Hub server; empty: HF_ENDPOINT, else huggingface.co."""
    push_every_n_steps: int = 0
    """During pretrain, push the HF export every this many steps to a branch step-000100, ...; 0: never."""
    dry_run: bool = False
    """Print what would be uploaded (files, sizes, repo, revision) and upload nothing; needs no token."""
