"""One experiment on any number of devices: who this process is, how the global batch splits, which
Lightning strategy and cluster environment run it, and clear errors before any process group starts.

The experiment fixes the global batch (sequences per optimiser step); the world size only decides
how it is cut: `global = world_size x micro_batch x accumulation`. The learning-rate schedule counts
optimiser steps, so it is the same on one device or on a cluster.

Three ways a process can be started, each with its own source of truth for rank and world size:

- local: `bertforge pretrain trainer=ddp` on one machine; Lightning starts ranks 1..N-1 itself
  (they inherit LOCAL_RANK/NODE_RANK from rank 0).
- torchrun: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set by torchrun.
- slurm: one task per device under `srun` (launch/slurm/*.sbatch or the Hydra submitit launcher);
  SLURM_* variables; SIGUSR1 stops the run at a step boundary and requeues it (pretrain/preemption.py).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from bertforge.common.errors import ConfigError
from pretrain.config import TrainerConfig

if TYPE_CHECKING:
    import torch

# torch and Lightning are imported inside the functions that need them: the launch checks run for every
# command, also one that only reuses finished stages, and the Hydra callback below loads this module.

CLUSTERS = ("auto", "local", "torchrun", "slurm")
STRATEGIES = ("auto", "ddp", "fsdp")
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_PROCID", "SLURM_LOCALID",
                   "SLURM_NODEID", "SLURM_JOB_NUM_NODES")
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class BatchLayout:
    """How one global batch is cut: every rank runs `accumulation` micro-batches per optimiser step."""

    global_batch_size: int
    micro_batch_size: int
    accumulation: int
    world_size: int

    @property
    def rows_per_rank_step(self) -> int:
        """Sequences one rank reads per optimiser step."""
        return self.micro_batch_size * self.accumulation


def batch_layout(global_batch_size: int, micro_batch_size: int, world_size: int) -> BatchLayout:
    """Derive the gradient accumulation that keeps `global_batch_size` whatever the world size.

    `micro_batch_size` 0 means the largest micro-batch (global / world, no accumulation). Raises
    `ConfigError` naming the keys when the global batch does not split evenly.
    """
    if global_batch_size <= 0 or world_size <= 0 or micro_batch_size < 0:
        raise ConfigError(f"training.batch_size={global_batch_size} and trainer.micro_batch_size={micro_batch_size} "
                          f"must be positive (micro-batch 0 means no accumulation); world size {world_size}")
    micro = micro_batch_size or global_batch_size // world_size
    per_step = world_size * micro
    if micro == 0 or global_batch_size % per_step:
        if global_batch_size % world_size:
            hint = f"make training.batch_size a multiple of the world size {world_size}"
        else:
            per_rank = global_batch_size // world_size
            fits = [m for m in range(1, per_rank + 1) if per_rank % m == 0]
            hint = f"trainer.micro_batch_size values that fit {per_rank} sequences per device: {fits}"
        raise ConfigError(
            f"training.batch_size={global_batch_size} (the global batch) is not divisible by world size "
            f"{world_size} x trainer.micro_batch_size={micro} = {per_step}; {hint}")
    return BatchLayout(global_batch_size, micro, global_batch_size // per_step, world_size)


@dataclass(frozen=True)
class LaunchPlan:
    """What this process is in the run, decided from config and environment before anything starts."""

    cluster: str
    """local, torchrun or slurm (never auto)."""
    accelerator: str
    """cpu or gpu."""
    devices: int
    """Devices (= processes) per node."""
    num_nodes: int
    rank: int

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0


def resolve_accelerator(accelerator: str) -> str:
    """'auto' -> gpu when CUDA is visible, else cpu; 'cuda' is a spelling of gpu."""
    if accelerator == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        return "gpu"
    if accelerator == "cpu":
        return "cpu"
    raise ConfigError(f"trainer.accelerator={accelerator!r}: choose auto, cpu or gpu")


def available_devices(accelerator: str) -> int:
    """GPUs visible to this process, or CPU cores it may use (one gloo process per core at most)."""
    if accelerator == "gpu":
        import torch

        return torch.cuda.device_count()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def detect_cluster(requested: str, env: Mapping[str, str]) -> str:
    """The launcher that started this process: the requested one, or for 'auto' what the environment shows."""
    if requested not in CLUSTERS:
        raise ConfigError(f"trainer.cluster={requested!r}: choose one of {', '.join(CLUSTERS)}")
    if requested != "auto":
        return requested
    if "TORCHELASTIC_RUN_ID" in env and "WORLD_SIZE" in env:
        return "torchrun"
    # The same rule as Lightning's: an interactive `salloc` shell is not a task started by srun.
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "slurm"
    return "local"


def _require(env: Mapping[str, str], names: tuple[str, ...], cluster: str, how: str) -> None:
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise ConfigError(f"trainer.cluster={cluster} but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set in the environment: {how}")


def plan_launch(trainer_cfg: TrainerConfig, env: Mapping[str, str] | None = None) -> LaunchPlan:
    """Check devices, strategy and cluster variables against each other; raise `ConfigError` on a mismatch.

    Runs before Lightning creates a process group, so a wrong launch fails at once with the key to fix.
    """
    env = os.environ if env is None else env
    accelerator = resolve_accelerator(trainer_cfg.accelerator)
    cluster = detect_cluster(trainer_cfg.cluster, env)
    strategy, num_nodes = trainer_cfg.strategy, trainer_cfg.num_nodes
    if strategy not in STRATEGIES:
        raise ConfigError(f"trainer.strategy={strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if strategy == "fsdp" and accelerator != "gpu":
        raise ConfigError("trainer.strategy=fsdp needs GPUs (Lightning's FSDP strategy runs on CUDA only); "
                          "on CPU use trainer=ddp_cpu, or set trainer.accelerator=gpu on a GPU machine")
    if num_nodes < 1:
        raise ConfigError(f"trainer.num_nodes={num_nodes} must be at least 1")
    have = available_devices(accelerator)
    if accelerator == "gpu" and have == 0:
        raise ConfigError(f"trainer.accelerator={trainer_cfg.accelerator} but no GPU is visible to this process "
                          "(torch.cuda.device_count() is 0): on CPUs use trainer=cpu or trainer=ddp_cpu")
    devices = have if trainer_cfg.devices == -1 else trainer_cfg.devices
    kind = "GPUs" if accelerator == "gpu" else "CPU cores"
    if devices < 1:
        raise ConfigError(f"trainer.devices={trainer_cfg.devices}: give a count, or -1 for every visible device "
                          f"(found {have} {kind})")
    # A task that srun or torchrun started may be bound to its own cores (srun --cpus-per-task): it sees only
    # those, and the launcher's task count (checked below) says how many processes share the node.
    bound = accelerator == "cpu" and cluster in ("slurm", "torchrun")
    if devices > have and not bound:
        raise ConfigError(f"trainer.devices={devices} but this machine has {have} {kind} visible; "
                          f"lower trainer.devices (or -1 for all of them)")
    if devices * num_nodes > 1 and strategy == "auto":
        raise ConfigError(f"trainer.devices={devices} x trainer.num_nodes={num_nodes} processes need "
                          f"trainer.strategy=ddp or fsdp (e.g. trainer=ddp)")

    if cluster == "slurm":
        _require(env, SLURM_VARIABLES, cluster,
                 "start the run with sbatch launch/slurm/one_node.sbatch (or multi_node.sbatch), whose srun "
                 "sets them, or choose trainer.cluster=auto/local outside SLURM")
        ntasks, nnodes = int(env["SLURM_NTASKS"]), int(env["SLURM_JOB_NUM_NODES"])
        if ntasks != devices * num_nodes or nnodes != num_nodes:
            raise ConfigError(
                f"SLURM started {ntasks} tasks on {nnodes} node(s) but the config asks for trainer.devices="
                f"{devices} per node x trainer.num_nodes={num_nodes}: set --ntasks-per-node to trainer.devices "
                f"and --nodes to trainer.num_nodes (the launch/slurm scripts pass them from SLURM's variables)")
        rank = int(env["SLURM_PROCID"])
    elif cluster == "torchrun":
        _require(env, TORCHRUN_VARIABLES, cluster,
                 "start the run with launch/torchrun.sh (torchrun sets them), or choose trainer.cluster=auto")
        if int(env["WORLD_SIZE"]) != devices * num_nodes:
            raise ConfigError(
                f"torchrun started WORLD_SIZE={env['WORLD_SIZE']} processes but the config asks for "
                f"trainer.devices={devices} x trainer.num_nodes={num_nodes}: pass --nproc-per-node=trainer.devices "
                f"and --nnodes=trainer.num_nodes")
        rank = int(env["RANK"])
    else:
        if num_nodes > 1:
            raise ConfigError(f"trainer.num_nodes={num_nodes}: several nodes need a cluster launcher; use "
                              f"launch/torchrun.sh or launch/slurm/multi_node.sbatch")
        # Lightning's own launcher starts ranks 1..N-1 with LOCAL_RANK set and rank 0's environment.
        rank = int(env.get("NODE_RANK", 0)) * devices + int(env.get("LOCAL_RANK", 0))
    return LaunchPlan(cluster, accelerator, devices, num_nodes, rank)


def slurm_job_id(env: Mapping[str, str]) -> str:
    """The id `scontrol requeue` takes: `<array job>_<task>` for an array task, else the job id."""
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def requeue_command(plan: LaunchPlan) -> list[str] | None:
    """What rank 0 runs after a preemption checkpoint: `scontrol requeue <job>` under SLURM; elsewhere
    nothing (a local or torchrun run is restarted by whoever started it, with the same command)."""
    if plan.cluster != "slurm":
        return None
    return ["scontrol", "requeue", slurm_job_id(os.environ)]


def transformer_layer_classes(model: torch.nn.Module) -> set[type]:
    """Classes of the repeated blocks (the children of ModuleLists): FSDP wraps each block as one unit."""
    import torch

    return {type(layer) for module in model.modules() if isinstance(module, torch.nn.ModuleList) for layer in module}


def trainer_arguments(trainer_cfg: TrainerConfig, plan: LaunchPlan, model: torch.nn.Module) -> dict:
    """Keyword arguments for `lightning.Trainer` that place the run on its devices and cluster.

    Gradient accumulation is not among them: it changes per training phase (a callback sets it).
    """
    from lightning.pytorch.plugins.environments import (LightningEnvironment, SLURMEnvironment,
                                                         TorchElasticEnvironment)
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    from pretrain.checkpoints import AtomicCheckpointIO

    if trainer_cfg.strategy == "fsdp":
        strategy = FSDPStrategy(sharding_strategy=trainer_cfg.fsdp_sharding, state_dict_type="full",
                                auto_wrap_policy=transformer_layer_classes(model))
    elif trainer_cfg.strategy == "ddp":
        # gloo on CPU, nccl on GPUs: Lightning's default per accelerator.
        strategy = DDPStrategy()
    else:
        strategy = "auto"
    if plan.cluster != "slurm":
        # plan_launch has already decided this run is not a SLURM task; Lightning's hint to prepend `srun`
        # (shown on any machine where srun is installed) would only mislead here.
        warnings.filterwarnings("ignore", message="The `srun` command is available")
    environment = {
        # Lightning's own requeue handler is off: it checkpoints inside the signal handler, behind a barrier
        # that hangs when the ranks get the signal at different moments. pretrain/preemption.py does it.
        "slurm": lambda: SLURMEnvironment(auto_requeue=False),
        "torchrun": TorchElasticEnvironment,
        "local": LightningEnvironment,
    }[plan.cluster]()
    if trainer_cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what cuBLAS needs to repeat its sums
    return dict(accelerator=plan.accelerator, devices=plan.devices, num_nodes=plan.num_nodes, strategy=strategy,
                deterministic=trainer_cfg.deterministic or None,  # None leaves torch's setting as it is
                plugins=[environment, AtomicCheckpointIO()], use_distributed_sampler=False)  # RankSliceSampler already gives each rank its slice


def last_checkpoint(stage_tmp: Path) -> Path:
    """checkpoints/last.ckpt: written by the periodic checkpoints and by a preemption stop."""
    return Path(stage_tmp) / "checkpoints" / "last.ckpt"


def checkpoint_step(path: Path) -> int:
    """The optimiser step a Lightning checkpoint was saved at (memory-mapped: tensors are not read)."""
    import torch

    state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    return int(state["global_step"])


def unsharded_copy(checkpoint: Path, build_model) -> torch.nn.Module:
    """A fresh model from `build_model()` with the weights of a full (unsharded) Lightning checkpoint,
    for export after FSDP training, where the trained module holds only this rank's shards."""
    import torch

    fresh = build_model()
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    # The LightningModule keeps the transformers model as `.model`; its keys are the HF model's.
    fresh.load_state_dict({key.removeprefix("model."): value for key, value in state.items()
                           if key.startswith("model.")})
    return fresh


