"""The launch/ scripts: each says when to use it, only selects an experiment, and parses; the Hydra SLURM
launcher config composes with the trainer's device and node counts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import bertforge.experiment  # noqa: F401  (registers the schema the primary configs build on)

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
SCRIPTS = sorted(p for p in LAUNCH.rglob("*") if p.suffix in (".sh", ".sbatch"))
RUN_SCRIPTS = [p for p in SCRIPTS if p.name != "start_local_cluster.sh"]
# Groups of the experiment (conf/experiment/ sets them, never a launch script; `trainer.*` is hardware).
HYPERPARAMETERS = re.compile(r"\b(optim|masking|model|tokenizer|shards|corpus|filters|training)[./=]")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(LAUNCH)))
def test_script_says_when_to_use_it_and_parses(script):
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert lines[1].startswith("# When to use:"), f"{script}: the first comment must say when to use it"
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", RUN_SCRIPTS, ids=lambda p: str(p.relative_to(LAUNCH)))
def test_script_only_selects_an_experiment(script):
    code = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if HYPERPARAMETERS.search(line)]
    assert any('experiment="$experiment"' in line for line in code)


@pytest.mark.parametrize("name", ["one_node.sbatch", "multi_node.sbatch"])
def test_slurm_scripts_requeue_on_preemption_and_say_where_logs_go(name):
    text = (LAUNCH / "slurm" / name).read_text()
    for directive in ("--signal=USR1@", "--requeue", "--output=logs/slurm/", "--ntasks-per-node=", "--nodes="):
        assert f"#SBATCH {directive}" in text
    assert "srun " in text and "trainer.cluster=slurm" in text and "SLURM_JOB_NUM_NODES" in text


def test_slurm_sweep_launcher_asks_for_one_task_per_device_of_the_trainer():
    with initialize_config_module(config_module="bertforge_conf", version_base=None):
        cfg = compose(config_name="pretrain", return_hydra_config=True,
                      overrides=["paths.data_dir=/d", "paths.work_dir=/w", "trainer=multinode", "hydra/launcher=slurm"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert launcher.submitit_folder == "/w/hydra/submitit/%j"


def test_slurm_sweep_without_sbatch_is_a_clear_error_before_submitting(monkeypatch, tmp_path):
    from bertforge.common.errors import ConfigError
    from pretrain.distributed import SlurmSweepCheck, check_slurm_sweep

    with initialize_config_module(config_module="bertforge_conf", version_base=None):
        cfg = compose(config_name="pretrain", return_hydra_config=True,
                      overrides=["paths.data_dir=/d", "paths.work_dir=/w", "trainer=ddp_cpu", "hydra/launcher=slurm"])
    assert "slurm_sweep_check" in cfg.hydra.callbacks
    # With sbatch on PATH (a stand-in, first on PATH, so the same on any machine) the check passes ...
    with_sbatch, without_sbatch = tmp_path / "with_sbatch", tmp_path / "without_sbatch"
    with_sbatch.mkdir()
    without_sbatch.mkdir()
    fake_sbatch = with_sbatch / "sbatch"
    fake_sbatch.write_text("#!/bin/sh\nexit 0\n")
    fake_sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{with_sbatch}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which("sbatch") == str(fake_sbatch)
    check_slurm_sweep(cfg)
    SlurmSweepCheck().on_multirun_start(cfg)
    # ... and without one (a PATH holding no sbatch, whatever this machine has installed) it is a clear error.
    monkeypatch.setenv("PATH", str(without_sbatch))
    assert shutil.which("sbatch") is None
    with pytest.raises(ConfigError, match="hydra/launcher=slurm but `sbatch` is not on PATH"):
        check_slurm_sweep(cfg)
    with pytest.raises(SystemExit) as stopped:  # Hydra would only warn about an exception from a callback
        SlurmSweepCheck().on_multirun_start(cfg)
    assert stopped.value.code == 2
    with initialize_config_module(config_module="bertforge_conf", version_base=None):
        local = compose(config_name="pretrain", return_hydra_config=True, overrides=["paths.data_dir=/d"])
    SlurmSweepCheck().on_multirun_start(local)  # the basic launcher: nothing to check
