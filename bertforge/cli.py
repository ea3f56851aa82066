"""The `bertforge` command: one Hydra app per command, chosen by the first argument.

    bertforge corpus filters=none           # one stage (and the stages it needs), Hydra overrides after it
    bertforge vocab -m tokenizer.vocab_size=4000,8000
    bertforge run experiment=demo_ga        # every stage of one experiment
    bertforge demo                          # the Irish demo on CPU

Every stage command runs the stage graph (`bertforge.stages`) up to that stage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from typing import Iterator

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

from bertforge.common.errors import (EXIT_PREEMPTED, ConfigError, CorpusInputError, DiskFull, Preempted,
                                     StageBusy, TasksFailed, TrainingDiverged)
from bertforge.common.ranks import STAGE_VARIABLE, first_process
from bertforge.experiment import ExperimentConfig, load_config  # also registers the schema conf/base.yaml builds on
from bertforge.stages import STAGES, run_stages
from bertforge.sweep_report import record_job_result
from pretrain.signal_flag import flag_on_signal

COMMANDS = {name: stage.help for name, stage in STAGES.items()} | {
    "run": "every stage of one experiment, with a summary",
    "demo": "the whole path on Irish treebank text, tiny BERT, CPU",
}
# Commands that train: the cluster's warning signal only raises a flag from their start (pretrain/signal_flag.py).
TRAINING_COMMANDS = ("pretrain", "run")


# Keys that moved when the trainer group became hardware only: a user's old command gets the new name.
MOVED_KEYS = {f"trainer.{key}": f"training.{key}" for key in ("max_steps", "batch_size", "tokens_per_batch",
                                                               "phases", "seed")} | {
    f"trainer.{key}": f"logger.{key}" for key in ("log_every_n_steps", "val_every_n_steps", "val_batches",
                                                  "progress_bar", "log_data_positions")} | {
    "trainer.checkpoint_every_n_steps": "checkpoint.every_n_steps", "trainer=gpu_phases": "trainer=gpu training=two_phase",
    "tokenizer.round_vocab_to_multiple_of": "model.pad_vocab_to_multiple_of (the model pads; the vocabulary is not)"}


def moved(overrides: list[str]) -> list[str]:
    """`old -> new` for every override that names a key by its old place."""
    found = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        for old, new in MOVED_KEYS.items():
            if key == old or override.lstrip("+~") == old:
                found.append(f"{old} is now {new}")
    return found


def misspelt(overrides: list[str]) -> list[str]:
    """`key: did you mean ...` for every dotted override whose key the schema does not have. Hydra's own
    message for one suggests `+key=value`, which only fails later, after Hydra has saved the override in
    `.hydra/`: `+key` is checked here too (a key under a dict field, `+downstream.references.x`, is free);
    `~` deletions are left to Hydra."""
    import difflib
    from dataclasses import is_dataclass
    from typing import get_args, get_origin, get_type_hints

    found = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+")
        if "=" not in override or key.startswith(("~", "hydra.")) or "/" in key:
            continue
        if "." not in key:
            found += _misspelt_top_level(key)
            continue
        node, path = ExperimentConfig, []
        for part in key.split("."):
            if get_origin(node) is list:  # an index into a list of sections: `source.inputs.0.path`
                node = get_args(node)[0]
                if part.isdigit():
                    path.append(part)
                    continue
            if not is_dataclass(node):
                break
            known = get_type_hints(node)
            if part not in known:
                close = difflib.get_close_matches(part, list(known), n=1)
                hint = f"did you mean {'.'.join([*path, close[0]])}?" if close else \
                    f"{'.'.join(path) or 'the config'} has {', '.join(known)}"
                found.append(f"unknown config key {key!r}: {hint}")
                break
            node, path = known[part], [*path, part]
    return found


def _misspelt_top_level(key: str) -> list[str]:
    """For an undotted key that is neither a top-level field (`name`) nor a config group (`experiment`,
    `trainer`): the dotted keys it may stand for, `max_steps` -> `training.max_steps`."""
    import difflib
    from dataclasses import fields, is_dataclass
    from importlib.resources import files
    from typing import get_type_hints

    sections = get_type_hints(ExperimentConfig)
    groups = {entry.name for entry in files("bertforge_conf").iterdir() if entry.is_dir()}
    if key in groups or key in sections:
        return []
    leaves: dict[str, list[str]] = {}  # a section's key -> where it is (lr: optim.lr, downstream.lr)
    for section, kind in sections.items():
        for leaf in fields(kind) if is_dataclass(kind) else ():
            leaves.setdefault(leaf.name, []).append(f"{section}.{leaf.name}")
    named = leaves.get(key) or [k for close in difflib.get_close_matches(key, list(leaves), n=2) for k in leaves[close]]
    hint = f"did you mean {' or '.join(named)}?" if named else "a key is <section>.<name> (e.g. training.max_steps)"
    return [f"unknown config key {key!r}: {hint}"]


# A Hugging Face or wandb token given on the command line would be saved by Hydra (.hydra/overrides.yaml).
SECRET_VARIABLES = ("HF_TOKEN", "WANDB_API_KEY")
SECRET_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{20,}")


def secrets_in(overrides: list[str]) -> list[str]:
    """What in the overrides looks like a token (an hf_ token, or the value of HF_TOKEN / WANDB_API_KEY)."""
    known = [os.environ[name] for name in SECRET_VARIABLES if len(os.environ.get(name, "")) >= 8]
    found = []
    for override in overrides:
        key = override.split("=", 1)[0]
        if SECRET_PATTERN.search(override) or any(secret in override for secret in known):
            found.append(f"{key}=... holds a token: tokens are read from the environment (HF_TOKEN, WANDB_API_KEY) "
                         "and never given as overrides, which Hydra saves in the run's .hydra/ folder")
    return found


def usage() -> str:
    lines = ["usage: bertforge <command> [hydra overrides...] [-m for a sweep]", "", "commands:"]
    lines += [f"  {name:<9} {help_text}" for name, help_text in COMMANDS.items()]
    lines += ["", "Config help for a command: bertforge <command> --help"]
    return "\n".join(lines)


def execute(command: str, cfg: ExperimentConfig, in_sweep: bool = False) -> dict:
    """Run one command on a validated experiment; returns stage name -> folder of every stage it used.
    `in_sweep`: one job of a `-m` sweep, whose comparison (bertforge.sweep_report) is its summary."""
    if command == "run":
        from bertforge.run import run_all

        return run_all(cfg, summary=not in_sweep)
    if command == "demo":
        from bertforge.run import run_demo

        return run_demo(cfg)
    return run_stages(cfg, command)


def command_app(command: str, arguments: list[str]):
    """The Hydra app for one command: compose conf/<command>.yaml, validate it, run it. `arguments`: the
    command line after the command (what Hydra parses)."""

    @hydra.main(version_base=None, config_path="pkg://bertforge_conf", config_name=command)
    def app(raw: DictConfig):
        hydra_cfg = HydraConfig.get()
        in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
        try:
            if command == "demo":
                from bertforge.run import ensure_demo_data

                raw.paths.data_dir = ensure_demo_data(raw.paths.data_dir, raw.paths.work_dir)
            cfg = load_config(raw)
            with ranks_for_this_job(arguments, hydra_cfg) if in_sweep else contextlib.nullcontext():
                folders = execute(command, cfg, in_sweep=in_sweep)
        except (ConfigError, CorpusInputError, StageBusy, DiskFull, TasksFailed, TrainingDiverged) as err:
            print(f"bertforge {command}: error: {err}", file=sys.stderr)  # once: not also through the log
            sys.exit(2)
        except Preempted as stop:
            print(f"bertforge {command}: {stop}", file=sys.stderr)
            sys.exit(EXIT_PREEMPTED)
        if first_process():  # the job's result is the first process's: the other ranks stop after pretrain
            record_job_result(hydra_cfg.runtime.output_dir, command, list(hydra_cfg.overrides.task),
                              {name: str(folder) for name, folder in folders.items()})
        return folders

    return app


@contextlib.contextmanager
def ranks_for_this_job(sweep_arguments: list[str], hydra_cfg) -> Iterator[None]:
    """While one job of a `-m` sweep runs here: the ranks Lightning starts for a multi-process trainer run
    this job only, and after it, none is left for the next job to find.

    Lightning starts rank i with `sys.argv` + `hydra.run.dir=<hydra.run.dir>`: with the sweep's arguments
    each rank would replay the whole sweep, so it gets this job's overrides and folder instead. And Lightning
    starts ranks once per process: it leaves LOCAL_RANK, MASTER_PORT, ... in the environment and the process
    group open, and the next job would start no rank and wait for this job's, which have ended.
    """
    argv, environment = list(sys.argv), dict(os.environ)
    sys.argv = [argv[0], *job_arguments(sweep_arguments, list(hydra_cfg.overrides.task))]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir  # the ranks' logs beside the job's
    try:
        yield
        wait_for_started_ranks()  # not after a failure: a rank may wait for what the failed job never wrote
    finally:
        close_process_group()
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environment)


def job_arguments(sweep_arguments: list[str], job_overrides: list[str]) -> list[str]:
    """The sweep's arguments with its overrides replaced by one job's, and without -m: the options
    (--config-dir, --config-name) stay."""
    from hydra._internal.utils import get_args_parser  # the parser @hydra.main read them with

    options = [arg for arg in sweep_arguments if arg not in ("-m", "--multirun")]
    for override in get_args_parser().parse_args(sweep_arguments).overrides:
        options.remove(override)
    return [*options, *job_overrides]


def wait_for_started_ranks() -> None:
    """Wait for the ranks Lightning started in this process to end (they end once rank 0 has published
    the pretrain stage). Lightning keeps them only in the thread that watches them."""
    launcher = sys.modules.get("lightning.fabric.strategies.launchers.subprocess_script")
    if launcher is None:  # Lightning never ran: no rank was started
        return
    for thread in threading.enumerate():
        if isinstance(thread, launcher._ChildProcessObserver):
            for rank in thread._child_processes:
                rank.wait()


def close_process_group() -> None:
    """End the process group a multi-process job opened (Lightning leaves it open until the process exits)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def quiet_libraries() -> None:
    """One line per stage and the progress bar at a terminal: the libraries' own chatter (Lightning's
    device lines and tips, transformers' loading and writing bars, wandb's banner, a deprecation in
    Lightning's code, not ours) is switched off before any of them is imported. An environment
    variable set by the user wins."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers reads it when imported
    os.environ.setdefault("WANDB_SILENT", "true")  # train_stage logs where the offline run is instead
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)  # warnings still show
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # Wrong for our runs: Lightning cannot see that the sampler resumes at the checkpoint's exact data
    # position (`pretrain/rank_sampler.py`), so it warns on every mid-epoch resume.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS and os.environ.get("LOCAL_RANK") and os.environ.get(STAGE_VARIABLE) in COMMANDS:
        # A rank Lightning started for a multi-device run: it re-runs our command line without the command.
        command, rest = os.environ[STAGE_VARIABLE], argv
    if command not in COMMANDS:
        print(f"bertforge: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    renamed = secrets_in(rest) or moved(rest) or misspelt(rest)
    if renamed:
        print(f"bertforge {command}: error: " + "; ".join(renamed), file=sys.stderr)
        sys.exit(2)
    os.environ[STAGE_VARIABLE] = command
    quiet_libraries()
    # Hydra parses the overrides from sys.argv[1:]; Lightning restarts sys.argv[0] for other local ranks,
    # so it must stay the real program.
    sys.argv = [os.path.abspath(sys.argv[0]) if os.path.isfile(sys.argv[0]) else sys.argv[0], *rest]
    # From the start, not from training's: a warning that comes while the run plans or waits for upstream
    # stages would otherwise end it unsaved; training stops at its first step boundary instead.
    with flag_on_signal(enabled=command in TRAINING_COMMANDS):
        command_app(command, rest)()