def wait_for_stage(folder: Path, poll_s: float = 0.5) -> None:
    """Ranks other than 0 wait until rank 0 has published the stage folder (so every rank returns it).

    They wait as long as rank 0 holds the stage's lock, which it does until the folder is in place: exporting
    a large model or gathering a full FSDP checkpoint may take long, and a rank that gave up would end the
    launch (srun --kill-on-bad-exit, torchrun) with rank 0 mid-publish. StageBusy, naming the folder, once no
    process has held the lock for `stage_folder.BUILDER_GRACE_S` (rank 0 died: its log says why).
    """
    from bertforge.common.stage_folder import wait_for_builder

    folder = Path(folder)
    # The lock lives in the work folder, and a stage folder is <work>/<stage>/<stage>-<hash> (stage_folder()).
    wait_for_builder(folder.parent.parent, folder, poll_s)


METRICS_BEFORE_RESUME = "metrics-before-resume.csv"


def set_aside_metrics(log_dir: Path, resume_step: int) -> None:
    """Keep the metrics a resumed run will not log again (steps up to `resume_step`) out of the way of
    Lightning's CSVLogger, which deletes an existing metrics.csv when it starts.

    Each step's rows are kept once however often this runs: a resume that dies before the CSVLogger starts
    leaves metrics.csv beside the rows already set aside, and the next resume sets aside again.
    """
    log_dir = Path(log_dir)
    rows = _add_new_steps(_read_rows(log_dir / METRICS_BEFORE_RESUME),
                          _read_rows(log_dir / "version_0" / "metrics.csv"))
    _write_rows(log_dir / METRICS_BEFORE_RESUME,
                [row for row in rows if row.get("step") and int(row["step"]) <= resume_step])


def merge_metrics(log_dir: Path) -> None:
    """Put the rows set aside before a resume back in front of the resumed run's metrics.csv, each step's once
    (also when an earlier merge was cut short before the set-aside file went)."""
    log_dir = Path(log_dir)
    aside = log_dir / METRICS_BEFORE_RESUME
    if not aside.exists():
        return
    current = log_dir / "version_0" / "metrics.csv"
    _write_rows(current, _add_new_steps(_read_rows(aside), _read_rows(current)))
    aside.unlink()


def _add_new_steps(kept: list[dict], later: list[dict]) -> list[dict]:
    """`kept`, then the rows of `later` at steps `kept` has no rows for (a step may have several rows)."""
    steps = {row.get("step") for row in kept}
    return kept + [row for row in later if row.get("step") not in steps]


def _read_rows(path: Path) -> list[dict]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(handle)]


def _write_rows(path: Path, rows: list[dict]) -> None:
    """Write a CSV through a temporary file and a rename: a kill mid-write leaves the previous file whole
    (and a temporary file, which the next write removes: only rank 0 writes these)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra is a dependency; this only keeps the import order free
    _HydraCallback = object


def check_slurm_sweep(config) -> None:
    """With `hydra/launcher=slurm`: ConfigError when this machine cannot submit the sweep to SLURM."""
    import shutil

    if not str(config.hydra.launcher.get("_target_", "")).endswith("SlurmLauncher"):
        return
    if shutil.which("sbatch") is None:
        raise ConfigError("hydra/launcher=slurm but `sbatch` is not on PATH: run the sweep from a SLURM "
                          "login node (or drop hydra/launcher=slurm to run the jobs here one after another)")
    if config.trainer.devices < 1:
        raise ConfigError(f"hydra/launcher=slurm needs a device count: trainer.devices={config.trainer.devices} "
                          "(-1 means 'what this machine has', which a submitting login node cannot know)")


class SlurmSweepCheck(_HydraCallback):
    """Hydra callback (conf/base.yaml): a sweep sent to SLURM fails before anything is submitted when this
    machine cannot submit it, with our message instead of one from deep inside submitit."""

    def on_multirun_start(self, config, **kwargs) -> None:
        import sys

        try:
            check_slurm_sweep(config)
        except ConfigError as err:
            # Hydra turns exceptions from callbacks into warnings and carries on; a sweep must stop here.
            print(f"bertforge: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
